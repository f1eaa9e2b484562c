"""What the plots show, computed once from a :class:`mixopt.Study` (numpy only, no plotting).

Both renderers read these: :mod:`mixopt.dashboards.plots` (matplotlib PNGs, for MLflow) and
:mod:`mixopt.dashboards.figures` (plotly, for the interactive HTML report and the live dashboard).
Every builder returns ``None`` with a reason in :attr:`StudyView.notes` when the study has no
data for it (too few trials, no baselines, no scale ladder, no MoE): no made-up plots.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mixopt.analysis.fits import collect, multi_scale_groups

PHASES = ("enqueued", "warm_start", "init", "model")  # the searcher's phases, in hand-out order
MIN_CV_TRIALS = 5  # completed trials needed before a surrogate's held-out predictions mean anything
ROUTING_KEYS = ("routing_entropy", "routing_load_cv", "routing_dropped_frac")


@dataclass
class StudyView:
    """A study's trials as arrays, plus what each plot needs.

    ``W`` is (T, k): the mixture of every trial (FAILED ones included), in ``domains`` order;
    ``value`` (T,) the objective (NaN unless COMPLETE); ``state``/``phase``/``label`` (T,).
    """

    name: str
    domains: list[str]
    objective: str
    searcher: str
    trial_ids: np.ndarray
    W: np.ndarray
    value: np.ndarray
    state: list[str]
    phase: list[str]
    label: list[str]
    errors: list[str]
    losses: list[dict[str, float]]
    metrics: list[dict[str, float]]
    natural: np.ndarray
    counts: dict[str, int]
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> np.ndarray:
        return np.isfinite(self.value)

    def trial_name(self, i: int) -> str:
        lab = self.label[i]
        return f"#{int(self.trial_ids[i])}" + (f" {lab}" if lab else "")


def study_view(study) -> StudyView:
    """Read a study's trials into arrays (a FAILED or unfinished trial has objective NaN)."""
    domains = list(study.space.domains)
    trials = study.trials
    W = np.array([[float(t.mixture.get(d, 0.0)) for d in domains] for t in trials]).reshape(len(trials), len(domains))
    value = np.array([float(t.value) if t.ok else math.nan for t in trials])
    try:
        natural = np.asarray(study.space.prior_array(), dtype=float)
    except Exception:  # a space without a prior: uniform
        natural = np.full(len(domains), 1.0 / max(len(domains), 1))
    return StudyView(study.name, domains, study.objective.description, study.searcher_name,
                     np.array([t.trial_id for t in trials], dtype=int), W, value, [t.state.value for t in trials],
                     [t.phase or "?" for t in trials], [t.label or "" for t in trials],
                     [t.error or "" for t in trials], [dict(t.losses) for t in trials],
                     [dict(t.metrics) for t in trials], natural, study.counts())


def order_by_objective(v: StudyView) -> np.ndarray:
    """Trial indices: COMPLETE ones best first, then the rest (FAILED, unfinished) by id."""
    ok = np.flatnonzero(v.ok)
    rest = np.flatnonzero(~v.ok)
    return np.concatenate([ok[np.argsort(v.value[ok], kind="stable")], rest]).astype(int)


def best_so_far(v: StudyView) -> np.ndarray:
    """(T,) running minimum of the objective in trial-id order (NaN before the first COMPLETE)."""
    out = np.full(len(v.value), math.nan)
    best = math.inf
    for i, x in enumerate(v.value):
        if math.isfinite(x):
            best = min(best, x)
        out[i] = best if math.isfinite(best) else math.nan
    return out


@dataclass
class CVResult:
    surrogate: str
    method: str  # "leave-one-out" or "5-fold"
    actual: np.ndarray  # (n,)
    predicted: np.ndarray  # (n,)
    trial_ids: np.ndarray  # (n,)
    spearman: float


def surrogate_name(study) -> str:
    """The study's own surrogate where its searcher names one (and it is cheap enough), else linear."""
    name = str((getattr(study, "searcher_options", None) or {}).get("surrogate", "linear"))
    return name if name in ("linear", "lightgbm") else "linear"


def surrogate_cv(v: StudyView, surrogate: str = "linear", seed: int = 0) -> CVResult | None:
    """Held-out predictions of ``surrogate`` (weights -> objective) on the COMPLETE trials:
    leave-one-out up to 20 trials, else 5-fold. None (with a note) under MIN_CV_TRIALS."""
    ok = np.flatnonzero(v.ok)
    if len(ok) < MIN_CV_TRIALS:
        v.notes.append(f"surrogate vs actual: skipped, {len(ok)} completed trial(s) (< {MIN_CV_TRIALS})")
        return None
    from scipy.stats import spearmanr

    from mixopt.search.surrogates import make_surrogate

    X, y = v.W[ok], v.value[ok]
    n = len(ok)
    folds = np.arange(n) if n <= 20 else np.random.default_rng(seed).permutation(n) % 5
    pred = np.full(n, math.nan)
    opts: dict[str, Any] = {"n_estimators": 200} if surrogate == "lightgbm" else {}  # fast enough for a report
    try:
        for f in np.unique(folds):
            test = folds == f
            model = make_surrogate(surrogate, seed=seed, **opts).fit(X[~test], y[~test])
            pred[test] = model.predict(X[test])
    except Exception as e:  # a surrogate that cannot fit this data is a note, not a crash
        v.notes.append(f"surrogate vs actual: {surrogate} could not be fitted ({type(e).__name__}: {e})")
        return None
    rho = float(spearmanr(y, pred).statistic) if np.ptp(pred) > 0 and np.ptp(y) > 0 else math.nan
    return CVResult(surrogate, "leave-one-out" if n <= 20 else "5-fold", y, pred, v.trial_ids[ok], rho)


def loss_comparison(v: StudyView, top: int = 3) -> tuple[list[str], list[str], np.ndarray] | None:
    """Per-domain validation loss of the best ``top`` trials and the baselines.

    Baselines are the COMPLETE enqueued trials (a sweep's uniform/natural mixtures), else the
    median COMPLETE trial. Returns (row names, loss domains, (rows, domains) losses) or None.
    """
    order = [int(i) for i in order_by_objective(v) if v.ok[i]]
    if not order:
        v.notes.append("per-domain losses: skipped, no completed trial")
        return None
    base = [i for i in order if v.phase[i] == "enqueued"]
    if not base:
        base = [order[len(order) // 2]]
        names_base = [f"median {v.trial_name(base[0])}"]
    else:
        names_base = [f"baseline {v.trial_name(i)}" for i in base]
    best = [i for i in order if i not in base][:top]
    rows = best + base
    names = [f"rank {r + 1}: {v.trial_name(i)}" for r, i in enumerate(best)] + names_base
    cols = sorted({d for i in rows for d in v.losses[i]}, key=lambda d: (d not in v.domains, d))
    if not cols:
        v.notes.append("per-domain losses: skipped, trials report no per-domain loss")
        return None
    L = np.array([[v.losses[i].get(d, math.nan) for d in cols] for i in rows])
    return names, cols, L


def mixture_comparison(v: StudyView, recommendation) -> tuple[list[str], np.ndarray]:
    """(column names, (columns, k) weights): recommended (if any), uniform, natural, best trial."""
    k = len(v.domains)
    names, rows = [], []
    if recommendation is not None:
        m = recommendation.mixture
        names.append("recommended")
        rows.append([float(m.get(d, 0.0)) for d in v.domains])
    names += ["uniform", "natural"]
    rows += [[1.0 / k] * k, list(v.natural)]
    ok = order_by_objective(v)
    if v.ok.any():
        names.append(f"best trial {v.trial_name(int(ok[0]))}")
        rows.append(list(v.W[int(ok[0])]))
    return names, np.array(rows, dtype=float)


def routing(v: StudyView) -> dict[str, np.ndarray] | None:
    """MoE routing statistics of COMPLETE trials that report them: {key: (n,)} + ``value``/``ids``."""
    idx = [i for i in np.flatnonzero(v.ok) if any(k in v.metrics[i] for k in ROUTING_KEYS)]
    if not idx:
        return None
    out = {k: np.array([v.metrics[i].get(k, math.nan) for i in idx]) for k in ROUTING_KEYS}
    out["value"] = v.value[idx]
    out["ids"] = v.trial_ids[idx]
    return out


def recommendation_or_none(study, notes: list[str] | None = None):
    """``study.recommend()``, or None (with a note) before any COMPLETE trial or if it fails."""
    if study.best() is None:
        return None
    try:
        return study.recommend()
    except Exception as e:
        if notes is not None:
            notes.append(f"recommendation: unavailable ({type(e).__name__}: {e})")
        return None


def scaling_points(study) -> dict[str, Any] | None:
    """Runs of mixtures trained at 2 or more scales (a ladder sweep): ``mixopt.analysis.fits.collect``'s
    arrays restricted to those mixtures, or None when no mixture has 2 scales."""
    if not getattr(study, "fidelities", None) or len(study.fidelities) < 2:
        return None
    try:

        data = collect(study)
        keep = multi_scale_groups(data)
    except Exception:
        return None
    if len(keep) == 0:
        return None
    m = np.isin(data["g"], keep)
    return {"g": data["g"][m], "N": data["N"][m], "D": data["D"][m], "L": data["L"][m],
            "labels": {int(i): data["labels"][int(i)] for i in keep}}
