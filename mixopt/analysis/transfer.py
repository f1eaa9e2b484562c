"""``mixopt transfer``: does the mixture found with small proxies win at a larger scale?

Trains the study's recommended mixture and baselines (uniform; natural = proportional to the
available tokens; any user-given mixtures) at a larger proxy scale (by default >= 4x the
proxies' non-embedding parameters and 4x their tokens) with several seeds each, as a study of
its own (``<study>-transfer``) in the same MLflow store, and reports the objective per mixture
with a seed error bar and the differences to the baselines.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mixopt.core.errors import MixtureError, UserError
from mixopt.core.mixture import Mixture
from mixopt.core.spec import DENSE_PRESETS, MOE_PRESETS, ProxySpec
from mixopt.run.config import BudgetConfig, SearchConfig, StudyConfig, SweepConfig
from mixopt.run.loop import execute
from mixopt.run.plan import StudyPlan
from mixopt.study import Storage, Study, create_study, get_storage, load_study


def larger_spec(spec: ProxySpec, scale: float, preset: str | None = None, tokens: int | None = None) -> ProxySpec:
    """The smallest preset of the same family with >= scale x the (active) non-embedding params, and
    scale x the tokens (unless given)."""
    if preset is None:
        family = MOE_PRESETS if spec.arch == "moe" else DENSE_PRESETS
        need = scale * spec.active_non_embedding_params()
        fitting = sorted((spec.with_preset(p).active_non_embedding_params(), p) for p in family
                         if spec.with_preset(p).active_non_embedding_params() >= need)
        if not fitting:
            raise UserError(f"transfer: no {spec.arch} preset has {scale:g}x the "
                            f"{spec.active_non_embedding_params():,} (active) non-embedding params of "
                            f"{spec.preset!r}; pass --preset or a smaller --scale")
        preset = fitting[0][1]
    return spec.with_preset(preset, tokens=int(tokens or math.ceil(scale * spec.tokens)))


def read_mixture(path: str, domains) -> Mixture:
    """A mixture from YAML/JSON: a mapping domain -> weight, or a recommendation file's ``mixture``."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"transfer --mixture {path}: file not found")
    try:
        doc = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"transfer --mixture {path}: not YAML/JSON ({e})") from None
    if isinstance(doc, dict) and isinstance(doc.get("mixture"), dict):
        doc = doc["mixture"]
    if not isinstance(doc, dict):
        raise UserError(f"transfer --mixture {path}: expected a mapping domain -> weight")
    return Mixture(doc, list(domains), where=f"{path}")


def run_transfer(cfg: StudyConfig, *, seeds: int = 3, scale: float = 4.0, preset: str | None = None,
                 tokens: int | None = None, mixture_files: tuple[str, ...] = (), resume: bool = False,
                 executor=None, progress: Callable[[str], None] = print) -> dict[str, Any]:
    if seeds < 1 or scale <= 0:
        raise UserError("transfer: --seeds must be >= 1 and --scale > 0")
    uri = cfg.resolved_tracking_uri()
    store = get_storage(uri, create=False)
    src = load_study(cfg.study, store)
    spec = larger_spec(src.spec or cfg.proxy, scale, preset, tokens)
    mixtures = {"recommended": src.recommend().mixture}
    space0 = src.space
    mixtures["uniform"] = Mixture.from_array(space0.project(np.full(space0.dim, 1 / space0.dim)), space0.domains)
    mixtures["natural"] = Mixture.from_array(space0.project(space0.prior_array()), space0.domains)
    for i, f in enumerate(mixture_files):
        mixtures[Path(f).stem or f"user{i}"] = read_mixture(f, space0.domains)
    tname = f"{cfg.study}-transfer"
    tcfg = replace(cfg, study=tname, proxy=spec, ladder=[], sweep=SweepConfig(), search=SearchConfig("random", {}, 0),
                   budget=BudgetConfig(trials=len(mixtures) * seeds))
    plan = StudyPlan.build(tcfg, storage=store, check_exists=False)
    corpus = plan.open_corpus(progress)
    space = plan.build_space(corpus.token_counts("train"))
    for label, m in mixtures.items():  # the repetition cap at the larger token budget
        try:
            space.validate(m, f"transfer mixture {label!r}")
        except MixtureError as e:
            raise UserError(f"{e} (at {spec.tokens:,} tokens the repetition cap is tighter; lower --scale/--tokens)") \
                from None
    storage = plan.storage()
    if storage.load_meta(tname) is not None:
        if not resume:
            raise UserError(f"transfer study {tname!r} exists in {uri}; pass --resume to continue it")
        study = load_study(tname, storage)
    else:
        study = create_study(tname, space=space, objective=src.objective, searcher="random", seed=cfg.seed,
                             spec=spec, storage=storage, extra={"config": tcfg.to_dict(), "transfer_of": cfg.study})
        for s in range(seeds):
            for label, m in mixtures.items():
                study.enqueue(m, replace(spec, seed=s), label)
    progress(f"transfer: {len(mixtures)} mixtures x {seeds} seeds at {spec.preset} "
             f"({spec.non_embedding_params():,} non-embedding params, {spec.tokens:,} tokens) vs proxies at "
             f"{(src.spec or cfg.proxy).preset} ({(src.spec or cfg.proxy).tokens:,} tokens)")
    execute(tcfg, study, corpus, executor, progress)
    return transfer_table(study, storage, Path(cfg.output_dir) / tname, list(mixtures), progress)


def transfer_table(study: Study, storage: Storage, out: Path, labels: list[str],
                   progress: Callable[[str], None]) -> dict[str, Any]:
    """Per mixture label: mean, std and s.e. over seeds; differences of ``recommended`` against
    uniform and natural; printed, written to ``transfer.json`` + a plot, and logged as a run."""
    rows: dict[str, list[float]] = {lab: [] for lab in labels}
    for t in study.trials:
        if t.ok and t.label in rows:
            rows[t.label].append(t.value)
    stats = {}
    for lab, v in rows.items():
        a = np.array(v)
        stats[lab] = {"n": len(a), "mean": float(a.mean()) if len(a) else math.nan,
                      "std": float(a.std(ddof=1)) if len(a) > 1 else math.nan,
                      "sem": float(a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else math.nan,
                      "values": v}
    diffs = {}
    for base in ("uniform", "natural"):
        if base in stats and "recommended" in stats:
            r, b = stats["recommended"], stats[base]
            diffs[f"recommended-{base}"] = {"diff": r["mean"] - b["mean"],
                                            "sem": math.sqrt(r["sem"] ** 2 + b["sem"] ** 2)}
    lines = [f"\nTransfer at {study.spec.preset}, {study.spec.tokens:,} tokens: {study.objective.description} "
             "(lower is better; mean ± std over seeds)"]
    for lab, st in stats.items():
        lines.append(f"  {lab:<14} {st['mean']:.4f} ± {st['std']:.4f}  (n={st['n']})")
    for k, d in diffs.items():
        lines.append(f"  {k:<24} {d['diff']:+.4f} ± {d['sem']:.4f} (s.e.)")
    progress("\n".join(lines))
    out.mkdir(parents=True, exist_ok=True)
    doc = {"study": study.name, "spec": study.spec.to_dict(), "stats": stats, "diffs": diffs}
    jpath = out / "transfer.json"
    jpath.write_text(json.dumps(doc, indent=2))
    files = [str(jpath), _plot(stats, study, out)]
    metrics = {f"{lab}.mean": st["mean"] for lab, st in stats.items()}
    metrics.update({f"{lab}.std": st["std"] for lab, st in stats.items()})
    metrics.update({f"{k}.diff": d["diff"] for k, d in diffs.items()})
    storage.log_run(study.name, "transfer-report", "transfer", {"preset": study.spec.preset,
                    "tokens": study.spec.tokens, "mixtures": ",".join(stats)}, metrics, {}, files)
    return doc


def _plot(stats, study, out: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labs = list(stats)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(labs, [stats[l]["mean"] for l in labs], yerr=[np.nan_to_num(stats[l]["std"]) for l in labs], capsize=4,
           color=["tab:green" if l == "recommended" else "tab:gray" for l in labs])
    lo = min(stats[l]["mean"] - np.nan_to_num(stats[l]["std"]) for l in labs)
    hi = max(stats[l]["mean"] + np.nan_to_num(stats[l]["std"]) for l in labs)
    ax.set_ylim(lo - 0.2 * (hi - lo + 1e-9), hi + 0.2 * (hi - lo + 1e-9))
    ax.set_ylabel("objective (mean ± std over seeds)")
    ax.set_title(f"transfer at {study.spec.preset}, {study.spec.tokens:,} tokens")
    fig.tight_layout()
    path = out / "transfer.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
