"""mixopt: data-mixture optimization for language-model pre-training.

Public API: :func:`create_study` / :func:`load_study` (ask/tell), :class:`Mixture`,
:class:`MixtureSpace`, :class:`ProxySpec`, :class:`Objective`, and the config loader.
"""

from mixopt.core.errors import MixoptError, UserError
from mixopt.core.mixture import Mixture, MixtureSpace
from mixopt.core.objective import Objective
from mixopt.core.spec import ProxySpec
from mixopt.core.trial import Trial, TrialState
from mixopt.run.config import StudyConfig, load_config
from mixopt.study.study import Study, create_study, load_study

__all__ = ["Mixture", "MixtureSpace", "MixoptError", "Objective", "ProxySpec", "Study", "StudyConfig", "Trial",
           "TrialState", "UserError", "create_study", "infer_mixture", "load_config", "load_study"]


def infer_mixture(*args, **kwargs):
    """The data mixture a BPE tokenizer was trained on: :func:`mixopt.analysis.infer_mixture.infer_mixture`
    (imported on first use, so ``import mixopt`` loads neither tokenizers nor the LP solver)."""
    from mixopt.analysis.infer_mixture import infer_mixture as infer

    return infer(*args, **kwargs)
__version__ = "0.1.0"
