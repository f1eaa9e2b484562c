"""One factory for every kind of store a study can live in."""

from __future__ import annotations

from mixopt.core.errors import ConfigError
from mixopt.study.mlflow_storage import MlflowStorage
from mixopt.study.storage import InMemoryStorage, Storage


def get_storage(storage: Storage | str | None, create: bool = True) -> Storage:
    """The storage a study lives in.

    Args:
        storage: None (in memory), an MLflow tracking URI (``sqlite:///mlflow.db``,
            ``http://127.0.0.1:5000``) or a :class:`Storage`.
        create: whether a SQLite database that does not exist yet may be created.
    Raises:
        ConfigError: ``storage`` is none of these.
        UserError: the store cannot be opened.
    """
    if storage is None:
        return InMemoryStorage()
    if isinstance(storage, Storage):
        return storage
    if isinstance(storage, str):
        return MlflowStorage(storage, create=create)
    raise ConfigError(f"storage: {storage!r}; allowed: None (in memory), an MLflow tracking URI, or a Storage")
