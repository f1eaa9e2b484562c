"""Text summaries for the terminal."""

from __future__ import annotations

from typing import Any


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
