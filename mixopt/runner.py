"""The main job: ``mixopt run study.yaml``.

config -> corpus (cached) -> space -> study in MLflow -> ask / run on Ray / tell until the
budget is spent -> recommendation (YAML + JSON) -> summary table.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mixopt.config import StudyConfig
from mixopt.errors import BudgetError, DataError, SpaceError, UserError
from mixopt.mixture import Mixture, MixtureSpace
from mixopt.objective import Objective
from mixopt.study import Study, create_study, load_study
from mixopt.trial import TrialState


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def open_corpus(cfg: StudyConfig, progress: Callable[[str], None] = log):
    from mixopt.data import prepare_corpus

    d = cfg.data
    return prepare_corpus(d.recipe, tokenizer=d.tokenizer, vocab_size=d.vocab_size,
                          max_bytes_per_domain=int(d.max_mb_per_domain * 1_000_000), val_fraction=d.val_fraction,
                          cache_dir=d.cache_dir, seed=cfg.seed, progress=progress)


def build_space(cfg: StudyConfig, domains: list[str], tokens: dict[str, int]) -> tuple[MixtureSpace, Objective]:
    """The study's space over the training domains (corpus domains minus held-out targets)."""
    objective = Objective.from_config(cfg.objective, domains)
    train = [d for d in domains if d not in objective.targets]
    proxy_tokens = max([cfg.proxy.tokens] + [s.tokens for s in cfg.ladder_specs()])
    target = max(cfg.space.target_tokens or 0.0, float(proxy_tokens))
    try:
        space = MixtureSpace.build(train, {d: tokens[d] for d in train}, target, cfg.space.max_epochs,
                                   cfg.space.floors, cfg.space.caps)
    except SpaceError as e:
        try:
            MixtureSpace.build(train, None, None, None, cfg.space.floors, cfg.space.caps)
        except SpaceError:
            raise e from None
        avail = sum(tokens[d] for d in train)
        raise BudgetError(
            f"budget: {target:.4g} tokens (max of the proxies' tokens and space.target_tokens) needs more data than the "
            f"corpus allows under the repetition cap (space.max_epochs={cfg.space.max_epochs}, {avail} train "
            f"tokens over {len(train)} domains: at most {cfg.space.max_epochs * avail:.4g} tokens); lower the "
            "token budget, raise max_epochs or caps, or add data") from None
    return space, objective


_DOMAIN_NAME = re.compile(r"[A-Za-z0-9_.\-]+")  # what MLflow accepts in param/metric names, minus spaces


def precheck(cfg: StudyConfig) -> list[str]:
    """Check what can be checked before any data is prepared: the searcher and its options,
    the recipe (a folder recipe's domain folders are listed), domain names, and that the
    objective and floors/caps name the recipe's domains. Returns the corpus domain names."""
    import importlib

    from mixopt.data import default_cache_dir, resolve_recipe

    importlib.import_module("search").get_searcher(cfg.search.searcher, cfg.search.options)
    cache = Path(cfg.data.cache_dir).expanduser() if cfg.data.cache_dir else default_cache_dir()
    _, key, sources = resolve_recipe(cfg.data.recipe, cache)
    if key not in ("pip", "debian"):
        for src in sources:
            src.fingerprint()  # lists the folder: a missing or empty domain fails here, not mid-way
    names = sorted(s.name for s in sources)
    for n in names:
        if not _DOMAIN_NAME.fullmatch(n):
            raise DataError(f"data.recipe: domain name {n!r} (a folder name) may only use letters, digits, "
                            "'_', '.' and '-' (it names MLflow params and metrics); rename the folder")
    objective = Objective.from_config(cfg.objective, names)
    train = [d for d in names if d not in objective.targets]
    MixtureSpace.build(train, None, None, None, cfg.space.floors, cfg.space.caps)
    return names


def check_corpus_fits(cfg: StudyConfig, corpus) -> None:
    """Every domain needs at least one window (seq_len + 1 tokens) in each split, at every rung."""
    need = max([cfg.proxy.seq_len] + [s.seq_len for s in cfg.ladder_specs()]) + 1
    for split in ("train", "val"):
        for d, n in corpus.token_counts(split).items():
            if n < need:
                raise DataError(f"data: domain {d!r} has {n} {split} tokens, fewer than one window of "
                                f"seq_len + 1 = {need}; add documents to it, raise data.val_fraction, or lower "
                                "proxy.seq_len")


_RESUMABLE = ("budget", "executor", "tracking_uri", "output_dir")


def _check_resume(cfg: StudyConfig, meta: dict[str, Any]) -> None:
    """On --resume only the budget, executor and output settings may change."""
    stored = meta.get("config")
    if not stored:
        return
    now = json.loads(json.dumps(cfg.to_dict(), default=str))
    stored = json.loads(json.dumps(stored, default=str))
    for d in (now, stored):
        d.get("data", {}).pop("cache_dir", None)
    diff = sorted(k for k in set(now) | set(stored) if k not in _RESUMABLE and now.get(k) != stored.get(k))
    if diff:
        raise UserError(f"--resume: study {cfg.study!r} was created with other {', '.join(diff)} settings; "
                        f"on resume only {', '.join(_RESUMABLE)} may change (start a new study for the rest)")


def _study_exists(uri: str, name: str) -> bool:
    """Whether the store holds the study, without creating a SQLite database that isn't there."""
    from mixopt.tracking import MlflowStorage

    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        return False
    return MlflowStorage(uri, create=False).load_meta(name) is not None


def _driver_threads(cfg: StudyConfig) -> None:
    """Leave the cores the local workers use to them: the driver's own math (GP fits in bo/mfbo,
    LightGBM) gets the rest, at least one thread. Oversubscribed cores make a GP fit 10x slower."""
    import os

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
    recommendation: Any
    files: dict[str, str]
    seconds: float
    train_seconds: float


def sweep_mixtures(cfg: StudyConfig, space: MixtureSpace) -> list[tuple[str, Mixture]]:
    """The sweep's (label, mixture) pairs: baselines, custom mixtures, then seeded Dirichlet draws."""
    from search.dirichlet import sample

    out: list[tuple[str, Mixture]] = []
    for name in cfg.sweep.baselines:
        x = space.prior_array() if name == "natural" else np.full(space.dim, 1.0 / space.dim)
        out.append((name, Mixture.from_array(space.project(x), space.domains)))
    for i, m in enumerate(cfg.sweep.custom):
        out.append((f"custom{i}", space.validate(Mixture(m, where=f"sweep.custom[{i}]"), f"sweep.custom[{i}]")))
    if cfg.sweep.mixtures:
        X = sample(space, cfg.sweep.mixtures, np.random.default_rng([cfg.seed, 0x5EE9]))
        out += [(f"dirichlet{i}", Mixture.from_array(x, space.domains)) for i, x in enumerate(X)]
    return out


def _open_study(cfg: StudyConfig, space: MixtureSpace, objective: Objective, resume: bool, storage) -> Study:
    if resume:
        study = load_study(cfg.study, storage)
        if tuple(study.space.domains) != space.domains:
            raise UserError(f"--resume: study {cfg.study!r} has domains {list(study.space.domains)} but this "
                            f"config gives {list(space.domains)}")
        return study
    ladder = cfg.ladder_specs()
    sweep = sweep_mixtures(cfg, space)  # checked before the study is created
    study = create_study(cfg.study, space=space, objective=objective, searcher=cfg.search.searcher,
                         searcher_options=cfg.search.options, n_init=cfg.search.n_init, seed=cfg.seed,
                         spec=None if ladder else cfg.proxy, fidelities=ladder, storage=storage,
                         extra={"config": cfg.to_dict()})
    for label, m in sweep:
        for spec in ladder or [cfg.proxy]:
            study.enqueue(m, spec, label)
    return study


def run(cfg: StudyConfig, *, resume: bool = False, executor=None, storage=None,
        progress: Callable[[str], None] = log) -> RunOutcome:
    """Run a study to its budget and write the recommendation. ``executor``/``storage`` default
    to the config's (Ray; MLflow at the resolved tracking URI)."""
    from mixopt.tracking import MlflowStorage

    t_start = time.time()
    precheck(cfg)
    _driver_threads(cfg)
    where = getattr(storage, "uri", "the store") if storage is not None else cfg.resolved_tracking_uri()
    exists = (storage.load_meta(cfg.study) is not None) if storage is not None else \
        _study_exists(cfg.resolved_tracking_uri(), cfg.study)
    if exists and not resume:
        raise UserError(f"study {cfg.study!r} already exists in {where}; "
                        "pass --resume to continue it, or set --study=NEW_NAME")
    if resume and not exists:
        raise UserError(f"--resume: no study {cfg.study!r} in {where} to resume")
    if resume:
        storage = storage or MlflowStorage(cfg.resolved_tracking_uri(), create=False)
        _check_resume(cfg, storage.load_meta(cfg.study))
    corpus = open_corpus(cfg, progress)  # a cache: reused by every study on the same data settings
    check_corpus_fits(cfg, corpus)
    space, objective = build_space(cfg, corpus.domains, corpus.token_counts("train"))
    if storage is None:  # created only once the config is known to run
        storage = MlflowStorage(cfg.resolved_tracking_uri())
    study = _open_study(cfg, space, objective, resume, storage)
    progress(f"study {study.name!r}: {len(space.domains)} training domains, objective: {objective.description}; "
             f"searcher {study.searcher_name} after {study.n_init} random; budget {cfg.budget.trials} trials; "
             f"tracking {getattr(storage, 'uri', 'memory')}")
    train_seconds = execute(cfg, study, corpus, executor, progress, t_start)
    rec, files = finish(cfg, study, storage, progress)
    return RunOutcome(study, rec, files, time.time() - t_start, train_seconds)


def execute(cfg: StudyConfig, study: Study, corpus, executor=None, progress: Callable[[str], None] = log,
            t_start: float | None = None) -> float:
    """Run the study's trials on the executor until the budget is spent; returns the summed
    in-trial training seconds."""
    from mixopt.executor import make_executor

    executor = executor or make_executor(cfg.executor)
    base = {"corpus_dir": str(corpus.path), "eval_domains": list(corpus.domains),
            "num_threads": cfg.executor.threads_per_worker, "device": "auto" if cfg.executor.num_gpus > 0 else "cpu"}
    try:
        return _loop(cfg, study, executor, base, progress, time.time() if t_start is None else t_start)
    except KeyboardInterrupt:
        progress("interrupted; finished trials are in the store. Continue with the same command and --resume")
        raise
    finally:
        executor.shutdown()


def _loop(cfg: StudyConfig, study: Study, executor, base: dict, progress, t_start: float) -> float:
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
        if budget.wall_seconds and time.time() - t_start > budget.wall_seconds:
            return False
        if budget.flops and flops_spent() >= budget.flops:
            return False
        return started() < budget.trials

    while True:
        free = executor.capacity - executor.running()
        while free > 0 and (todo or can_start()):
            if todo:
                trials = [todo.pop(0)]
            else:
                trials = study.ask(min(free, budget.trials - started()))
                if not trials:  # the searcher holds back until running trials finish
                    break
            for t in trials:
                if t.state is not TrialState.RUNNING:
                    study.mark_running(t.trial_id)
                req = dict(base, trial_id=t.trial_id, mixture=t.mixture.to_dict(), spec=(t.spec or cfg.proxy).to_dict())
                executor.submit(t.trial_id, req)
                free -= 1
        if executor.running() == 0:
            break
        for f in executor.wait(timeout=None):
            if f.error is not None:
                t = study.tell(f.trial_id, error=f.error)
            else:
                train_seconds += float(f.result.get("train_seconds", 0.0))
                t = study.tell(f.trial_id, f.result)
            _progress_line(study, t, executor.running(), budget.trials, progress, t_start)
    return train_seconds


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


def finish(cfg: StudyConfig, study: Study, storage, progress=log) -> tuple[Any, dict[str, str]]:
    """Recommend, write ``recommendation.{yaml,json}`` and ``runs.csv``, log them to MLflow, print a summary."""
    from mixopt.report import summary_table
    from mixopt.runs_table import write_runs_table

    out = Path(cfg.output_dir) / study.name
    out.mkdir(parents=True, exist_ok=True)
    best = study.best()
    if best is None:  # every trial failed: keep the evidence, say why, recommend nothing
        runs = str(out / "runs.csv")
        write_runs_table(study.to_dataframe(), runs)
        storage.log_study_outputs(study.name, {"runs": runs}, {}, {})
        if hasattr(storage, "set_study_status"):
            storage.set_study_status(study.name, "FAILED")
        failed = [t for t in study.trials if t.state is TrialState.FAILED]
        first = failed[0].error if failed else "no trial ran"
        raise UserError(f"study {study.name!r}: no trial completed ({len(failed)} failed; first: {first}); "
                        f"nothing to recommend. Trials: {runs}")
    rec = study.recommend()
    doc = {
        "study": study.name,
        "mixture": {d: float(w) for d, w in rec.mixture.items()},
        "predicted_objective": None if rec.predicted is None else float(rec.predicted),
        "predicted_std": None if rec.std is None else float(rec.std),
        "objective": study.objective.description,
        "searcher": study.searcher_name,
        "info": {k: v for k, v in (rec.info or {}).items() if isinstance(v, (int, float, str, bool))},
        "best_trial": None if best is None else {"trial": best.trial_id, "objective": best.value,
                                                   "mixture": best.mixture.to_dict()},
        "trials": study.counts(),
        "tracking_uri": getattr(storage, "uri", None),
    }
    files = {"yaml": str(out / "recommendation.yaml"), "json": str(out / "recommendation.json"),
             "runs": str(out / "runs.csv")}
    _atomic_write(files["yaml"], yaml.safe_dump(doc, sort_keys=False))
    _atomic_write(files["json"], json.dumps(doc, indent=2))
    write_runs_table(study.to_dataframe(), files["runs"])
    metrics = {"recommended.predicted_objective": rec.predicted} if rec.predicted is not None else {}
    if best is not None:
        metrics["best.objective"] = best.value
    from dashboards.report import study_plots  # plots for the MLflow run; never raises for data reasons

    files.update(study_plots(study, rec, out / "plots"))
    storage.log_study_outputs(study.name, files, metrics, {"mixopt.recommendation": json.dumps(doc["mixture"])})
    if hasattr(storage, "set_study_status"):
        storage.set_study_status(study.name, "FINISHED")
    print(summary_table(study, rec))
    for k, v in files.items():
        progress(f"wrote {v}")
    return rec, files


def _atomic_write(path: str, text: str) -> None:
    tmp = Path(path + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)

