"""The study layer: :class:`Study` (ask/tell) over a :class:`Storage` (in memory or MLflow).

Imports only ``mixopt.core`` and ``mixopt.search``.
"""

from mixopt.study.mlflow_storage import MlflowStorage
from mixopt.study.storage import InMemoryStorage, Storage, default_tracking_uri
from mixopt.study.stores import get_storage
from mixopt.study.study import Study, create_study, load_study

__all__ = ["InMemoryStorage", "MlflowStorage", "Storage", "Study", "create_study", "default_tracking_uri", "get_storage",
           "load_study"]
