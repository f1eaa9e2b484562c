"""Hyperparameter laws: the optimal learning rate and batch size as power laws of N and D.

**Step Law** (Li et al. 2025, "Predictable Scale: Part I", arXiv 2503.04715; 3,700 models)::

    lr(N, D)           = exp(c_lr) * N**a * D**b     peak AdamW learning rate
    batch_tokens(D)    = exp(c_B) * D**g             tokens per optimizer step (independent of N)

N = non-embedding parameters, D = training tokens. The published constants below are the means
of the 1,000 bootstrap fits in ``data/1004_fitted_lr_bs_scaling_model_parameters.csv`` of
github.com/step-law/steplaw, exactly what the release's own tool (``code/fit_tool.py
pred-opt-lr-bs``, ``get_mean_lr_bs_scaling_model``) evaluates; the paper prints them as
``lr = 1.79 N^-0.713 D^0.307`` and ``B = 0.58 D^0.571`` (exp(0.5863) = 1.797, exp(-0.5435) = 0.581). The 90 % intervals of
:func:`published_hparams` come from the covariance of those 1,000 replicates (a log-normal
approximation; it matches the replicates' 5th/95th percentiles within 1 % at N = 1e9, D = 1e11).

**Fit on your runs** (:func:`fit_hparams`), as the release does (``query_optimal_lr_bs_data``,
``get_bootstrap_lr_bs_scaling_models``): keep every run whose loss is within ``tolerance``
(default 0.25 %) of the best run of its (N, D) group, regress ``log lr`` on ``log N, log D`` and
``log batch_tokens`` on ``log D`` over the kept runs (least squares), and bootstrap the kept
runs for intervals. An exponent the runs cannot identify (one token budget, or D proportional
to N so log N and log D are collinear, within :data:`COLLINEAR_TOL`) is held at the published
value and named in ``fixed``.

**Small, noisy grids** (``optimum="surface"``): where one run's loss varies between seeds by more
than neighbouring grid points differ (our CPU proxies: 0.5-2.4 %), the best grid point, and the
runs within 0.25 % of it, are mostly noise. The surface fit reads every run instead: the loss of
run r of (N, D) group j is modelled as ``o_j + s_j Q(log lr_r - log lr*(N_j, D_j), log B_r -
log B*(D_j))`` with Q a positive-definite quadratic shared by all groups (the Step Law paper finds
the landscape convex in log lr and log batch), a loss offset o_j and curvature scale s_j per
group, and lr*, B* the power laws above; all fitted at once by least squares (seeds averaged per
grid point, weighted by their count), bootstrapped by resampling each group's runs.

Example:
    >>> h = published_hparams(1e9, 1e11, seq_len=2048)
    >>> round(h.lr, 6), round(h.batch_tokens), h.batch_sequences
    (0.001662, 1107467, 541)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mixopt.core.errors import RunsTableError, UserError
from mixopt.core.trial import Trial

# Means of the released bootstrap table (1,000 rows; columns lr_intercept, lr_coefN, lr_coefD,
# bs_intercept, bs_coefD), natural logs, batch in tokens.
STEP_LAW_LR = (0.5863077907399268, -0.7129222911869904, 0.30749095041206964)  # (c_lr, a, b)
STEP_LAW_BATCH = (-0.5435421736103339, 0.5709443646895045)  # (c_B, g)
# Covariances of the same 1,000 replicates: lr over (c_lr, a, b), batch over (c_B, g).
_STEP_LAW_LR_COV = np.array([[3.89062111e-01, -1.35589390e-02, -5.13249353e-03],
                             [-1.35589390e-02, 8.91485737e-04, -1.74331789e-04],
                             [-5.13249353e-03, -1.74331789e-04, 3.66311843e-04]])
_STEP_LAW_BATCH_COV = np.array([[0.19117964, -0.00815157], [-0.00815157, 0.00034852]])
# The span of the released runs (data/dense_lr_bs_loss.csv: N 2.1e8-1.07e9, D 4e9-1e11;
# data/moe_lr_bs_loss.csv: total N 2.15e9, D 2e9-2e10). The paper fits more runs than it
# released, so this is the range we can vouch for, not necessarily the whole fitted range.
STEP_LAW_N_RANGE = (2.1e8, 2.2e9)
STEP_LAW_D_RANGE = (2e9, 1e11)
STEP_LAW_SEQ_LEN = 2048  # the paper's training context length
DEFAULT_TOLERANCE = 0.0025  # fit_tool.py query_optimal_lr_bs_data(filter_threshold=0.0025)
STEP_LAW_SOURCE = "Step Law (arXiv 2503.04715), constants of github.com/step-law/steplaw data/1004_fitted_*.csv"
COLUMNS = ("N", "D", "lr", "batch_tokens", "loss")
_Z90 = 1.6448536269514722  # two-sided 90 %


@dataclass(frozen=True)
class Hparams:
    """Learning rate and batch size for one target (N non-embedding params, D tokens).

    ``batch_sequences`` is ``batch_tokens / seq_len`` rounded to the nearest integer (at least 1);
    intervals are 90 %; ``in_range`` is False when (N, D) lies outside the runs the law was
    fitted on, and ``message`` then says which.
    """

    N: float
    D: float
    lr: float
    batch_tokens: float
    seq_len: int
    batch_sequences: int
    lr_interval: tuple[float, float]
    batch_tokens_interval: tuple[float, float]
    in_range: bool
    message: str
    source: str

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def _range_message(N: float, D: float, n_range, d_range, what: str) -> str:
    out = []
    if not n_range[0] <= N <= n_range[1]:
        out.append(f"N={N:.3g} is outside {n_range[0]:.3g}-{n_range[1]:.3g}")
    if not d_range[0] <= D <= d_range[1]:
        out.append(f"D={D:.3g} is outside {d_range[0]:.3g}-{d_range[1]:.3g}")
    return f"{' and '.join(out)} ({what}): extrapolated" if out else ""


def _positive(name: str, v: float) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise UserError(f"{name}: {v!r} is not a number") from None
    if not math.isfinite(x) or x <= 0:
        raise UserError(f"{name}: {v!r} must be a finite number > 0")
    return x


def _make(N, D, lr, lr_iv, bt, bt_iv, seq_len, n_range, d_range, what, source) -> Hparams:
    seq_len = int(_positive("seq_len", seq_len))
    msg = _range_message(N, D, n_range, d_range, what)
    return Hparams(N, D, float(lr), float(bt), seq_len, max(1, round(bt / seq_len)),
                   (float(lr_iv[0]), float(lr_iv[1])), (float(bt_iv[0]), float(bt_iv[1])), not msg, msg, source)


def published_hparams(N: float, D: float, seq_len: int = STEP_LAW_SEQ_LEN) -> Hparams:
    """The Step Law's optimal lr and batch size at N non-embedding params and D tokens.

    For an MoE, pass its **total** non-embedding parameters: the released MoE runs (total N
    2.15e9 at every sparsity) have their best lr closer to the law at total N (mean |log ratio|
    0.27) than at active N (0.99); see ``mixopt hparams --moe``.
    """
    N, D = _positive("N", N), _positive("D", D)
    x = np.array([1.0, math.log(N), math.log(D)])
    mu = float(np.dot(STEP_LAW_LR, x))
    sd = math.sqrt(float(x @ _STEP_LAW_LR_COV @ x))
    xb = np.array([1.0, math.log(D)])
    mub = float(np.dot(STEP_LAW_BATCH, xb))
    sdb = math.sqrt(float(xb @ _STEP_LAW_BATCH_COV @ xb))
    return _make(N, D, math.exp(mu), (math.exp(mu - _Z90 * sd), math.exp(mu + _Z90 * sd)), math.exp(mub),
                 (math.exp(mub - _Z90 * sdb), math.exp(mub + _Z90 * sdb)), seq_len, STEP_LAW_N_RANGE,
                 STEP_LAW_D_RANGE, "range of the Step Law's released runs", STEP_LAW_SOURCE)


# Ling's MoE law (Tian et al. 2025, arXiv 2507.17702, Eq. 3): lr and batch (tokens) of MoE models as power
# laws of the training compute C = M D (M: non-embedding forward FLOPs per token), searched over 3e17-3e20.
LING_MOE_LR = (1.1576, -0.1529)
LING_MOE_BATCH = (0.0694, 0.3644)
LING_MOE_C_RANGE = (3e17, 3e20)


def moe_hparams(active_params: float, D: float, seq_len: int = STEP_LAW_SEQ_LEN,
                flops_per_token: float | None = None) -> Hparams:
    """The MoE hyperparameter law of arXiv 2507.17702 (Eq. 3: ``lr = 1.1576 C^-0.1529``,
    ``B = 0.0694 C^0.3644`` tokens) at C = M D, M = ``flops_per_token`` (default ``2 * active_params``;
    :func:`mixopt.analysis.scaling_laws.forward_flops_per_token` for a spec): a cross-check of the Step
    Law for MoE targets. No intervals are published (they are the point); ``N`` is the active count."""
    N, D = _positive("active_params", active_params), _positive("D", D)
    C = (float(flops_per_token) if flops_per_token else 2.0 * N) * D
    lr = LING_MOE_LR[0] * C ** LING_MOE_LR[1]
    bt = LING_MOE_BATCH[0] * C ** LING_MOE_BATCH[1]
    h = _make(N, D, lr, (lr, lr), bt, (bt, bt), seq_len, (0, math.inf), (0, math.inf), "", "")
    msg = "" if LING_MOE_C_RANGE[0] <= C <= LING_MOE_C_RANGE[1] else \
        f"C={C:.3g} is outside {LING_MOE_C_RANGE[0]:.3g}-{LING_MOE_C_RANGE[1]:.3g} (the law's search range): extrapolated"
    return Hparams(**{**h.__dict__, "in_range": not msg, "message": msg,
                      "source": "Ling MoE hyperparameter law (arXiv 2507.17702, Eq. 3)"})


# --- fitting the same forms to a runs table ---------------------------------------------------
def validate_table(df: pd.DataFrame, source: str = "<runs>") -> pd.DataFrame:
    """Columns ``N, D, lr, batch_tokens, loss`` as floats; rows whose loss is not finite
    (failed runs) are dropped. RunsTableError (one line, naming column and row) otherwise."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise RunsTableError(f"{source}: missing column(s) {', '.join(missing)}; an hparams runs table needs "
                             f"{', '.join(COLUMNS)} (N = non-embedding params, D = tokens)")
    out = pd.DataFrame({c: pd.to_numeric(df[c], errors="coerce") for c in COLUMNS})
    out = out[np.isfinite(out["loss"].to_numpy(dtype=float))]
    for c in ("N", "D", "lr", "batch_tokens"):
        v = out[c].to_numpy(dtype=float)
        bad = np.flatnonzero(~(np.isfinite(v) & (v > 0)))
        if bad.size:
            i = out.index[bad[0]]
            raise RunsTableError(f"{source}: column {c!r}, row {i}: {df[c].loc[i]!r}; must be a number > 0")
    if out.empty:
        raise RunsTableError(f"{source}: no run with a finite loss")
    if out["N"].nunique() < 2:
        raise RunsTableError(f"{source}: column 'N' has {out['N'].nunique()} distinct size(s); the fit needs "
                             "runs at 2 or more model sizes")
    return out.reset_index(drop=True)


def kept_runs(df: pd.DataFrame, tolerance: float = DEFAULT_TOLERANCE) -> pd.DataFrame:
    """Runs within ``tolerance`` (relative) of the best loss of their (N, D) group."""
    best = df.groupby(["N", "D"])["loss"].transform("min")
    return df[df["loss"] <= best * (1.0 + tolerance)]


OPTIMA = ("kept", "surface")
DEFAULT_OPTIMUM = "kept"


def _unpack(theta: np.ndarray, G: int, free_lr_d: bool, free_bt_d: bool, b0: float, g0: float):
    """Parameters of the pooled surface -> (offsets, scales, q_z, q_xz, lr law (c, a, b), batch law (c, g))."""
    o, s = theta[:G], np.exp(theta[G:2 * G])
    qz = math.exp(theta[2 * G])
    qxz = 2.0 * math.sqrt(qz) * math.tanh(theta[2 * G + 1])     # |q_xz| < 2 sqrt(q_z): positive definite
    i = 2 * G + 2
    lr = (theta[i], theta[i + 1], theta[i + 2] if free_lr_d else b0)
    i += 3 if free_lr_d else 2
    bt = (theta[i], theta[i + 1] if free_bt_d else g0)
    return o, s, qz, qxz, lr, bt


def _surface_fit(g_idx, x, z, y, w, gN, gD, free_lr_d, free_bt_d, start=None):
    """Least squares of the pooled surface (see :func:`fit_hparams`, ``optimum="surface"``); theta or None.

    Per grid point: its group ``g_idx``, ``x`` = log lr, ``z`` = log batch_tokens, mean loss ``y``, run count
    ``w``; per group: ``gN``, ``gD`` (log N, log D)."""
    from scipy.optimize import least_squares

    b0, g0 = STEP_LAW_LR[2], STEP_LAW_BATCH[1]
    G = len(gN)
    sw = np.sqrt(w)

    def resid(theta):
        o, s, qz, qxz, (cl, a, b), (cb, g) = _unpack(theta, G, free_lr_d, free_bt_d, b0, g0)
        dx = x - (cl + a * gN[g_idx] + b * gD[g_idx])
        dz = z - (cb + g * gD[g_idx])
        return sw * (o[g_idx] + s[g_idx] * (dx * dx + qz * dz * dz + qxz * dx * dz) - y)

    starts = [start] if start is not None else []
    if start is None:  # from each group's best point, with a few curvatures
        best = np.array([np.argmin(np.where(g_idx == j, y, np.inf)) for j in range(G)])
        A = np.column_stack([np.ones(G), gN] + ([gD] if free_lr_d else []))
        tx = x[best] - (0 if free_lr_d else b0 * gD)
        lr0 = np.linalg.lstsq(A, tx, rcond=None)[0] if np.linalg.matrix_rank(A) == A.shape[1] else None
        B = np.column_stack([np.ones(G)] + ([gD] if free_bt_d else []))
        bt0 = np.linalg.lstsq(B, z[best] - (0 if free_bt_d else g0 * gD), rcond=None)[0]
        if lr0 is None:
            return None
        spread = np.array([np.ptp(y[g_idx == j]) + 1e-6 for j in range(G)])
        for scale in (0.02, 0.1, 0.5):
            starts.append(np.concatenate([y[best], np.log(spread * scale), [0.0, 0.0], lr0, bt0]))
    fits = [least_squares(resid, t0, method="trf", max_nfev=2000) for t0 in starts]
    fits = [f for f in fits if np.all(np.isfinite(f.x))]
    return min(fits, key=lambda f: f.cost).x if fits else None


@dataclass(frozen=True)
class PowerLaw:
    """``y = exp(c) * N**n_exp * D**d_exp``."""

    c: float
    n_exp: float
    d_exp: float

    def __call__(self, N, D):
        return np.exp(self.c + self.n_exp * np.log(N) + self.d_exp * np.log(D))


def _ols(y: np.ndarray, cols: list[np.ndarray]) -> np.ndarray | None:
    """Least squares of y on [1, *cols]; None if the design is rank-deficient."""
    X = np.column_stack([np.ones_like(y), *cols])
    if np.linalg.matrix_rank(X) < X.shape[1]:
        return None
    return np.linalg.lstsq(X, y, rcond=None)[0]


#: log D counts as collinear with log N when its residual after a line in log N has a standard
#: deviation below this (5 %): e.g. a sweep at a fixed tokens-per-parameter ratio whose budgets are
#: rounded to whole steps. Fitting both exponents there gives wild ones (-16 and +16 on the pip
#: sweep of bench/bench_hparams.py, predicting lr 5e-17 for a held-out size).
COLLINEAR_TOL = 0.05


def _collinear(lN: np.ndarray, lD: np.ndarray) -> bool:
    X = np.column_stack([np.ones_like(lN), lN])
    if np.linalg.matrix_rank(X) < 2:
        return True
    coef, *_ = np.linalg.lstsq(X, lD, rcond=None)
    return float(np.std(lD - X @ coef)) < COLLINEAR_TOL


def _fixed_exponents(lN: np.ndarray, lD: np.ndarray) -> tuple[str, ...]:
    """The exponents the points cannot identify, held at the Step Law's: D's in both laws with one token
    budget, lr's D exponent when log D is collinear with log N."""
    one_budget = len(np.unique(lD)) < 2
    return (("lr.d_exp",) if one_budget or _collinear(lN, lD) else ()) + (("batch.d_exp",) if one_budget else ())


def _fit_laws(lN, lD, llr, lbt, fixed: tuple[str, ...]) -> tuple[PowerLaw, PowerLaw] | None:
    b0, g0 = STEP_LAW_LR[2], STEP_LAW_BATCH[1]
    if "lr.d_exp" in fixed:
        c = _ols(llr - b0 * lD, [lN])
        lr = None if c is None else PowerLaw(c[0], c[1], b0)
    else:
        c = _ols(llr, [lN, lD])
        lr = None if c is None else PowerLaw(c[0], c[1], c[2])
    if "batch.d_exp" in fixed:
        bt = PowerLaw(float(np.mean(lbt - g0 * lD)), 0.0, g0)
    else:
        c = _ols(lbt, [lD])
        bt = None if c is None else PowerLaw(c[0], 0.0, c[1])
    return None if lr is None or bt is None else (lr, bt)


@dataclass(frozen=True)
class HparamFit:
    """Step-Law forms fitted to runs: ``lr = exp(c) N^a D^b``, ``batch_tokens = exp(c) D^g``."""

    lr: PowerLaw
    batch: PowerLaw
    n_runs: int
    n_kept: int
    n_groups: int
    sizes: int
    tolerance: float
    fixed: tuple[str, ...]
    notes: tuple[str, ...]
    n_range: tuple[float, float]
    d_range: tuple[float, float]
    boot_lr: np.ndarray = field(repr=False, compare=False)  # (B, 3): c, n_exp, d_exp
    boot_batch: np.ndarray = field(repr=False, compare=False)  # (B, 2): c, d_exp
    optimum: str = "kept"

    def predict(self, N: float, D: float, seq_len: int = STEP_LAW_SEQ_LEN) -> Hparams:
        """Fitted lr and batch_tokens at (N, D) with 90 % bootstrap intervals."""
        N, D = _positive("N", N), _positive("D", D)
        lN, lD = math.log(N), math.log(D)
        blr = np.exp(self.boot_lr @ np.array([1.0, lN, lD]))
        bbt = np.exp(self.boot_batch @ np.array([1.0, lD]))
        lr, bt = float(self.lr(N, D)), float(self.batch(N, D))
        lr_iv = tuple(np.percentile(blr, [5, 95])) if len(blr) else (lr, lr)
        bt_iv = tuple(np.percentile(bbt, [5, 95])) if len(bbt) else (bt, bt)
        return _make(N, D, lr, lr_iv, bt, bt_iv, seq_len, self.n_range, self.d_range,
                     "range of the fitted runs", f"fit on {self.n_kept} of {self.n_runs} runs")

    def exponent_intervals(self) -> dict[str, tuple[float, float]]:
        """90 % bootstrap intervals of the fitted exponents (fixed ones, and all with no replicates, are a point)."""
        def pct(v, point):
            return (float(np.percentile(v, 5)), float(np.percentile(v, 95))) if len(v) else (point, point)

        return {"lr.n_exp": pct(self.boot_lr[:, 1], self.lr.n_exp), "lr.d_exp": pct(self.boot_lr[:, 2], self.lr.d_exp),
                "batch.d_exp": pct(self.boot_batch[:, 1], self.batch.d_exp)}

    def to_dict(self) -> dict:
        return {"lr": {"coef": math.exp(self.lr.c), "n_exp": self.lr.n_exp, "d_exp": self.lr.d_exp},
                "batch_tokens": {"coef": math.exp(self.batch.c), "d_exp": self.batch.d_exp},
                "intervals_90": {k: list(v) for k, v in self.exponent_intervals().items()},
                "n_runs": self.n_runs, "n_kept": self.n_kept, "n_groups": self.n_groups, "sizes": self.sizes,
                "tolerance": self.tolerance if self.optimum == "kept" else None, "optimum": self.optimum,
                "fixed": list(self.fixed), "notes": list(self.notes),
                "bootstrap": len(self.boot_lr),
                "n_range": list(self.n_range), "d_range": list(self.d_range)}


def fit_hparams(table: pd.DataFrame, tolerance: float = DEFAULT_TOLERANCE, bootstrap: int = 200, seed: int = 0,
                source: str = "<runs>", optimum: str = DEFAULT_OPTIMUM) -> HparamFit:
    """Fit the Step-Law forms to a runs table (columns ``N, D, lr, batch_tokens, loss``).

    Args: table: one row per run (runs of one configuration, e.g. seeds of a grid point, are averaged
    first: the kept set is then not the luckiest seed's); tolerance: relative loss gap to the (N, D)
    group's best that still counts as optimal; bootstrap: replicates (resampling kept configurations
    with replacement, or with ``surface`` each group's runs; replicates that lose a size are dropped);
    seed: bootstrap RNG seed; optimum: ``kept`` (the release's: every run within ``tolerance`` of its
    group's best) or ``surface`` (one quadratic loss surface in log lr and log batch fitted to every run at
    once, each group with its own offset and curvature scale, its optimum on the power laws: see the module
    docstring; ``tolerance`` is then unused and reported as None).
    """
    if optimum not in OPTIMA:
        raise UserError(f"fit hparams --optimum: {optimum!r}; allowed: {', '.join(OPTIMA)}")
    if not (isinstance(tolerance, (int, float)) and 0 <= tolerance < 1):
        raise UserError(f"fit hparams --tolerance: {tolerance!r}; allowed: a number in [0, 1)")
    if not isinstance(bootstrap, int) or bootstrap < 0:
        raise UserError(f"fit hparams --bootstrap: {bootstrap!r}; allowed: an integer >= 0")
    runs = validate_table(table, source)
    df = runs.groupby(["N", "D", "lr", "batch_tokens"], as_index=False)["loss"].mean()
    swept = df.groupby(["N", "D"]).nunique()
    if (swept["lr"] < 2).all():
        raise UserError(f"{source}: no (N, D) group has runs at 2 or more learning rates; the law is fitted to each "
                        "group's best runs, so it needs an lr sweep (several lr per size and budget)")
    notes = () if (swept["batch_tokens"] >= 2).any() else (
        "batch_tokens was not swept within any (N, D) group: its law only restates the batch sizes used",)
    if optimum == "surface":
        return _fit_surface(runs, bootstrap, seed, source, notes)
    k = kept_runs(df, tolerance)
    lN, lD = np.log(k["N"].to_numpy(float)), np.log(k["D"].to_numpy(float))
    llr, lbt = np.log(k["lr"].to_numpy(float)), np.log(k["batch_tokens"].to_numpy(float))
    fixed = _fixed_exponents(lN, lD)
    laws = _fit_laws(lN, lD, llr, lbt, fixed)
    if laws is None or k["N"].nunique() < 2:
        raise UserError(f"{source}: the runs kept within {tolerance:.2%} of their group's best span "
                        f"{k['N'].nunique()} size(s); the fit needs 2 or more (raise --tolerance or add sizes)")
    rng = np.random.default_rng(seed)
    boots_lr, boots_bt = [], []
    for _ in range(bootstrap):
        i = rng.integers(0, len(k), len(k))
        got = _fit_laws(lN[i], lD[i], llr[i], lbt[i], fixed)
        if got is not None:
            boots_lr.append((got[0].c, got[0].n_exp, got[0].d_exp))
            boots_bt.append((got[1].c, got[1].d_exp))
    kept_n = len(runs.merge(k[["N", "D", "lr", "batch_tokens"]], on=["N", "D", "lr", "batch_tokens"]))  # runs, seeds too
    return HparamFit(laws[0], laws[1], len(runs), kept_n, int(df.groupby(["N", "D"]).ngroups), int(k["N"].nunique()),
                     float(tolerance), fixed, notes, (float(k["N"].min()), float(k["N"].max())),
                     (float(k["D"].min()), float(k["D"].max())), np.array(boots_lr).reshape(-1, 3),
                     np.array(boots_bt).reshape(-1, 2))


def _fit_surface(runs: pd.DataFrame, bootstrap: int, seed: int, source: str, notes: tuple[str, ...]) -> HparamFit:
    """fit_hparams with ``optimum="surface"``: one loss landscape over every run, whose optimum follows the laws."""
    df = runs.groupby(["N", "D", "lr", "batch_tokens"], as_index=False)["loss"].agg(["mean", "count"])
    keys = df[["N", "D"]].drop_duplicates().sort_values(["N", "D"]).reset_index(drop=True)
    G = len(keys)
    lNg, lDg = np.log(keys["N"].to_numpy(float)), np.log(keys["D"].to_numpy(float))
    fixed = _fixed_exponents(lNg, lDg)
    free_lr_d, free_bt_d = "lr.d_exp" not in fixed, "batch.d_exp" not in fixed
    swept = df.groupby(["N", "D"])[["lr", "batch_tokens"]].nunique()
    if swept["lr"].max() < 3 or swept["batch_tokens"].max() < 3:
        raise UserError(f"{source}: optimum surface needs 3 or more learning rates and 3 or more batch sizes within "
                        f"some (N, D) group (here at most {swept['lr'].max()} and {swept['batch_tokens'].max()}) to "
                        "read the surface's curvature; sweep more, or use optimum kept")
    n_par = 2 * G + 2 + (3 if free_lr_d else 2) + (2 if free_bt_d else 1)
    if keys["N"].nunique() < 2 or len(df) <= n_par:
        raise UserError(f"{source}: {len(df)} grid points at {keys['N'].nunique()} size(s) cannot identify the "
                        f"surface's {n_par} parameters; it needs 2 or more sizes and more grid points")

    def arrays(d):  # per grid point: group index, log lr, log batch, mean loss, runs
        return (d.merge(keys.reset_index(), on=["N", "D"])["index"].to_numpy(), np.log(d["lr"].to_numpy(float)),
                np.log(d["batch_tokens"].to_numpy(float)), d["mean"].to_numpy(float), d["count"].to_numpy(float))

    theta = _surface_fit(*arrays(df), lNg, lDg, free_lr_d, free_bt_d)
    if theta is None:
        raise UserError(f"{source}: the loss surface could not be fitted (a size's runs identify no optimum)")

    def laws(t):
        _, _, _, _, (cl, a, b), (cb, g) = _unpack(t, G, free_lr_d, free_bt_d, STEP_LAW_LR[2], STEP_LAW_BATCH[1])
        return PowerLaw(float(cl), float(a), float(b)), PowerLaw(float(cb), 0.0, float(g))

    lr_law, bt_law = laws(theta)
    rng = np.random.default_rng(seed)
    groups = [g for _, g in runs.groupby(["N", "D"])]
    boots_lr, boots_bt = [], []
    for _ in range(bootstrap):  # resample each group's runs (seeds and grid points), refit from the fit
        r = pd.concat([g.iloc[rng.integers(0, len(g), len(g))] for g in groups])
        d = r.groupby(["N", "D", "lr", "batch_tokens"], as_index=False)["loss"].agg(["mean", "count"])
        if len(d) <= n_par:
            continue
        t = _surface_fit(*arrays(d), lNg, lDg, free_lr_d, free_bt_d, start=theta)
        if t is not None:
            lw, bw = laws(t)
            boots_lr.append((lw.c, lw.n_exp, lw.d_exp))
            boots_bt.append((bw.c, bw.d_exp))
    return HparamFit(lr_law, bt_law, len(runs), len(runs), G, int(keys["N"].nunique()), 0.0, fixed,
                     notes + ("optimum: one quadratic loss surface in log lr and log batch over every run, each (N, D) "
                              "group with its own offset and curvature scale, its optimum on the power laws",),
                     (float(keys["N"].min()), float(keys["N"].max())), (float(keys["D"].min()), float(keys["D"].max())),
                     np.array(boots_lr).reshape(-1, 3), np.array(boots_bt).reshape(-1, 2), "surface")


def table_from_trials(trials: Iterable[Trial]) -> pd.DataFrame:
    """A study's COMPLETE trials as an hparams runs table: N = metric ``non_embedding_params``
    (else the spec's; total params for MoE, see :func:`published_hparams`), D = metric
    ``tokens`` (else the spec's budget), lr and ``batch_size * seq_len`` from the proxy spec,
    loss = the objective."""
    rows = []
    for t in trials:
        if not t.ok or t.spec is None:
            continue
        rows.append({"N": float(t.metrics.get("non_embedding_params") or t.spec.non_embedding_params()),
                     "D": t.tokens_seen, "lr": float(t.spec.lr),
                     "batch_tokens": float(t.spec.batch_size * t.spec.seq_len), "loss": float(t.value)})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def read_table(path: str) -> pd.DataFrame:
    """A CSV or Parquet runs table; RunsTableError if unreadable."""
    low = str(path).lower()
    try:
        if low.endswith((".parquet", ".pq")):
            return pd.read_parquet(path)
        if low.endswith(".csv"):
            return pd.read_csv(path)
    except FileNotFoundError:
        raise RunsTableError(f"{path}: no such file") from None
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise RunsTableError(f"{path}: cannot read runs table ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    raise RunsTableError(f"{path}: unknown runs-table extension; allowed: .csv, .parquet, .pq")


__all__ = ["COLUMNS", "DEFAULT_TOLERANCE", "STEP_LAW_BATCH", "STEP_LAW_D_RANGE", "STEP_LAW_LR", "STEP_LAW_N_RANGE",
           "STEP_LAW_SEQ_LEN", "HparamFit", "Hparams", "PowerLaw", "fit_hparams", "kept_runs", "moe_hparams",
           "published_hparams",
           "read_table", "table_from_trials", "validate_table"]
