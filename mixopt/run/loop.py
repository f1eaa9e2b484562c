"""The main job: ``mixopt run study.yaml``.

config -> :class:`~mixopt.run.plan.StudyPlan` (every check, once) -> corpus (cached) -> space ->
study in the store -> ask / run on the executor / tell until the budget is spent ->
recommendation (YAML + JSON), runs table, plots -> summary table.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mixopt.core.trial import Trial, TrialState
from mixopt.core.worker import Branch, TrialRequest
from mixopt.run import experts
from mixopt.run.config import StudyConfig
from mixopt.run.executors import make_executor
from mixopt.run.outputs import CardMaker, Plotter, finish
from mixopt.run.plan import StudyPlan, log
from mixopt.search import Recommendation
from mixopt.study import Storage, Study


def _driver_threads(cfg: StudyConfig) -> None:
    """Leave the cores the local workers use to them: the driver's own math (GP fits in bo/mfbo,
    LightGBM) gets the rest, at least one thread. Oversubscribed cores make a GP fit 10x slower."""
    if cfg.executor.kind == "ray" and (cfg.executor.address or os.environ.get("RAY_ADDRESS")):
        return  # a cluster: the workers are elsewhere
    free = max(1, (os.cpu_count() or 1) - (cfg.executor.workers * cfg.executor.threads_per_worker
                                           if cfg.executor.kind == "ray" else 0))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(free)
    else:
        os.environ.setdefault("OMP_NUM_THREADS", str(free))


@dataclass
class RunOutcome:
    study: Study
    recommendation: Recommendation
    files: dict[str, str]
    seconds: float
    train_seconds: float
    interrupted: bool = False  # Ctrl-C: the study is resumable with --resume


def run(cfg: StudyConfig, *, resume: bool = False, executor=None, storage: Storage | None = None,
        progress: Callable[[str], None] = log, plotters: Sequence[Plotter] = (),
        source: str | None = None, card: CardMaker | None = None) -> RunOutcome:
    """Run a study to its budget and write the recommendation.

    Args:
        cfg: the validated study config.
        resume: continue the study of this name from its store.
        executor: default: the config's (Ray, or in-process for ``executor.kind: local``).
        storage: default: MLflow at the config's resolved tracking URI.
        progress: where progress lines go (default: stderr).
        plotters: extra outputs drawn at the end (the CLI passes the study plots).
        card: builds the recommendation's run card (the CLI passes ``mixopt.analysis.card.make_card``).
        source: the config file's name, named in config errors.
    Raises:
        UserError: a config, data or store mistake (before anything is written), or no trial completed.
    """
    t_start = time.time()
    plan = StudyPlan.build(cfg, resume=resume, storage=storage, source=source)
    _driver_threads(cfg)
    corpus = plan.open_corpus(progress)  # a cache: reused by every study on the same data settings
    space = plan.build_space(corpus.token_counts("train"))
    es = None
    if cfg.merge.needs_seed:  # the study's experts (or seed); a damaged set is refused before anything is written
        es = experts.experts_spec(cfg.merge, plan.ladder[-1] if plan.ladder else cfg.proxy, space, corpus)
        experts.preflight(es, cfg.data.cache_path(), resume, seed_only=not cfg.merge.enabled)
    study = plan.open_study(space, extra={"train_tokens": corpus.token_counts("train")})  # created once it can run
    progress(f"study {study.name!r}: {len(space.domains)} training domains, objective: "
             f"{study.objective.description}; searcher {study.searcher_name} after {study.n_init} random; "
             f"budget {cfg.budget.trials} trials; tracking {plan.storage().uri}")
    stop = Interrupt(progress)
    executor = executor or make_executor(cfg.executor)
    branch = None
    if es is not None:  # experts trained (or reused) and mixtures screened by merging, before any proposal
        try:
            with stop:
                expert_set = experts.prepare(cfg, es, study, corpus, executor, resume=resume, progress=progress)
        except BaseException:
            executor.shutdown()
            raise
        if cfg.merge.branch:
            branch = Branch(es, str(expert_set.folder))
            progress(f"merge.branch: every trial continues the seed {es.key()} on its mixture for the last "
                     f"{es.expert_steps} of {es.spec.steps} steps ({1 - es.seed_steps / es.spec.steps:.2f} of a proxy each)")
    train_seconds = execute(cfg, study, corpus, executor, progress, t_start, stop, branch=branch)
    rec, files = finish(cfg, study, plan.storage(), progress, plotters, interrupted=stop.requested, card=card)
    return RunOutcome(study, rec, files, time.time() - t_start, train_seconds, stop.requested)


def execute(cfg: StudyConfig, study: Study, corpus, executor=None, progress: Callable[[str], None] = log,
            t_start: float | None = None, stop: Interrupt | None = None, shutdown: bool = True,
            branch: Branch | Callable[[Trial], Branch | None] | None = None) -> float:
    """Run the study's trials on the executor until the budget is spent (or Ctrl-C); returns the
    summed in-trial training seconds. ``stop`` tells the caller whether Ctrl-C ended it; the executor is
    shut down at the end unless ``shutdown`` is off (the caller has more work for it). ``branch``: every
    trial continues this seed (``merge.branch``), or the one a function of the trial names (None: from
    scratch)."""
    executor = executor or make_executor(cfg.executor)
    branch_of = branch if callable(branch) else (lambda t: branch)

    def request(t: Trial) -> TrialRequest:
        return TrialRequest(t.trial_id, t.mixture, t.spec or cfg.proxy, str(corpus.path), tuple(corpus.domains),
                            cfg.executor.threads_per_worker, cfg.executor.device, branch_of(t))

    stop = stop or Interrupt(progress)
    try:
        with stop:
            return _loop(cfg, study, executor, request, progress, time.time() if t_start is None else t_start, stop)
    finally:
        if shutdown:
            executor.shutdown()


class Interrupt:
    """Ctrl-C during a study: the first stops asking, cancels the running trials (they stay
    unfinished in the store, so ``--resume`` re-runs them) and lets the outputs be written; a
    second one exits at once (exit code 130)."""

    def __init__(self, progress: Callable[[str], None]) -> None:
        self.progress = progress
        self.requested = False
        self._old = None

    def __enter__(self) -> Interrupt:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            os._exit(130)
        self.requested = True
        self.progress("Ctrl-C: no new trials; stopping the running ones and writing the outputs "
                      "(Ctrl-C again exits at once)")


def _loop(cfg: StudyConfig, study: Study, executor, request: Callable[[Trial], TrialRequest], progress,
          t_start: float, stop: Interrupt) -> float:
    # trials a dead driver left PENDING/RUNNING are run again: they never completed
    todo = [t for t in study.trials if t.state in (TrialState.PENDING, TrialState.RUNNING)]
    if todo:
        progress(f"resuming: re-running {len(todo)} unfinished trial(s) {[t.trial_id for t in todo]}")
    budget = cfg.budget
    train_seconds = 0.0

    def started() -> int:
        return sum(1 for t in study.trials if t.phase != "warm_start" and t.state is not TrialState.WAITING)

    def flops_spent() -> float:
        return sum(t.metrics.get("flops_per_token", 0.0) * t.metrics.get("tokens", 0.0) for t in study.trials)

    def can_start() -> bool:
        if stop.requested:
            return False
        if budget.wall_seconds and time.time() - t_start > budget.wall_seconds:
            return False
        if budget.flops and flops_spent() >= budget.flops:
            return False
        return started() < budget.trials

    K = cfg.executor.pack_size or auto_pack_size(cfg)
    sync = cfg.executor.synchronous  # a new round of asks only when the last one has reported
    while True:
        free = executor.capacity - executor.running()
        while free > 0 and not stop.requested and (todo or (can_start() and not (sync and executor.running()))):
            if todo:
                trials, todo = todo[:K * free], todo[K * free:]
            else:  # K proposals per free worker at once; pending trials count for the searcher
                trials = study.ask(min(K * free, budget.trials - started()))
                if not trials:  # the searcher holds back until running trials finish
                    break
            for t in trials:
                if t.state is not TrialState.RUNNING:
                    study.mark_running(t.trial_id)
            reqs = {t.trial_id: request(t) for t in trials}
            for pack in packs(trials, K, cfg, lambda t, reqs=reqs: reqs[t.trial_id].branch):
                if len(pack) == 1:
                    executor.submit(pack[0].trial_id, reqs[pack[0].trial_id])
                else:
                    executor.submit_pack([t.trial_id for t in pack], [reqs[t.trial_id] for t in pack])
                free -= 1
        if stop.requested and executor.running():
            cancelled = executor.cancel()
            progress(f"cancelled running trial(s) {cancelled}: unfinished in the store, re-run by --resume")
        if executor.running() == 0:
            break
        for f in executor.wait(timeout=0.5):  # returns often, so Ctrl-C is seen
            if f.failure is not None:
                t = study.tell(f.trial_id, error=f.failure.reason)
            else:
                train_seconds += float(f.result.metrics.get("train_seconds", 0.0))
                t = study.tell(f.trial_id, f.result)
            _progress_line(study, t, executor.running(), budget.trials, progress, t_start)
    return train_seconds


def packs(trials: Sequence[Trial], k: int, cfg: StudyConfig,
          branch_of: Callable[[Trial], Branch | None] = lambda t: None) -> list[list[Trial]]:
    """Trials grouped into packs of at most ``k`` whose specs share everything but the per-member
    fields (``ProxySpec.pack_key``) and that start alike (the same branch, or none), in trial order."""
    groups: dict[tuple, list[Trial]] = {}
    for t in trials:
        b = branch_of(t)
        groups.setdefault(((t.spec or cfg.proxy).pack_key(), b.folder if b else None), []).append(t)
    return [g[i:i + k] for g in groups.values() for i in range(0, len(g), k)]


def auto_pack_size(cfg: StudyConfig) -> int:
    """``executor.pack_size: 0``: on a GPU, 32 proxies per pack; on CPU, 1 (one proxy per task:
    on CPU a pack gains little over the solo path, see bench/bench_engine.py)."""
    return 32 if cfg.executor.num_gpus > 0 else 1


def _progress_line(study: Study, t, running: int, total: int, progress, t_start: float) -> None:
    c = study.counts()
    best = study.best()
    what = f"objective {t.value:.4f}" if t.ok else f"FAILED: {t.error}"
    tps = t.metrics.get("tokens_per_s")
    progress(f"[{c['COMPLETE'] + c['FAILED']:>3}/{total}] trial {t.trial_id:>3} ({t.phase}) {what}"
             + (f", {tps:,.0f} tok/s" if tps else "")
             + f" | running {running}, failed {c['FAILED']}"
             + (f" | best {best.value:.4f} (trial {best.trial_id})" if best else "")
             + f" | {time.time() - t_start:,.0f}s")
