"""Executors run trial functions: in this process (tests, debugging) or as Ray tasks.

The trial function is named by an import path (default ``mixopt.proxies.train:run_trial``) so that
the driver never imports torch; the worker imports it. An exception raised by the trial function is an
*application* error: the trial is FAILED with that reason, never retried. A lost worker or
node is a *system* failure: Ray retries the task up to ``max_retries`` times first.
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mixopt.core.worker import TrialRequest
from mixopt.run.config import ExecutorConfig

TRIAL_FN = "mixopt.proxies.train:run_trial"


@dataclass(frozen=True)
class Finished:
    trial_id: int
    result: dict[str, Any] | None
    error: str | None


def resolve(path: str | Callable) -> Callable:
    if callable(path):
        return path
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _reason(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}".strip()


def _call(fn_path: str, request: dict[str, Any]) -> dict[str, Any]:
    return resolve(fn_path)(request)


class LocalExecutor:
    """Runs each trial in this process at submit time; ``wait`` returns what has finished."""

    def __init__(self, fn: str | Callable = TRIAL_FN, capacity: int = 1) -> None:
        self.fn = resolve(fn)
        self.capacity = capacity
        self._done: list[Finished] = []

    def submit(self, trial_id: int, request: TrialRequest) -> None:
        try:
            self._done.append(Finished(trial_id, self.fn(request.to_dict()), None))
        except Exception as e:  # application error: recorded as FAILED with its reason
            self._done.append(Finished(trial_id, None, _reason(e)))

    def running(self) -> int:
        return len(self._done)

    def wait(self, timeout: float | None = None) -> list[Finished]:
        out, self._done = self._done, []
        return out

    def cancel(self) -> list[int]:
        """Nothing runs between calls here (a trial runs inside ``submit``)."""
        return []

    def shutdown(self) -> None:
        pass


class RayExecutor:
    """Trials as Ray tasks with ``num_cpus``/``num_gpus`` from the config.

    Connects to ``address`` (or ``$RAY_ADDRESS``, as set inside ``ray job submit``); with
    neither, starts a local Ray sized for ``workers`` concurrent trials.
    """

    def __init__(self, cfg: ExecutorConfig, fn: str = TRIAL_FN) -> None:
        import ray

        self.ray = ray
        self.cfg = cfg
        self.capacity = cfg.workers
        self.fn = fn
        self._owns = False
        if not ray.is_initialized():
            address = cfg.address or os.environ.get("RAY_ADDRESS")
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                cpus = max(1, math.ceil(cfg.workers * cfg.num_cpus))
                ray.init(num_cpus=cpus, num_gpus=None if cfg.num_gpus == 0 else math.ceil(cfg.workers * cfg.num_gpus),
                         include_dashboard=False, log_to_driver=False, configure_logging=False,
                         runtime_env={"env_vars": {"OMP_NUM_THREADS": str(cfg.threads_per_worker),
                                                   "MKL_NUM_THREADS": str(cfg.threads_per_worker)}})
                self._owns = True
        self._remote = ray.remote(num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus, max_retries=cfg.max_retries,
                                  retry_exceptions=False)(_call)
        self._refs: dict[Any, int] = {}

    def submit(self, trial_id: int, request: TrialRequest) -> None:
        self._refs[self._remote.remote(self.fn, request.to_dict())] = trial_id

    def running(self) -> int:
        return len(self._refs)

    def wait(self, timeout: float | None = None) -> list[Finished]:
        if not self._refs:
            return []
        ready, _ = self.ray.wait(list(self._refs), num_returns=1, timeout=timeout)
        # collect everything else that is also done, without blocking
        more, _ = self.ray.wait([r for r in self._refs if r not in ready], num_returns=len(self._refs) - len(ready),
                                timeout=0) if len(self._refs) > len(ready) else ([], [])
        out = []
        for ref in list(ready) + list(more):
            tid = self._refs.pop(ref)
            try:
                out.append(Finished(tid, self.ray.get(ref), None))
            except self.ray.exceptions.RayTaskError as e:  # the trial function raised
                cause = getattr(e, "cause", None) or e
                out.append(Finished(tid, None, _reason(cause)))
            except self.ray.exceptions.RayError as e:  # worker/node lost after retries
                out.append(Finished(tid, None, f"system failure after {self.cfg.max_retries} retries: {_reason(e)}"))
        return out

    def cancel(self) -> list[int]:
        """Stop every running trial (force-kills its worker); returns their trial ids."""
        ids = sorted(self._refs.values())
        for ref in list(self._refs):
            self.ray.cancel(ref, force=True)
        self._refs.clear()
        return ids

    def shutdown(self) -> None:
        self.cancel()
        if self._owns:
            self.ray.shutdown()


def make_executor(cfg: ExecutorConfig, fn: str = TRIAL_FN):
    if cfg.kind == "local":
        return LocalExecutor(fn)
    return RayExecutor(cfg, fn)

