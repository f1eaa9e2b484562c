"""Executors run trial functions: in this process (tests, debugging) or as Ray tasks.

The trial function is named by an import path (default ``mixopt.proxies.pack_train:run_one``, the
batched engine with a pack of one; ``mixopt.proxies.pack_train:run_pack`` for packs) so that the
driver never imports torch; the worker imports it. It takes a :class:`TrialRequest` and returns a
:class:`TrialResult` (a pack function: one ``TrialResult | TrialFailure`` per request); every
executor hands back one :class:`Finished` per trial holding that outcome. Across a Ray task the
request and outcomes travel as plain dicts (``to_dict`` / ``outcome_from_dict``), so Ray pickles
no mixopt classes. An exception raised by the trial function is an *application* error: the trial
is FAILED with that reason, never retried. A lost worker or node is a *system* failure: Ray retries
the task up to ``max_retries`` times first.
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mixopt.core.worker import Outcome, TrialFailure, TrialRequest, TrialResult, to_outcome
from mixopt.run.config import ExecutorConfig

TRIAL_FN = "mixopt.proxies.pack_train:run_one"
PACK_FN = "mixopt.proxies.pack_train:run_pack"


@dataclass(frozen=True)
class Finished:
    """A trial the executor is done with: its result, or why it failed."""

    trial_id: int
    outcome: Outcome

    @property
    def failure(self) -> TrialFailure | None:
        return self.outcome if isinstance(self.outcome, TrialFailure) else None

    @property
    def result(self) -> TrialResult | None:
        return self.outcome if isinstance(self.outcome, TrialResult) else None


def resolve(path: str | Callable) -> Callable:
    if callable(path):
        return path
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _call(fn_path: str, request: dict[str, Any] | list[dict[str, Any]]) -> dict[str, Any] | list[dict[str, Any]]:
    """The Ray task: dicts in, the trial (or pack) function on the typed request, dicts out."""
    fn = resolve(fn_path)
    if isinstance(request, list):
        return [to_outcome(o).to_dict() for o in fn([TrialRequest.from_dict(r) for r in request])]
    return to_outcome(fn(TrialRequest.from_dict(request))).to_dict()


def _call_plain(fn_path: str, payload: dict[str, Any]) -> Any:
    """A Ray task of plain data in and out (expert training, merged scoring)."""
    return resolve(fn_path)(payload)


def _finished(trial_ids: list[int], outcomes: list[Any]) -> list[Finished]:
    """One Finished per member (outcomes as objects or their dicts; a missing one is a failure)."""
    outcomes = list(outcomes) + [None] * (len(trial_ids) - len(outcomes))
    return [Finished(tid, TrialFailure(tid, "error", "no result") if o is None else to_outcome(o, tid))
            for tid, o in zip(trial_ids, outcomes)]


class LocalExecutor:
    """Runs each trial in this process at submit time; ``wait`` returns what has finished."""

    def __init__(self, fn: str | Callable = TRIAL_FN, capacity: int = 1, pack_fn: str | Callable = PACK_FN) -> None:
        self.fn = resolve(fn)
        self.pack_fn = pack_fn
        self.capacity = capacity
        self._done: list[Finished] = []

    def submit_pack(self, trial_ids: list[int], requests: list[TrialRequest]) -> None:
        """Train the requests as one pack, here and now."""
        try:
            self._done += _finished(trial_ids, resolve(self.pack_fn)(list(requests)))
        except Exception as e:  # the whole pack failed (e.g. an eval domain missing from the corpus)
            self._done += [Finished(tid, TrialFailure.from_exception(e, tid)) for tid in trial_ids]

    def submit(self, trial_id: int, request: TrialRequest) -> None:
        try:
            self._done += _finished([trial_id], [self.fn(request)])
        except Exception as e:  # application error: recorded as FAILED with its reason
            self._done.append(Finished(trial_id, TrialFailure.from_exception(e, trial_id)))

    def run_tasks(self, fn: str | Callable, payloads: list[dict[str, Any]]) -> list[Any]:
        """Call ``fn`` on each payload here, in order; an exception propagates as it is."""
        f = resolve(fn)
        return [f(p) for p in payloads]

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
                start_reaper()
        self._remote = ray.remote(num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus, max_retries=cfg.max_retries,
                                  retry_exceptions=False)(_call)
        self._task = ray.remote(num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus, max_retries=cfg.max_retries,
                                retry_exceptions=False)(_call_plain)
        self._refs: dict[Any, int | list[int]] = {}  # task -> trial id, or the trial ids of a pack
        self.pack_fn = PACK_FN

    def submit(self, trial_id: int, request: TrialRequest) -> None:
        self._refs[self._remote.remote(self.fn, request.to_dict())] = trial_id

    def submit_pack(self, trial_ids: list[int], requests: list[TrialRequest]) -> None:
        """One Ray task trains the pack (a lost worker retries the whole pack)."""
        self._refs[self._remote.remote(self.pack_fn, [r.to_dict() for r in requests])] = list(trial_ids)

    def run_tasks(self, fn: str, payloads: list[dict[str, Any]]) -> list[Any]:
        """Call the function named ``fn`` on each payload as Ray tasks (in parallel, as many as fit) and
        wait for all; the first error a task raises is raised here as it was raised there."""
        refs = [self._task.remote(fn, p) for p in payloads]
        try:
            return self.ray.get(refs)
        except self.ray.exceptions.RayTaskError as e:
            for r in refs:
                self.ray.cancel(r, force=True)
            cause = getattr(e, "cause", None)
            raise (cause if isinstance(cause, Exception) else e) from None

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
            ids = tid if isinstance(tid, list) else [tid]
            try:
                res = self.ray.get(ref)
                out += _finished(ids, res if isinstance(tid, list) else [res])
            except self.ray.exceptions.RayTaskError as e:  # the trial (or pack) function raised
                cause = getattr(e, "cause", None) or e
                out += [Finished(i, TrialFailure.from_exception(cause, i)) for i in ids]
            except self.ray.exceptions.RayError as e:  # worker/node lost after retries
                lost = TrialFailure.from_exception(e).reason
                out += [Finished(i, TrialFailure(i, "system", f"system failure after {self.cfg.max_retries} "
                                                               f"retries: {lost}")) for i in ids]
        return out

    def cancel(self) -> list[int]:
        """Stop every running trial (force-kills its worker); returns their trial ids."""
        ids = sorted(i for v in self._refs.values() for i in (v if isinstance(v, list) else [v]))
        for ref in list(self._refs):
            self.ray.cancel(ref, force=True)
        self._refs.clear()
        return ids

    def shutdown(self) -> None:
        self.cancel()
        if self._owns:
            self.ray.shutdown()


#: The reaper: started beside a local Ray, it watches the driver and, once the driver is gone (a
#: clean exit, or kill -9), kills the Ray processes the driver had started that are still alive.
#: Ray's own fate-sharing ends gcs_server and raylet with the driver, but its dashboard and
#: runtime-env agents then wait 60 s on the dead GCS before they exit (a timeout Ray hard-codes).
_REAPER = r"""
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
me, driver, every = os.getpid(), int(sys.argv[1]), float(sys.argv[2])
def stat(pid):  # (state, ppid, start time) from /proc/<pid>/stat, None when gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return rest[0], int(rest[1]), rest[19]
    except (OSError, IndexError, ValueError):
        return None
def is_ray(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"ray" in f.read()
    except OSError:
        return False
seen = {}
while (st := stat(driver)) is not None and st[0] != "Z":
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit() and (s := stat(int(d))) is not None:
            kids.setdefault(s[1], []).append(int(d))
    todo, tree = [driver], set()
    while todo:
        for c in kids.get(todo.pop(), ()):
            if c not in tree:
                tree.add(c)
                todo.append(c)
    for pid in tree - {me} - set(seen):
        if is_ray(pid) and (s := stat(pid)) is not None:
            seen[pid] = s[2]
    time.sleep(every)
time.sleep(1.0)  # a clean ray.shutdown() has had its chance
for pid, started in seen.items():
    s = stat(pid)
    if s is not None and s[2] == started:  # the same process, not a reused pid
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
"""
_reaper_started = False


def start_reaper(interval: float = 1.0) -> None:
    """Start :data:`_REAPER` for this process, once (its own session: Ctrl-C in a terminal does not reach it)."""
    global _reaper_started
    if _reaper_started or not os.path.isdir("/proc/self"):  # Linux /proc only
        return
    import subprocess
    import sys

    subprocess.Popen([sys.executable, "-c", _REAPER, str(os.getpid()), str(interval)], stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
    _reaper_started = True


def make_executor(cfg: ExecutorConfig, fn: str = TRIAL_FN):
    if cfg.kind == "local":
        return LocalExecutor(fn)
    return RayExecutor(cfg, fn)

