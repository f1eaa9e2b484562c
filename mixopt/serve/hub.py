"""The studies one ``mixopt serve`` holds: one :class:`~mixopt.study.Study` per name, each behind its own lock.

Concurrency: every call on a study (FastAPI runs the sync endpoints in a thread pool) holds that
study's :class:`threading.Lock`, so concurrent clients never lose a tell, never get the same pending
trial twice and never get duplicate trial ids. With ``reload=True`` the study is re-read from the store
inside the lock before every write, for stores that other processes write to as well.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from mixopt.core.errors import UserError
from mixopt.study import Storage, Study, create_study, get_storage, load_study


@dataclass
class _Entry:
    study: Study | None
    lock: threading.Lock = field(default_factory=threading.Lock)


class StudyHub:
    """One :class:`Study` per study name, each behind its own lock.

    Args:
        storage: the store (a tracking URI or a :class:`~mixopt.study.Storage`).
        reload: re-read a study from the store inside its lock before every write (slower; for
            stores that other processes write to as well).
    """

    def __init__(self, storage: Storage | str, reload: bool = False) -> None:
        self.storage = get_storage(storage)
        self.reload = reload
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}

    def names(self) -> list[str]:
        return self.storage.study_names()

    def _entry(self, name: str) -> _Entry:
        entry = self._entries.get(name)
        if entry is not None:
            return entry
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                entry = self._entries[name] = _Entry(load_study(name, self.storage))  # NotFoundError: no such study
            return entry

    @contextlib.contextmanager
    def study(self, name: str, write: bool = False) -> Iterator[Study]:
        """The study ``name``, its lock held (NotFoundError for an unknown study); re-read from the store
        first when it is a write and ``reload`` is on, or after a failed write."""
        entry = self._entry(name)
        with entry.lock:
            if entry.study is None or (write and self.reload):
                entry.study = load_study(name, self.storage)
            try:
                yield entry.study
            except UserError:
                raise  # checked before anything is written: the study in memory is the store's
            except BaseException:
                entry.study = None  # a write may have stopped half way: read it again next time
                raise

    def create(self, kwargs: dict[str, Any]) -> Study:
        """:func:`mixopt.create_study` in this store (AlreadyExistsError when it exists and not ``load_if_exists``)."""
        name = kwargs["name"]
        with self._lock:
            entry = self._entries.get(name)
            if entry is not None and kwargs.get("load_if_exists"):
                with entry.lock:
                    if entry.study is None:
                        entry.study = load_study(name, self.storage)
                    return entry.study
            study = create_study(storage=self.storage, **kwargs)
            self._entries[name] = _Entry(study)
            return study
