"""What a finished study leaves behind: ``recommendation.{yaml,json}``, ``runs.csv``, the
outputs logged to the study's store, and the summary table printed for the terminal."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from mixopt.core.errors import UserError
from mixopt.core.runs_table import write_runs_table
from mixopt.core.trial import TrialState
from mixopt.run.config import StudyConfig
from mixopt.search import Recommendation
from mixopt.study import Storage, Study

#: an extra output of a finished study: (study, recommendation, folder) -> {name: file written}
Plotter = Callable[[Study, Recommendation, Path], dict[str, str]]


def summary_table(study, rec: Any, top: int = 5) -> str:
    """Recommended mixture next to uniform and the best trials, one row per domain."""
    domains = list(study.space.domains)
    best = sorted((t for t in study.trials if t.ok), key=lambda t: t.value)[:top]
    cols = [("recommended", rec.mixture), ("natural", dict(zip(domains, study.space.prior_array())))]
    cols += [(f"trial {t.trial_id}", t.mixture) for t in best[:3]]
    w = max(12, max(len(d) for d in domains) + 2)
    lines = [f"\nStudy {study.name}: {study.counts()['COMPLETE']} complete, {study.counts()['FAILED']} failed; "
             f"objective = {study.objective.description} (lower is better)",
             "".ljust(w) + "".join(name.rjust(13) for name, _ in cols)]
    for d in domains:
        lines.append(d.ljust(w) + "".join(f"{float(m.get(d, 0.0)):13.4f}" for _, m in cols))
    obj = ["predicted" if rec.predicted is not None else "-", "-"] + [f"{t.value:.4f}" for t in best[:3]]
    if rec.predicted is not None:
        obj[0] = f"{rec.predicted:.4f}"
    lines.append("objective".ljust(w) + "".join(o.rjust(13) for o in obj))
    lines.append("(recommended: predicted objective; trials: measured)")
    return "\n".join(lines)


def finish(cfg: StudyConfig, study: Study, storage: Storage, progress: Callable[[str], None],
           plotters: Sequence[Plotter] = (), interrupted: bool = False) -> tuple[Recommendation | None, dict[str, str]]:
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
    files = {"yaml": str(out / "recommendation.yaml"), "json": str(out / "recommendation.json"),
             "runs": str(out / "runs.csv")}
    _atomic_write(files["yaml"], yaml.safe_dump(doc, sort_keys=False))
    _atomic_write(files["json"], json.dumps(doc, indent=2))
    write_runs_table(study.to_dataframe(), files["runs"])
    metrics = {"recommended.predicted_objective": rec.predicted} if rec.predicted is not None else {}
    if best is not None:
        metrics["best.objective"] = best.value
    for plot in plotters:
        files.update(plot(study, rec, out / "plots"))
    storage.log_study_outputs(study.name, files, metrics, {"mixopt.recommendation": json.dumps(doc["mixture"])})
    storage.set_study_status(study.name, "KILLED" if interrupted else "FINISHED")
    print(summary_table(study, rec))
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

