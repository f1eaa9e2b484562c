"""Where a study lives. ``InMemoryStorage`` for tests and notebooks; the MLflow store of record
is :class:`mixopt.tracking.MlflowStorage`. Both hold the same two things: the study's metadata
(a JSON-able dict) and its trials, so any process can resume a study from the store."""

from __future__ import annotations

import abc
from typing import Any

from mixopt.errors import UserError
from mixopt.trial import Trial


class Storage(abc.ABC):
    @abc.abstractmethod
    def create_study(self, meta: dict[str, Any]) -> None:
        """Record a new study; raise UserError if one of that name exists."""

    @abc.abstractmethod
    def load_meta(self, name: str) -> dict[str, Any] | None:
        """The study's metadata, or None when there is no such study."""

    @abc.abstractmethod
    def trials(self, name: str) -> list[Trial]:
        """All trials in trial-id order."""

    @abc.abstractmethod
    def add_trial(self, name: str, trial: Trial) -> Trial:
        """Persist a new trial (its id is already assigned); returns it with a run id if any."""

    @abc.abstractmethod
    def update_trial(self, name: str, trial: Trial) -> Trial:
        """Persist a state change / result of an existing trial."""

    def log_study_outputs(self, name: str, files: dict[str, str], metrics: dict[str, float],
                          tags: dict[str, str]) -> None:
        """Attach outputs (e.g. the recommendation) to the study. Default: nothing to attach to."""

    def study_names(self) -> list[str]:
        return []


class InMemoryStorage(Storage):
    def __init__(self) -> None:
        self._meta: dict[str, dict[str, Any]] = {}
        self._trials: dict[str, list[Trial]] = {}
        self.outputs: dict[str, dict[str, Any]] = {}

    def create_study(self, meta: dict[str, Any]) -> None:
        if meta["name"] in self._meta:
            raise UserError(f"study {meta['name']!r} already exists; use load_study or load_if_exists=True")
        self._meta[meta["name"]] = dict(meta)
        self._trials[meta["name"]] = []

    def load_meta(self, name: str) -> dict[str, Any] | None:
        return self._meta.get(name)

    def trials(self, name: str) -> list[Trial]:
        return list(self._trials.get(name, []))

    def add_trial(self, name: str, trial: Trial) -> Trial:
        self._trials[name].append(trial)
        return trial

    def update_trial(self, name: str, trial: Trial) -> Trial:
        self._trials[name][trial.trial_id] = trial
        return trial

    def log_study_outputs(self, name, files, metrics, tags) -> None:
        self.outputs[name] = {"files": dict(files), "metrics": dict(metrics), "tags": dict(tags)}

    def study_names(self) -> list[str]:
        return sorted(self._meta)
