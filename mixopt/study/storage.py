"""Where a study lives: the whole persistence contract of a study, and one factory.

:class:`InMemoryStorage` serves tests and notebooks; the MLflow store of record is
:class:`mixopt.study.mlflow_storage.MlflowStorage`. Both hold the same things: the study's
metadata (a JSON-able dict), its trials, its outputs and the runs of its own that analyses log
(fits, transfer reports), so any process can resume a study from the store. The metadata is a
:class:`~mixopt.core.meta.StudyMeta` on both sides of the contract; how it is kept (JSON of its
``to_dict()``) is the store's business. Every storage passes
the conformance suite in ``tests/study/test_storage_conformance.py``.
"""

from __future__ import annotations

import abc
import contextlib
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mixopt.core.errors import AlreadyExistsError, NotFoundError, UserError
from mixopt.core.meta import StudyMeta
from mixopt.core.trial import Trial


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else a SQLite database ``mlflow.db`` in the working folder."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path('mlflow.db').resolve()}"


class Storage(abc.ABC):
    """The persistence contract of a study.

    Trial ids are dense (0, 1, 2, ... in the order trials were added); ``add_trial`` stores a
    trial whose id the caller assigned as ``len(trials(name))``.
    """

    #: where the store is, for messages ("memory" for the in-memory store)
    uri: str = "memory"

    @abc.abstractmethod
    def create_study(self, meta: StudyMeta) -> None:
        """Record a new study (``meta.name`` names it).

        Raises:
            AlreadyExistsError: a study of that name exists.
        """

    @abc.abstractmethod
    def load_meta(self, name: str) -> StudyMeta | None:
        """The study's metadata, or None when there is no such study."""

    @abc.abstractmethod
    def study_names(self) -> list[str]:
        """The names of the studies in the store, sorted."""

    @abc.abstractmethod
    def trials(self, name: str) -> list[Trial]:
        """All trials of study ``name`` in trial-id order (empty for an unknown study)."""

    @abc.abstractmethod
    def add_trial(self, name: str, trial: Trial) -> Trial:
        """Persist a new trial (its id already assigned); returns it with its run id, if any."""

    @abc.abstractmethod
    def update_trial(self, name: str, trial: Trial) -> Trial:
        """Persist a state change or result of an existing trial; returns it as stored."""

    @abc.abstractmethod
    def log_study_outputs(self, name: str, files: dict[str, str], metrics: dict[str, float],
                          tags: dict[str, str]) -> None:
        """Attach outputs (the recommendation's files, metrics and tags) to the study."""

    @abc.abstractmethod
    def set_study_status(self, name: str, status: str) -> None:
        """Mark the study ``RUNNING``, ``FINISHED``, ``KILLED`` or ``FAILED``."""

    @abc.abstractmethod
    def study_status(self, name: str) -> str | None:
        """The status last set (None for an unknown study)."""

    @abc.abstractmethod
    def log_run(self, name: str, run_name: str, role: str, params: dict[str, Any], metrics: dict[str, float],
                tags: dict[str, str], files: list[str]) -> str:
        """A finished run of its own under the study (a fit, a transfer report); returns its id."""

    @abc.abstractmethod
    def runs(self, name: str, role: str) -> list[dict[str, Any]]:
        """The runs logged with ``log_run`` under ``role``, oldest first: dicts with ``run_id``,
        ``run_name``, ``params``, ``metrics``, ``tags``."""

    def run_files(self, name: str, run_id: str, dest: str | os.PathLike) -> dict[str, Path]:
        """The files logged with a run of :meth:`log_run`, copied into folder ``dest``: {file name: path}.
        (A store that keeps no files raises; merged scores and experts then live on this machine only.)

        Raises:
            NotFoundError: no such run under the study.
        """
        raise NotFoundError(f"study {name!r}: this store keeps no run files ({type(self).__name__})")

    def trial_trajectory(self, name: str, trial_id: int) -> list[dict[str, Any]]:
        """An online-mixing trial's weights over its training: ``[{"step", "weights": {domain: w}}]`` at each
        step they changed (the ``w.<domain>`` metric histories); [] for any other trial."""
        t = self.get_trial(name, trial_id)
        return [dict(h) for h in (t.history if t else []) if "weights" in h]

    def next_trial_id(self, name: str) -> int:
        """The id the next new trial gets (call under :meth:`lock`). Stores override this with
        something cheaper than reading every trial."""
        return len(self.trials(name))

    def get_trial(self, name: str, trial_id: int) -> Trial | None:
        """One trial as stored now (None if there is no such trial)."""
        ts = self.trials(name)
        return ts[trial_id] if 0 <= trial_id < len(ts) else None

    def waiting_trials(self, name: str) -> list[Trial]:
        """Enqueued trials not yet handed out (WAITING), in id order."""
        return [t for t in self.trials(name) if t.state.value == "WAITING"]

    @abc.abstractmethod
    def lock(self, name: str) -> contextlib.AbstractContextManager[None]:
        """Exclusive access to study ``name`` across threads and processes: a Study reads the
        trials, assigns the next id (or claims a waiting trial, or checks a trial is unfinished)
        and writes, all inside it, so many processes can ask/tell one study."""

    def run_url(self, name: str) -> str | None:
        """A browser URL of the study's run, where the store has one."""
        return None


_STATUSES = ("RUNNING", "FINISHED", "KILLED", "FAILED")


class InMemoryStorage(Storage):
    """A store in this process's memory (tests, notebooks): lost when the process ends."""

    def __init__(self) -> None:
        self._meta: dict[str, dict[str, Any]] = {}  # stored as plain data, as a real store would
        self._trials: dict[str, list[Trial]] = {}
        self._status: dict[str, str] = {}
        self._runs: dict[str, list[dict[str, Any]]] = {}
        self.outputs: dict[str, dict[str, Any]] = {}
        self._lock = threading.RLock()

    def create_study(self, meta: StudyMeta) -> None:
        name = meta.name
        if name in self._meta:
            raise AlreadyExistsError(f"study {name!r} already exists; use load_study or load_if_exists=True")
        self._meta[name] = meta.to_dict()
        self._trials[name] = []
        self._status[name] = "RUNNING"
        self._runs[name] = []

    def load_meta(self, name: str) -> StudyMeta | None:
        d = self._meta.get(name)
        return None if d is None else StudyMeta.from_dict(d)

    def study_names(self) -> list[str]:
        return sorted(self._meta)

    def trials(self, name: str) -> list[Trial]:
        return list(self._trials.get(name, []))

    def add_trial(self, name: str, trial: Trial) -> Trial:
        if trial.trial_id != len(self._trials[name]):
            raise UserError(f"study {name!r}: trial id {trial.trial_id} is taken or skips ids "
                            f"(next free id: {len(self._trials[name])})")
        self._trials[name].append(trial)
        return trial

    def update_trial(self, name: str, trial: Trial) -> Trial:
        self._trials[name][trial.trial_id] = trial
        return trial

    def log_study_outputs(self, name, files, metrics, tags) -> None:
        out = self.outputs.setdefault(name, {"files": {}, "metrics": {}, "tags": {}})
        out["files"].update(files)
        out["metrics"].update(metrics)
        out["tags"].update(tags)

    def set_study_status(self, name: str, status: str) -> None:
        if status not in _STATUSES:
            raise ValueError(f"status {status!r}; allowed: {', '.join(_STATUSES)}")
        if name in self._meta:
            self._status[name] = status

    def study_status(self, name: str) -> str | None:
        return self._status.get(name)

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        with self._lock:
            yield

    def log_run(self, name, run_name, role, params, metrics, tags, files) -> str:
        run_id = f"{name}-{role}-{len(self._runs[name])}"
        self._runs[name].append({"run_id": run_id, "run_name": run_name, "params": {k: str(v) for k, v in params.items()},
                                 "metrics": dict(metrics), "tags": {**tags, "mixopt.role": role},
                                 "files": list(files)})
        return run_id

    def runs(self, name: str, role: str) -> list[dict[str, Any]]:
        return [r for r in self._runs.get(name, []) if r["tags"]["mixopt.role"] == role]

    def run_files(self, name: str, run_id: str, dest: str | os.PathLike) -> dict[str, Path]:
        run = next((r for r in self._runs.get(name, []) if r["run_id"] == run_id), None)
        if run is None:
            raise NotFoundError(f"study {name!r}: no run {run_id!r}")
        out = Path(dest)
        out.mkdir(parents=True, exist_ok=True)
        got = {}
        for f in run["files"]:  # kept where they were logged from: this process's files
            if Path(f).is_file():
                got[Path(f).name] = Path(shutil.copy2(f, out / Path(f).name))
        return got
