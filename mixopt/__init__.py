"""mixopt: data-mixture optimization for language-model pre-training.

Public API: :func:`create_study` / :func:`load_study` (ask/tell), :class:`Mixture`,
:class:`MixtureSpace`, :class:`ProxySpec`, :class:`Objective`, and the config loader.
"""

from mixopt.config import StudyConfig, load_config
from mixopt.errors import MixoptError, UserError
from mixopt.mixture import Mixture, MixtureSpace
from mixopt.objective import Objective
from mixopt.spec import ProxySpec
from mixopt.study import Study, create_study, load_study
from mixopt.trial import Trial, TrialState

__all__ = ["Mixture", "MixtureSpace", "MixoptError", "Objective", "ProxySpec", "Study", "StudyConfig", "Trial",
           "TrialState", "UserError", "create_study", "load_config", "load_study"]
__version__ = "0.1.0"
