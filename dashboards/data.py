"""What the plots show, computed once from a :class:`mixopt.Study` (numpy only, no plotting).

Both renderers read these: :mod:`mixopt.dashboards.plots` (matplotlib PNGs, for MLflow) and
:mod:`mixopt.dashboards.figures` (plotly, for the interactive HTML report and the live dashboard).
Every builder returns ``None`` with a reason in :attr:`StudyView.notes` when the study has no
data for it (too few trials, no baselines, no scale ladder, no MoE): no made-up plots.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from mixopt.analysis.fits import collect, multi_scale_groups

PHASES = ("enqueued", "warm_start", "init", "model")  # the searcher's phases, in hand-out order
MIN_CV_TRIALS = 5  # completed trials needed before a surrogate's held-out predictions mean anything
LOO_MAX, LOO_MAX_SLOW = 20, 10  # leave-one-out up to this many completed trials, then 5-fold
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
    surrogate: str  # the model's name as titles show it (SurrogateChoice.label)
    method: str  # "leave-one-out" or "5-fold"
    actual: np.ndarray  # (n,)
    predicted: np.ndarray  # (n,)
    trial_ids: np.ndarray  # (n,)
    spearman: float


@dataclass(frozen=True)
class SurrogateChoice:
    """The model a study's searcher fits, to cross-validate: ``make_surrogate(name, **options)``
    (:mod:`mixopt.search.surrogates`), or with ``per_domain`` (the mixing law on per-domain losses)
    one such model per domain, summed with these objective weights. ``label`` names it in titles."""

    name: str
    label: str
    options: dict[str, Any] = field(default_factory=dict)
    per_domain: dict[str, float] | None = None
    note: str = ""


_LABELS = {"gp": "GP", "lightgbm": "LightGBM", "linear": "linear", "mixing_law": "mixing law"}
_GP_KEYS = ("warp", "max_fit_rows", "time_limit_s")  # GP options that shape the model (refit: CV fits afresh)


def _inner_searcher(s):
    """The searcher that models the objective inside ``hybrid`` (main), ``concurrency_limit`` and ``repeat``."""
    for _ in range(8):
        inner = getattr(s, "main", None) or getattr(s, "searcher", None)
        if inner is None or not hasattr(inner, "recommend"):
            return s
        s = inner
    return s


def searched_surrogate(study, n_fit: int) -> SurrogateChoice:
    """The surrogate ``study``'s searcher searched with, fitted on ``n_fit`` finite trials: RegMix's
    ``surrogate`` (``auto`` resolved as it resolves at ``n_fit`` rows: GP below ``switch_at``, else
    LightGBM), ``bo``/``mfbo``'s GP, ``mixing_law``'s law (one per objective domain when the trials
    report those losses, as the searcher fits it). A searcher without a model (``random``): linear."""
    from mixopt.search import get_searcher

    s = _inner_searcher(get_searcher(study.searcher_name, dict(study.searcher_options or {})))
    kind = type(s).__name__
    if kind == "RegMixSearcher":
        name, opts = ("gp" if s.surrogate == "bo" else s.surrogate), dict(s.surrogate_options)
        if s.surrogate == "bo":   # the bo searcher's GP: its default warp unless the options give one
            from mixopt.search.surrogates import BO_WARP

            opts.setdefault("warp", BO_WARP)
        opts.pop("refit", None)
        if name == "auto":
            switch = int(opts.pop("switch_at", 128))
            gp = n_fit < switch
            opts = {k: v for k, v in opts.items() if (k in _GP_KEYS) == gp}
            name = "gp" if gp else "lightgbm"
            return SurrogateChoice(name, f"{_LABELS[name]} (auto, {n_fit} trials {'<' if gp else '>='} {switch})", opts)
        return SurrogateChoice(name, _LABELS.get(name, name), opts)
    if kind in ("BOSearcher", "MFBOSearcher"):
        opts = {k: getattr(s, k) for k in _GP_KEYS[:2] if hasattr(s, k)}
        note = ("surrogate vs actual: mfbo's GP also takes the rung as an input; this GP sees the mixtures only"
                if kind == "MFBOSearcher" else "")
        return SurrogateChoice("gp", "GP", opts, note=note)
    if kind == "MixingLawSearcher":
        opts = {"restarts": s.restarts, "ridge": s.ridge, "f_scale": s.f_scale}
        weights = dict(study.objective.weights)
        return SurrogateChoice("mixing_law", "mixing law", opts, per_domain=weights)
    return SurrogateChoice("linear", f"linear ({study.searcher_name} fits no surrogate)")


def _fit_predict(choice: SurrogateChoice, seed: int, X: np.ndarray, targets: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Fit on the rows outside ``test``, predict the ``test`` rows: (n_test,). ``targets`` is the
    objective (n,), or with ``choice.per_domain`` the per-domain losses (n, d), one model each, summed."""
    from mixopt.search.surrogates import make_surrogate

    weights = list(choice.per_domain.values()) if choice.per_domain else [1.0]
    cols = targets.reshape(len(X), len(weights))
    out = np.zeros(int(test.sum()))
    for j, w in enumerate(weights):
        model = make_surrogate(choice.name, seed=seed, **choice.options).fit(X[~test], cols[~test, j])
        out += float(w) * model.predict(X[test])
    return out


def surrogate_cv(v: StudyView, surrogate: SurrogateChoice | str = "linear", seed: int = 0) -> CVResult | None:
    """Held-out predictions of ``surrogate`` (weights -> objective; a name, or the study's own from
    :func:`searched_surrogate`) on the COMPLETE trials: leave-one-out up to LOO_MAX trials (LOO_MAX_SLOW
    for the GP and the mixing law, whose fits take seconds), else 5-fold; every fold a fit of its own.
    None (with a note) under MIN_CV_TRIALS or when the model cannot be fitted."""
    choice = surrogate if isinstance(surrogate, SurrogateChoice) else SurrogateChoice(
        surrogate, _LABELS.get(surrogate, surrogate))
    ok = np.flatnonzero(v.ok)
    if len(ok) < MIN_CV_TRIALS:
        v.notes.append(f"surrogate vs actual: skipped, {len(ok)} completed trial(s) (< {MIN_CV_TRIALS})")
        return None
    from scipy.stats import spearmanr

    X, y = v.W[ok], v.value[ok]
    targets = y
    if choice.per_domain:  # the searcher's per-domain laws where every trial reports those losses
        L = np.array([[v.losses[i].get(d, math.nan) for d in choice.per_domain] for i in ok], dtype=float)
        if np.isfinite(L).all():
            targets = L
            if len(choice.per_domain) > 1:
                choice = dataclasses.replace(choice, label=f"{choice.label} (a law per objective domain)")
        else:
            choice = dataclasses.replace(choice, per_domain=None)
    if choice.note:
        v.notes.append(choice.note)
    n = len(ok)
    loo = n <= (LOO_MAX_SLOW if choice.name in ("gp", "mixing_law") else LOO_MAX)
    folds = np.arange(n) if loo else np.random.default_rng(seed).permutation(n) % 5
    pred = np.full(n, math.nan)
    try:
        from mixopt.search.surrogates import make_surrogate

        make_surrogate(choice.name, seed=seed, **choice.options)  # loads the model's libraries (torch), fits nothing
        # one thread (a limit covers the libraries loaded when it is set): these fits are small, and a GP
        # fit on 25 rows took 15 s with torch's 2 threads beside busy workers, 1.4 s with one (2-core host)
        with threadpool_limits(1):
            for f in np.unique(folds):
                test = folds == f
                pred[test] = _fit_predict(choice, seed, X, targets, test)
    except Exception as e:  # a surrogate that cannot fit this data is a note, not a crash
        v.notes.append(f"surrogate vs actual: {choice.label} could not be fitted ({type(e).__name__}: {e})")
        return None
    rho = float(spearmanr(y, pred).statistic) if np.ptp(pred) > 0 and np.ptp(y) > 0 else math.nan
    return CVResult(choice.label, "leave-one-out" if loo else "5-fold", y, pred, v.trial_ids[ok], rho)


def study_surrogate_cv(study, v: StudyView) -> CVResult | None:
    """:func:`surrogate_cv` of the surrogate ``study`` searched with (None before any COMPLETE trial)."""
    if not v.ok.any():
        return None
    try:
        choice = searched_surrogate(study, int(v.ok.sum()))
    except Exception as e:  # an unknown searcher (not registered in this process): say so, fit nothing
        v.notes.append(f"surrogate vs actual: skipped, the study's searcher is unknown here ({e})")
        return None
    return surrogate_cv(v, choice, int(getattr(study, "seed", 0) or 0))


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
    if len(getattr(study, "rungs", None) or ()) < 2:
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


def merged_view(study) -> dict[str, Any] | None:
    """Mixtures scored by merging experts (model-merging proxies), a fidelity of their own: ``merged``
    (m,) merged objectives, ``round`` (m,), and ``pairs``: (merged, trained, trial id) for the mixtures
    that were also trained for real; None when the study has no merged scores."""
    df = study.merged_scores() if hasattr(study, "merged_scores") else None
    if df is None or df.empty:
        return None
    domains = list(study.space.domains)
    X = df[[f"w.{d}" for d in domains]].to_numpy(dtype=float)
    y = df["objective"].to_numpy(dtype=float)
    pairs = []
    for t in study.trials:
        if t.ok:
            dist = np.abs(X - np.array([t.mixture.get(d, 0.0) for d in domains])).sum(1)
            i = int(np.argmin(dist))
            if dist[i] <= 1e-9:
                pairs.append((float(y[i]), float(t.value), int(t.trial_id)))
    return {"merged": y, "round": df["round"].to_numpy(dtype=int), "pairs": pairs}


def online_trajectories(study, most: int = 4) -> dict[str, Any] | None:
    """Weights over training of the study's online-mixing trials (``spec.online``; the best ``most``):
    {trial id: (steps (n,), weights (n, k))} and the domains; None without such trials."""
    done = sorted((t for t in study.trials if t.ok and t.spec is not None and t.spec.online), key=lambda t: t.value)
    out = {}
    for t in done[:most]:
        traj = study.storage.trial_trajectory(study.name, t.trial_id)
        if traj:
            out[t.trial_id] = (np.array([h["step"] for h in traj]),
                               np.array([[h["weights"][d] for d in study.space.domains] for h in traj]))
    return {"domains": list(study.space.domains), "trials": out,
            "mixer": {t.trial_id: t.spec.online for t in done}} if out else None
