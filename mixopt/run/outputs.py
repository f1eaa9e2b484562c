"""What a finished study leaves behind: ``recommendation.{yaml,json}``, ``runs.csv``, the
outputs logged to the study's store, and the summary table printed for the terminal."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mixopt.core.errors import UserError
from mixopt.core.runs_table import write_runs_table
from mixopt.core.trial import TrialState
from mixopt.run.config import StudyConfig
from mixopt.search import Recommendation
from mixopt.study import Storage, Study

#: an extra output of a finished study: (study, recommendation, folder) -> {name: file written}
Plotter = Callable[[Study, Recommendation, Path], dict[str, str]]


@dataclass(frozen=True)
class Card:
    """A recommendation's run card for the big run (built by ``mixopt.analysis.card``, passed in by the
    command line like the plotters): ``doc`` goes into ``recommendation.{yaml,json}`` as ``card``,
    ``lines`` under the summary table, ``metrics`` and ``tags`` onto the study's MLflow run."""

    doc: dict[str, Any]
    lines: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


#: builds the run card of a finished study: (config, study, recommendation) -> Card (None: no target to card)
CardMaker = Callable[[StudyConfig, Study, Recommendation], Card | None]


def summary_table(study, rec: Any, top: int = 5, card: Card | None = None) -> str:
    """Recommended mixture next to uniform and the best trials, one row per domain."""
    domains = list(study.space.domains)
    best = sorted((t for t in study.trials if t.ok), key=lambda t: t.value)[:top]
    cols = [("recommended", rec.mixture), ("natural", dict(zip(domains, study.space.prior_array())))]
    cols += [(f"trial {t.trial_id}", t.mixture) for t in best[:3]]
    w = max(12, max(len(d) for d in domains) + 2)
    merged = study.merged_scores() if hasattr(study, "merged_scores") else None
    scored = (f"; {len(merged)} mixtures scored by merging experts, {sum(1 for t in study.trials if t.ok)} trained"
              if merged is not None and len(merged) else "")
    lines = [f"\nStudy {study.name}: {study.counts()['COMPLETE']} complete, {study.counts()['FAILED']} failed{scored}; "
             f"objective = {study.objective.description} (lower is better)",
             "".ljust(w) + "".join(name.rjust(13) for name, _ in cols)]
    for d in domains:
        lines.append(d.ljust(w) + "".join(f"{float(m.get(d, 0.0)):13.4f}" for _, m in cols))
    obj = ["predicted" if rec.predicted is not None else "-", "-"] + [f"{t.value:.4f}" for t in best[:3]]
    if rec.predicted is not None:
        obj[0] = f"{rec.predicted:.4f}"
    lines.append("objective".ljust(w) + "".join(o.rjust(13) for o in obj))
    lines.append("(recommended: predicted objective; trials: measured)")
    why = explain_recommendation(rec, best[0] if best else None, list(domains))
    if why:
        lines.append(why)
    return "\n".join(lines + (card.lines if card is not None else []))


_MODELS = {"merged": "merged experts", "gp": "GP", "lightgbm": "LightGBM", "linear": "linear model",
           "mixing_law": "mixing law", "gp_posterior_mean": "GP", "mf_gp_posterior_mean_at_target": "multi-fidelity GP",
           "mixing_law_optimum": "mixing law"}


def explain_recommendation(rec: Any, best: Any, domains: list[str]) -> str | None:
    """One line saying why the recommended mixture is not the best measured trial ``best``, or why
    it is that trial although the searcher has a model (its optimum was predicted worse); None
    when there is nothing to explain (no model, no trial, or the two agree)."""
    info = dict(rec.info or {})
    if best is None:
        return None
    model = _MODELS.get(str(info.get("model") or info.get("model_source") or info.get("source")), "model")
    n = f" fitted on {info['n_fit']} trials" if info.get("n_fit") else ""
    if info.get("source") == "best_trial" and info.get("model_predicted") is not None:
        return (f"recommended: the best trial {best.trial_id} (measured {best.value:.4f}), because the {model}{n} "
                f"predicts its own optimum worse ({float(info['model_predicted']):.4f})")
    if info.get("source") == "merged":  # a merged score is the merged model's loss: not a trial's to compare with
        return (f"recommended: the mean of the {info.get('top_k')} best of {info.get('n_merged')} mixtures scored by "
                f"merging experts (mean merged objective {float(rec.predicted):.4f}: a merged model's loss, comparable "
                f"with other merged scores, not with the trials' measured losses; best trial {best.trial_id}: "
                f"{best.value:.4f})")
    same = np.allclose(rec.mixture.as_array(domains), best.mixture.as_array(domains), atol=1e-9)
    if same or rec.predicted is None or info.get("source") in (None, "best_trial", "prior"):
        return None
    pred, gap = float(rec.predicted), float(best.value) - float(rec.predicted)
    how = {"merged": f" (the mean of the {info.get('top_k')} best of {info.get('n_merged')} mixtures scored by merging)",
           "top_k_average": f" (the mean of the {info.get('top_k')} best of {info.get('n_candidates')} it scored)",
           "mixing_law_optimum": f" (the law's minimum pulled by {info.get('kl_weight')} x KL towards the natural "
                                 "mixture)"}
    because = (f"the {model}{n} predicts {gap:.4f} lower there, at a mixture no trial has run"
               f"{how.get(str(info.get('source')), '')}" if gap >= 0 else
               f"fallback_to_best is off: the {model} predicts its optimum {-gap:.4f} worse than that trial")
    return (f"recommended: the {model}'s predicted optimum (pred {pred:.4f}) differs from the best trial "
            f"{best.trial_id} (measured {best.value:.4f}) because {because}")


def finish(cfg: StudyConfig, study: Study, storage: Storage, progress: Callable[[str], None],
           plotters: Sequence[Plotter] = (), interrupted: bool = False,
           card: CardMaker | None = None) -> tuple[Recommendation | None, dict[str, str]]:
    """Recommend, write ``recommendation.{yaml,json}`` and ``runs.csv`` (and what each plotter
    draws, under ``plots/``), log them to the store, mark the study FINISHED, print a summary.

    After Ctrl-C (``interrupted``) the study is marked KILLED instead, and with no completed
    trial only the runs table is written (the recommendation is None).

    Raises:
        UserError: no trial completed (the runs table is still written and logged).
    """
    out = Path(cfg.output_dir) / study.name
    out.mkdir(parents=True, exist_ok=True)
    best = study.best()
    if best is None:  # every trial failed: keep the evidence, say why, recommend nothing
        runs = str(out / "runs.csv")
        write_runs_table(study.to_dataframe(), runs)
        storage.log_study_outputs(study.name, {"runs": runs}, {}, {})
        storage.set_study_status(study.name, "KILLED" if interrupted else "FAILED")
        if interrupted:
            progress(f"interrupted before any trial completed; wrote {runs}. Continue with the same command and "
                     "--resume")
            return None, {"runs": runs}
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
        "tracking_uri": storage.uri,
    }
    made = card(cfg, study, rec) if card is not None else None  # the big run's lr, batch, epochs, MoE leverage
    if made is not None:
        doc["card"] = made.doc
    files = {"yaml": str(out / "recommendation.yaml"), "json": str(out / "recommendation.json"),
             "runs": str(out / "runs.csv")}
    merged = study.merged_scores()
    if not merged.empty:  # model-merging proxies: scored, never trained; a table of their own
        doc["merged"] = {"scored": len(merged), "trained": study.counts()["COMPLETE"] + study.counts()["FAILED"]}
        files["merged"] = str(out / "merged.csv")
    _atomic_write(files["yaml"], yaml.safe_dump(doc, sort_keys=False))
    _atomic_write(files["json"], json.dumps(doc, indent=2))
    write_runs_table(study.to_dataframe(), files["runs"])
    if "merged" in files:
        write_runs_table(merged, files["merged"])
    metrics = {"recommended.predicted_objective": rec.predicted} if rec.predicted is not None else {}
    if best is not None:
        metrics["best.objective"] = best.value
    for plot in plotters:
        files.update(plot(study, rec, out / "plots"))
    tags = {"mixopt.recommendation": json.dumps(doc["mixture"])}
    if made is not None:
        metrics.update(made.metrics)
        tags.update(made.tags)
    storage.log_study_outputs(study.name, files, metrics, tags)
    storage.set_study_status(study.name, "KILLED" if interrupted else "FINISHED")
    print(summary_table(study, rec, card=made))
    for path in files.values():
        progress(f"wrote {path}")
    if interrupted:
        progress(f"interrupted: the outputs above are from {study.counts()['COMPLETE']} completed trial(s). "
                 "Continue with the same command and --resume")
    return rec, files


def _atomic_write(path: str, text: str) -> None:
    tmp = Path(path + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)

