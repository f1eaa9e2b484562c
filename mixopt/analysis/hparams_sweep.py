"""``mixopt hparams-sweep``: an lr x batch grid at several proxy sizes, trained through the engine.

For each preset P, learning rate and batch size of the grid, one proxy of the config's ``proxy:``
spec on preset P, trained on one fixed mixture (``natural`` by default: proportional to the
available tokens; or ``uniform``, or a mixture file) for ``tokens_per_param`` x P's non-embedding
parameters (total for MoE, as :func:`mixopt.analysis.hparams.table_from_trials` counts N), rounded
to whole optimizer steps at every batch size of the grid, so that every run of a size has exactly
the same D. It runs as a study of its own (``<study>-hparams``, ``--name`` to choose) through the
product's plan, loop and executors: members of a pack may differ in lr (``ProxySpec`` per-member
fields), a batch size of its own makes a pack of its own (:func:`mixopt.run.loop.packs`).

What it leaves: the grid of losses per size (printed, ``hparams_sweep.json``), the runs table the
Step-Law fit reads (``hparams_runs.csv``: ``N, D, lr, batch_tokens, loss`` plus ``preset``, for
``mixopt fit --kind hparams --runs``), and, with >= 2 sizes, the fit itself logged with the sweep
study (``mixopt fit --kind hparams`` on it, :func:`mixopt.analysis.fits.fit_hparams_of_study`), which
``lr: auto`` / ``batch_size: auto`` of a study naming it (``hparams: {study: NAME}``) then use.

``--resume`` continues the sweep study and may grow its grid: more sizes, learning rates, batch sizes
or seeds, as long as every stored size keeps its token budget (the lcm of ``--batches`` x ``seq_len``
must still divide it) and the mixture; only the new points are trained. Grow it until every size's
best batch and lr lie inside the grid: a best point on the grid's edge says the optimum is beyond it.

Example:
    mixopt hparams-sweep study.yaml --presets dense-3k,dense-6k,dense-14k,dense-37k \\
        --lrs 0.005,0.01,0.02,0.04,0.08 --batches 4,8,16,32 --tokens-per-param 100
    mixopt hparams-sweep study.yaml ... --batches 2,4,8,16,32 --resume      # grow it by batch 2
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mixopt.analysis.fits import fit_hparams_of_study
from mixopt.analysis.hparams import COLUMNS, DEFAULT_OPTIMUM, DEFAULT_TOLERANCE, OPTIMA, table_from_trials
from mixopt.core.errors import AlreadyExistsError, ConfigError, UserError
from mixopt.core.mixture import Mixture
from mixopt.core.names import check_study_name
from mixopt.core.spec import ProxySpec
from mixopt.core.trial import TrialState
from mixopt.run.cli import config_from_args
from mixopt.run.config import BudgetConfig, MergeConfig, SearchConfig, StudyConfig, SweepConfig
from mixopt.run.loop import execute
from mixopt.run.plan import StudyPlan
from mixopt.run.target import HparamsConfig
from mixopt.study import Study, get_storage


def _positive_list(values: Sequence[Any], flag: str, kind: type) -> list:
    out = []
    for v in values:
        try:
            x = kind(v) if kind is float else int(str(v))
        except (TypeError, ValueError):
            raise UserError(f"{flag}: {v!r} is not {'a number' if kind is float else 'an integer'}") from None
        if not (math.isfinite(x) and x > 0):
            raise UserError(f"{flag}: {v!r} must be > 0")
        out.append(x)
    if not out:
        raise UserError(f"{flag}: give at least one value")
    if len(set(out)) != len(out):
        raise UserError(f"{flag}: a value is given twice")
    return out


def sweep_specs(base: ProxySpec, presets: Sequence[str], lrs: Sequence[float], batches: Sequence[int],
                tokens_per_param: float | None = 100.0, tokens: int | None = None,
                seeds: int = 1) -> list[tuple[str, ProxySpec]]:
    """The grid as (label, spec), size by size, then batch size, then lr and seed: ``base`` on each preset.

    Each size's budget is ``tokens`` (if given) or ``tokens_per_param`` x its non-embedding params,
    rounded down to a multiple of ``lcm(batches) * seq_len`` (whole steps at every batch size; at
    least one). Raises UserError (naming the flag) for unknown presets and non-positive values."""
    lrs = _positive_list(lrs, "--lrs", float)
    batches = _positive_list(batches, "--batches", int)
    if not presets:
        raise UserError("--presets: give at least one preset")
    if len(set(presets)) != len(presets):
        raise UserError("--presets: a preset is given twice")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise UserError(f"--seeds: {seeds!r} must be an integer >= 1")
    if tokens is None and not (tokens_per_param is not None and math.isfinite(tokens_per_param)
                               and tokens_per_param > 0):
        raise UserError(f"--tokens-per-param: {tokens_per_param!r} must be a number > 0")
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1):
        raise UserError(f"--tokens: {tokens!r} must be a positive integer")
    step = math.lcm(*batches) * base.seq_len
    out = []
    for p in presets:
        try:
            on = base.with_preset(p)
        except ConfigError as e:
            raise UserError(f"--presets {p}: {e}") from None
        want = tokens if tokens is not None else int(tokens_per_param * on.non_embedding_params())
        budget = want // step * step
        if budget < step:
            flag = "--tokens" if tokens is not None else "--tokens-per-param"
            raise UserError(f"{flag}: {want:,} tokens for {p} is less than one step at every batch size "
                            f"(lcm of --batches x seq_len = {step:,} tokens)")
        for b in batches:  # lr varies fastest: the trials the loop asks for together share a batch size, so a pack
            for lr in lrs:
                for s in range(seeds):
                    spec = on.with_preset(p, tokens=budget, lr=lr, batch_size=b, seed=base.seed + s)
                    out.append((f"{p} lr={lr:g} B={b}" + (f" seed={base.seed + s}" if seeds > 1 else ""), spec))
    return out


def sweep_table(study: Study) -> pd.DataFrame:
    """The study's COMPLETE runs as an hparams runs table (``N, D, lr, batch_tokens, loss``) with the
    preset and batch in sequences beside."""
    ok = [t for t in study.trials if t.ok and t.spec is not None]
    df = table_from_trials(ok)
    df["preset"] = [t.spec.preset for t in ok]
    df["batch_size"] = [t.spec.batch_size for t in ok]
    df["seed"] = [t.spec.seed for t in ok]
    return df


def grid_doc(df: pd.DataFrame, tolerance: float = DEFAULT_TOLERANCE) -> list[dict[str, Any]]:
    """Per size: the loss grid (mean over seeds) and its best point; the runs within ``tolerance``; ``edges``: the
    grid edges the best point sits on (:func:`_edges`)."""
    out = []
    for (preset, N, D), g in df.groupby(["preset", "N", "D"], sort=False):
        mean = g.groupby(["lr", "batch_size"])["loss"].mean()
        (lr, b), best = mean.idxmin(), float(mean.min())
        out.append({"preset": preset, "N": float(N), "D": float(D), "best": {"lr": float(lr), "batch_size": int(b),
                    "batch_tokens": float(g["batch_tokens"][g["batch_size"] == b].iloc[0]), "loss": best},
                    "near_best": int((mean <= best * (1 + tolerance)).sum()), "edges": _edges(mean.index, lr, b),
                    "grid": [{"lr": float(k[0]), "batch_size": int(k[1]), "loss": float(v)} for k, v in mean.items()]})
    return sorted(out, key=lambda r: r["N"])


def _edges(points, lr: float, b: int) -> list[str]:
    """Where the best point (lr, b) sits on its grid's edge (``lowest lr``, ``highest batch``, ...), on axes the
    grid sweeps: the optimum may lie beyond it, and a law fitted to it is biased."""
    out = []
    for name, v, values in (("lr", lr, {p[0] for p in points}), ("batch", b, {p[1] for p in points})):
        if len(values) >= 2 and v in (min(values), max(values)):
            out.append(f"{'lowest' if v == min(values) else 'highest'} {name}")
    return out


def run_sweep(cfg: StudyConfig, *, presets: Sequence[str], lrs: Sequence[float], batches: Sequence[int],
              tokens_per_param: float | None = 100.0, tokens: int | None = None, mixture: str = "natural",
              seeds: int = 1, name: str | None = None, resume: bool = False, fit: bool = True, bootstrap: int = 100,
              optimum: str = DEFAULT_OPTIMUM, executor=None, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Train the grid as study ``name`` (default ``<study>-hparams``), print and write it, fit the law.

    Returns the report: ``grid`` (per size, see :func:`grid_doc`), ``fit`` (the Step-Law forms fitted
    to the runs, or why not), ``files``."""
    sname = check_study_name(name, "hparams-sweep --name") if name is not None else f"{cfg.study}-hparams"
    specs = sweep_specs(cfg.proxy, presets, lrs, batches, tokens_per_param, tokens, seeds)
    grid = {"presets": list(presets), "lrs": [float(x) for x in lrs], "batches": [int(b) for b in batches],
            "tokens": {p: s.tokens for p in presets for _, s in specs if s.preset == p}, "seeds": seeds,
            "mixture": mixture}
    store = get_storage(cfg.resolved_tracking_uri())
    meta = store.load_meta(sname)
    resumed = resume and meta is not None
    first = specs[0][1]
    stored = store.trials(sname) if resumed else []
    if resumed:  # the stored grid may grow: more sizes, lrs, batch sizes or seeds, never other budgets
        first = _check_grown(sname, meta.extra, grid, specs, [t.spec for t in stored])
    scfg = replace(cfg, study=sname, proxy=first, ladder=[], sweep=SweepConfig(), merge=MergeConfig(),
                   hparams=HparamsConfig(),  # the grid sets every lr and batch size: no `auto` left
                   search=SearchConfig("random", {}, 0), budget=BudgetConfig(trials=len(specs)))
    try:  # --resume continues the sweep study if there is one, else starts it
        plan = StudyPlan.build(scfg, resume=resumed, storage=store)
    except AlreadyExistsError:
        raise AlreadyExistsError(f"hparams-sweep study {sname!r} exists in {store.uri}; pass --resume to continue "
                                 "it (a grid that contains the stored one), or --name NEW") from None
    corpus = plan.open_corpus(progress)
    space = plan.build_space(corpus.token_counts("train"), proxy_tokens=max(s.tokens for _, s in specs))
    mix = stored[0].mixture if stored else _mixture(mixture, plan, space)  # resumed: the stored points' mixture
    # resumed: the grid points the study has no trial of (a grown grid; failed ones are not retried). By spec: a
    # point's label names its seed only once the grid has several
    have = [t.spec for t in stored]
    new = [(label, mix, s) for label, s in specs if s not in have]
    study = plan.open_study(space, queue=new, extra={"hparams_sweep_of": cfg.study, "hparams_sweep": grid})
    if resumed:
        if new:
            progress(f"hparams-sweep {sname!r}: the grid grew by {len(new)} point(s) since the study was created")
        scfg = replace(scfg, budget=BudgetConfig(trials=len(study.trials)))
    progress(f"hparams-sweep {sname!r}: {len(specs)} proxies ({len(presets)} sizes x {len(lrs)} lr x {len(batches)} "
             f"batch sizes x {seeds} seed(s)) on the {mixture} mixture; tokens per size: "
             + ", ".join(f"{p} {t:,}" for p, t in grid["tokens"].items()))
    execute(scfg, study, corpus, executor, progress)
    return sweep_report(study, Path(cfg.output_dir) / sname, fit=fit, bootstrap=bootstrap, optimum=optimum,
                        progress=progress)


def _check_grown(sname: str, extra: dict[str, Any], grid: dict[str, Any], specs, stored: list) -> ProxySpec:
    """The spec the sweep study was created with (its first trial's), after checking that ``specs`` hold
    every stored trial's spec (size, lr, batch size, seed, token budget and every other proxy setting) and
    that the mixture is the same. UserError (one line, the first stored point the new grid lacks) else."""
    was = (extra.get("hparams_sweep") or {}).get("mixture", grid["mixture"])
    if was != grid["mixture"]:
        raise UserError(f"hparams-sweep --resume: study {sname!r} was trained on the {was} mixture, not "
                        f"{grid['mixture']}; resume it with --mixture {was}, or start a new one with --name")
    now = [s for _, s in specs]
    for s in stored:
        if s is not None and s not in now:
            at = [n for n in now if (n.preset, n.lr, n.batch_size, n.seed) == (s.preset, s.lr, s.batch_size, s.seed)]
            why = (f"at {s.tokens:,} tokens, the new grid at {at[0].tokens:,} (the lcm of --batches x seq_len rounds "
                   "every size's budget)" if at and at[0].tokens != s.tokens else "which the new grid lacks")
            raise UserError(f"hparams-sweep --resume: study {sname!r} holds {s.preset} lr={s.lr:g} B={s.batch_size} "
                            f"seed={s.seed} {why}; a resumed sweep may add sizes, lrs, batch sizes and seeds at the "
                            "same budgets and proxy settings, or start a new one with --name")
    return next((s for s in stored if s is not None), specs[0][1])


def _mixture(which: str, plan: StudyPlan, space) -> Mixture:
    base = plan.baselines(space)
    if which in base:
        return base[which]
    m = Mixture.from_file(which, space.domains, f"hparams-sweep --mixture {which}", held_out=plan.objective.targets)
    return space.validate(m, f"hparams-sweep --mixture {which}")


def sweep_report(study: Study, out: Path, fit: bool = True, bootstrap: int = 100, optimum: str = DEFAULT_OPTIMUM,
                 progress: Callable[[str], None] = print) -> dict[str, Any]:
    """The grid of a finished sweep study (printed, ``hparams_sweep.json``, ``hparams_runs.csv``) and,
    with ``fit`` and >= 2 sizes, the Step-Law fit logged with the study."""
    df = sweep_table(study)
    failed = sum(1 for t in study.trials if t.state is TrialState.FAILED)
    if df.empty:
        raise UserError(f"hparams-sweep {study.name!r}: no run completed ({failed} failed); nothing to report")
    out.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"study": study.name, "objective": study.objective.description, "runs": len(df),
                           "failed": failed, "grid": grid_doc(df), "fit": None}
    files = {"runs": str(out / "hparams_runs.csv"), "json": str(out / "hparams_sweep.json")}
    df[[*COLUMNS, "preset", "batch_size", "seed"]].to_csv(files["runs"], index=False)
    if fit and df["N"].nunique() >= 2:
        N, D = df["N"].max(), df["D"].max()
        try:
            doc["fit"] = fit_hparams_of_study(study, (4 * N, 4 * D), bootstrap, out, study.storage, optimum=optimum)
        except UserError as e:
            doc["fit"] = {"skipped": str(e)}
    elif fit:
        doc["fit"] = {"skipped": "one model size: the law needs runs at 2 or more sizes (--presets)"}
    doc["files"] = files
    Path(files["json"]).write_text(json.dumps(doc, indent=2))
    progress(format_sweep(doc))
    return doc


def format_sweep(doc: dict[str, Any]) -> str:
    """The report as text: per size, loss by lr (rows) x batch size (columns), the best marked *."""
    lines = [f"\nhparams sweep {doc['study']}: {doc['runs']} runs ({doc['failed']} failed); {doc['objective']} "
             "(lower is better; * best of its size)"]
    for g in doc["grid"]:
        lrs = sorted({c["lr"] for c in g["grid"]})
        bs = sorted({c["batch_size"] for c in g["grid"]})
        loss = {(c["lr"], c["batch_size"]): c["loss"] for c in g["grid"]}
        b = g["best"]
        lines.append(f"  {g['preset']}: N = {g['N']:,.0f}, D = {g['D']:,.0f} tokens; best lr {b['lr']:g}, batch "
                     f"{b['batch_size']} ({b['batch_tokens']:,.0f} tokens), loss {b['loss']:.4f}")
        lines.append("    " + "lr".rjust(9) + "".join(f"B={x}".rjust(10) for x in bs))
        for lr in lrs:
            cells = []
            for x in bs:
                v = loss.get((lr, x))
                mark = "*" if (lr, x) == (b["lr"], b["batch_size"]) else " "
                cells.append(("–" if v is None else f"{v:.4f}{mark}").rjust(10))
            lines.append("    " + f"{lr:g}".rjust(9) + "".join(cells))
        if g.get("edges"):
            lines.append(f"    note: the best point is at the grid's {' and '.join(g['edges'])}: the optimum may lie "
                         "beyond it; grow the grid there (--resume with more --lrs / --batches)")
    f = doc.get("fit")
    if f and "skipped" in f:
        lines.append(f"  fit skipped: {f['skipped']}")
    elif f:
        fixed = f" (held at the Step Law's: {', '.join(f['fixed'])})" if f["fixed"] else ""
        lines.append(f"  fitted: lr = {f['lr']['coef']:.4g} N^{f['lr']['n_exp']:.3f} D^{f['lr']['d_exp']:.3f}, "
                     f"batch_tokens = {f['batch_tokens']['coef']:.4g} D^{f['batch_tokens']['d_exp']:.3f}{fixed}; "
                     f"logged with the study (role fit); `lr: auto` uses it with hparams: {{study: {doc['study']}}}")
    return "\n".join(lines)


# --- the command line ---------------------------------------------------------------------------
def _csv(text: str) -> list[str]:
    return [x.strip() for x in str(text).split(",") if x.strip()]


def add_parsers(sub) -> dict[str, Callable[[argparse.Namespace, list[str]], int]]:
    """Add ``hparams-sweep``; returns {command: handler(args, extra)}."""
    p = sub.add_parser("hparams-sweep", help="train an lr x batch-size grid at several proxy sizes (a study of its "
                       "own) and fit the Step-Law forms to it (feeds `mixopt fit --kind hparams` and `lr: auto`)")
    p.add_argument("config", nargs="?", help="study YAML (its data, proxy, objective, executor)")
    p.add_argument("--presets", required=True, help="comma-separated proxy presets, e.g. dense-3k,dense-6k,dense-14k")
    p.add_argument("--lrs", required=True, help="comma-separated peak learning rates, e.g. 0.005,0.01,0.02,0.04")
    p.add_argument("--batches", required=True, help="comma-separated batch sizes in sequences, e.g. 8,16,32")
    p.add_argument("--tokens-per-param", type=float, default=100.0,
                   help="each size trains on this many tokens per non-embedding parameter (default 100)")
    p.add_argument("--tokens", type=int, help="one token budget for every size instead of --tokens-per-param")
    p.add_argument("--mixture", default="natural", help="natural (default), uniform, or a mixture file (YAML/JSON)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per grid point (default 1)")
    p.add_argument("--bootstrap", type=int, default=100, help="bootstrap replicates of the fit")
    p.add_argument("--no-fit", action="store_true", help="train and report the grid only")
    p.add_argument("--optimum", choices=OPTIMA, default=DEFAULT_OPTIMUM,
                   help=f"how the fit reads each size's optimum (see `mixopt fit --help`; default {DEFAULT_OPTIMUM})")
    p.add_argument("--name", help="the sweep's study name (default: <study>-hparams)")
    p.add_argument("--study")
    p.add_argument("--tracking-uri")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--json", action="store_true")
    return {"hparams-sweep": cmd_sweep}


def cmd_sweep(args, extra) -> int:
    cfg = config_from_args(args, extra)
    if args.bootstrap < 0:
        raise UserError(f"--bootstrap: {args.bootstrap} must be >= 0")
    lrs, batches = _csv(args.lrs), _csv(args.batches)
    doc = run_sweep(cfg, presets=_csv(args.presets), lrs=lrs, batches=batches,
                    tokens_per_param=args.tokens_per_param, tokens=args.tokens, mixture=args.mixture,
                    seeds=args.seeds, name=args.name, resume=args.resume, fit=not args.no_fit,
                    bootstrap=args.bootstrap, optimum=args.optimum, progress=lambda m: print(m, file=sys.stderr))
    if args.json:
        print(json.dumps(doc, default=lambda o: o.tolist() if isinstance(o, np.ndarray) else str(o)))
    return 0


__all__ = ["add_parsers", "format_sweep", "grid_doc", "run_sweep", "sweep_report", "sweep_specs", "sweep_table"]
