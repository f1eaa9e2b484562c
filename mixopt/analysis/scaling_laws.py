"""Scaling-law fits on a study's finished runs (``mixopt fit``).

1. **Loss vs scale** per mixture: ``L(N, D) = E + A / N**alpha + B / D**beta`` (Chinchilla form;
   N = non-embedding (active) params, D = training tokens), exponents shared across the
   mixtures of a sweep, E/A/B per mixture; robust (soft-L1) least squares from several starts.
   Goodness of fit: refit without each mixture's largest-compute point and predict it.
   Identifying beta (alpha) needs at least 3 token budgets (model sizes) on the ladder; with 2,
   E and B/D^beta trade off and only predictions at the ladder's budgets are meaningful.
   Intervals: residual bootstrap.
2. **Mixing law across scale**: at each rung of the ladder, the exponential mixing law
   ``L(p) = c + k * exp(t . p)`` of the objective (Data Mixing Laws), then each parameter
   extrapolated linearly in log-compute to the target scale, and the law minimized there.
3. **MoE efficiency leverage** (arXiv 2507.17702): EL = dense compute / MoE compute at equal loss,
   measured against a dense loss-vs-compute curve and fitted (or taken from the paper's Table 2) as
   ``EL(A, G, C)``; :func:`spec_leverage` gives an MoE spec's dense-equivalent compute.

Everything here is numpy/scipy; reading runs and logging fits to MLflow is in
:func:`run_fit`, through the study API and :mod:`mixopt.study.mlflow_storage`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares

from mixopt.core.errors import UserError
from mixopt.core.spec import ProxySpec
from mixopt.search.mixing_law import MixingLaw, fit_mixing_law


@dataclass
class ScaleFit:
    """Shared exponents and per-group (E, A, B) of ``L = E + A/N^alpha + B/D^beta``."""

    alpha: float
    beta: float
    groups: list[str]
    E: np.ndarray  # (G,)
    A: np.ndarray  # (G,)
    B: np.ndarray  # (G,)
    cost: float = 0.0
    info: dict = field(default_factory=dict)

    def predict(self, g: np.ndarray, N: np.ndarray, D: np.ndarray) -> np.ndarray:
        """Loss of group index g (n,) at N (n,) params and D (n,) tokens."""
        g = np.asarray(g, dtype=int)
        return self.E[g] + self.A[g] / np.asarray(N, float) ** self.alpha + self.B[g] / np.asarray(D, float) ** self.beta


_N0, _D0 = 1e6, 1e8  # reference scales: parameters live near 1 in these units
EXPONENT_BOUNDS = (1e-3, 3.0)  # alpha and beta are fitted inside these


def on_bound(exponent: float, rel: float = 0.01) -> bool:
    """Whether a fitted exponent sits on (within ``rel`` of) a bound: the data did not pin it down."""
    lo, hi = EXPONENT_BOUNDS
    return exponent <= lo * (1 + rel) or exponent >= hi * (1 - rel)


def fit_loss_scale(g: np.ndarray, N: np.ndarray, D: np.ndarray, L: np.ndarray, n_groups: int,
                   groups: list[str] | None = None, restarts: int = 8, seed: int = 0) -> ScaleFit:
    """Fit ``L = E_g + A_g/N^alpha + B_g/D^beta`` with exponents shared across groups.

    Args: g (n,) group index of each run; N (n,) params; D (n,) tokens; L (n,) losses.
    Parameterized as E = exp(e), A = exp(a) * N0^alpha, B = exp(b) * D0^beta so all are
    positive and O(1); soft-L1 loss; the best of ``restarts`` starts is kept.

    Example:
        >>> N, D = (v.ravel() for v in np.meshgrid([1e5, 3e5, 1e6], [1e7, 3e7, 1e8]))
        >>> g, N, D = np.repeat([0, 1], 9), np.tile(N, 2), np.tile(D, 2)
        >>> L = np.where(g == 0, 2.0, 2.3) + 40 / N**0.3 + 300 / D**0.3
        >>> f = fit_loss_scale(g, N, D, L, 2)
        >>> round(f.alpha, 2), round(f.beta, 2)
        (0.3, 0.3)
    """
    g, N, D, L = (np.asarray(v) for v in (g, N, D, L))
    n = len(L)
    if n < 3 * n_groups + 2:
        raise UserError(f"fit: {n} runs for {n_groups} mixture(s) cannot determine {3 * n_groups + 2} "
                        "parameters; train each mixture at more ladder rungs")
    nn, dd = N / _N0, D / _D0

    def unpack(th):
        return th[0], th[1], th[2:2 + n_groups], th[2 + n_groups:2 + 2 * n_groups], th[2 + 2 * n_groups:]

    def resid(th):
        al, be, e, a, b = unpack(th)
        return np.exp(e[g]) + np.exp(a[g]) * nn ** -al + np.exp(b[g]) * dd ** -be - L

    rng = np.random.default_rng(seed)
    lo = np.full(2 + 3 * n_groups, -np.inf)
    hi = np.full(2 + 3 * n_groups, np.inf)
    lo[:2], hi[:2] = EXPONENT_BOUNDS
    best = None
    for r in range(max(restarts, 1)):
        al, be = (0.3, 0.3) if r == 0 else rng.uniform(0.05, 1.5, 2)
        e0 = np.log(np.clip([L[g == i].min() * 0.7 for i in range(n_groups)], 1e-3, None))
        th0 = np.concatenate([[al, be], e0 + rng.normal(0, 0.1, n_groups) * (r > 0),
                              np.log(np.full(n_groups, 0.5) * L.mean() * 0.2) + rng.normal(0, 0.5, n_groups) * (r > 0),
                              np.log(np.full(n_groups, 0.5) * L.mean() * 0.2) + rng.normal(0, 0.5, n_groups) * (r > 0)])
        try:
            sol = least_squares(resid, th0, bounds=(lo, hi), loss="soft_l1", f_scale=0.01, max_nfev=4000)
        except (ValueError, FloatingPointError):
            continue
        if np.all(np.isfinite(sol.x)) and (best is None or sol.cost < best.cost):
            best = sol
    if best is None:
        raise UserError("fit: the loss-vs-scale fit did not converge from any start")
    al, be, e, a, b = unpack(best.x)
    return ScaleFit(float(al), float(be), list(groups or range(n_groups)), np.exp(e),
                    np.exp(a) * _N0 ** al, np.exp(b) * _D0 ** be, float(best.cost))


def holdout_error(g, N, D, L, n_groups: int, seed: int = 0) -> np.ndarray:
    """Relative error predicting each group's largest-compute rung from a fit without it, (G,).

    Every run of a group at its largest compute (all seeds of that rung) is held out; the error
    is that of the prediction against their mean."""
    g, N, D, L = (np.asarray(v) for v in (g, N, D, L))
    out = np.full(n_groups, np.nan)
    C = N * D
    held = np.zeros(len(L), bool)
    for i in range(n_groups):
        m = g == i
        held |= m & (C == C[m].max())
    f = fit_loss_scale(g[~held], N[~held], D[~held], L[~held], n_groups, seed=seed)
    for i in range(n_groups):
        h = held & (g == i)
        pred = f.predict([i], N[h][:1], D[h][:1])[0]
        out[i] = abs(pred - L[h].mean()) / L[h].mean()
    return out


def bootstrap_fits(fit: ScaleFit, g, N, D, L, reps: int = 100, seed: int = 0) -> list[ScaleFit]:
    """Residual bootstrap: refits on ``fitted + resampled residuals`` (failed refits dropped)."""
    g, N, D, L = (np.asarray(v) for v in (g, N, D, L))
    rng = np.random.default_rng(seed)
    base = fit.predict(g, N, D)
    res = L - base
    out = []
    for r in range(reps):
        Lb = base + rng.choice(res, size=len(res), replace=True)
        try:
            out.append(fit_loss_scale(g, N, D, Lb, len(fit.groups), restarts=2, seed=seed + r + 1))
        except UserError:
            continue
    return out


def bootstrap_predictions(fit: ScaleFit, g, N, D, L, targets: tuple[float, float], reps: int = 100,
                          seed: int = 0) -> np.ndarray:
    """Residual bootstrap of the target-scale prediction per group -> (reps, G)."""
    G = len(fit.groups)
    out = np.full((reps, G), np.nan)
    for r, fb in enumerate(bootstrap_fits(fit, g, N, D, L, reps, seed)):
        out[r] = fb.predict(np.arange(G), np.full(G, targets[0]), np.full(G, targets[1]))
    return out


@dataclass
class LawAcrossScale:
    """Mixing-law parameters per rung and their linear trend in log-compute."""

    computes: np.ndarray  # (R,) 6 N D per rung
    c: np.ndarray  # (R,)
    logk: np.ndarray  # (R,)
    t: np.ndarray  # (R, k)

    def at(self, compute: float):
        """The law extrapolated to ``compute`` (linear in log-compute; constant with one rung)."""

        x = np.log(self.computes)
        z = math.log(compute)

        def lin(v):
            if len(x) < 2:
                return v[0]
            slope, icpt = np.polyfit(x, v, 1)
            return icpt + slope * z

        return MixingLaw(float(lin(self.c)), float(math.exp(lin(self.logk))),
                         np.array([lin(self.t[:, j]) for j in range(self.t.shape[1])]))


def fit_law_across_scale(rungs: list[tuple[float, np.ndarray, np.ndarray]], seed: int = 0) -> LawAcrossScale:
    """``rungs``: (compute, X (n, k), y (n,)) per ladder rung -> per-rung mixing laws + trend."""

    laws = []
    for compute, X, y in rungs:
        if len(y) < X.shape[1] + 2:
            raise UserError(f"fit: a rung (compute {compute:.3g}) has {len(y)} finished mixtures; the mixing law "
                            f"over {X.shape[1]} domains needs at least {X.shape[1] + 2} (raise sweep.mixtures)")
        laws.append(fit_mixing_law(X, y, np.random.default_rng(seed)))
    return LawAcrossScale(np.array([r[0] for r in rungs]), np.array([l.c for l in laws]),
                          np.log(np.array([l.k for l in laws])), np.vstack([l.t for l in laws]))


# --- MoE efficiency leverage ----------------------------------------------------------------
@dataclass
class DenseCurve:
    """Dense loss vs training compute: ``L(C) = E + B * C**-gamma`` (C in FLOPs)."""

    E: float
    B: float
    gamma: float

    def loss(self, C):
        return self.E + self.B * np.asarray(C, float) ** -self.gamma

    def compute_for(self, L):
        """Dense compute reaching loss L (inf where L <= E: dense never gets there)."""
        L = np.asarray(L, float)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(L > self.E, (self.B / (L - self.E)) ** (1.0 / self.gamma), np.inf)


def fit_dense_curve(C: np.ndarray, L: np.ndarray) -> DenseCurve:
    C, L = np.asarray(C, float), np.asarray(L, float)
    if len(L) < 3:
        raise UserError(f"fit moe_el: {len(L)} dense runs; the dense loss-vs-compute curve needs at least 3")
    c0 = float(np.exp(np.mean(np.log(C))))

    def resid(th):
        return th[0] + np.exp(th[1]) * (C / c0) ** -th[2] - L

    best = None
    for e0 in (0.5, 0.8, 0.95):
        th0 = [L.min() * e0, np.log(max(L.mean() - L.min() * e0, 1e-3)), 0.3]
        sol = least_squares(resid, th0, bounds=([0, -np.inf, 1e-3], [L.min(), np.inf, 3.0]), loss="soft_l1",
                            f_scale=0.01)
        if best is None or sol.cost < best.cost:
            best = sol
    E, logb, gamma = best.x
    return DenseCurve(float(E), float(np.exp(logb) * c0 ** gamma), float(gamma))


# Efficiency-leverage law of Tian et al. 2025 (arXiv 2507.17702), Table 2.
EL_A_START, EL_A_MAX = 1.63e-2, 5.28e16
#: The ranges the paper's EL law was fitted on: activation ratio 0.8 %-100 % (its §4.1.1), granularity
#: 2-16 (§4.1.2), compute 1e18-3e20 FLOPs (§4.1.1, C = M D); it validated one point at 1e22 (§5).
EL_FIT_RANGE = {"A": (0.008, 1.0), "G": (2.0, 16.0), "C": (1e18, 3e20)}


def saturated_activation(A, a_start: float = EL_A_START, a_max: float = EL_A_MAX):
    """``Â`` with ``1/Â = 1/(A + (1/A_start - 1/A_max)^-1) + 1/A_max`` (arXiv 2507.17702 Eq. 10,
    the saturation of Clark et al. 2022): about ``A + A_start`` for the paper's constants."""
    A = np.asarray(A, float)
    return 1.0 / (1.0 / (A + 1.0 / (1.0 / a_start - 1.0 / a_max)) + 1.0 / a_max)


@dataclass(frozen=True)
class ELFit:
    """Efficiency leverage EL = C_dense / C_moe at equal loss (Tian et al. 2025, arXiv 2507.17702, Eq. 13)::

        EL(A, G, C) = Â ** (a + d * log10(C) + gamma * log2(G)**2 + beta * log2(G))

    A = (E_a + E_s) / (E + E_s) the activation ratio, Â its saturation (:func:`saturated_activation`),
    G = 2 d_model / d_expert the paper's granularity (half of ``ProxySpec.granularity``), C = M D the
    training compute with M the non-embedding **forward** FLOPs per token (its Eq. 2; about a third
    of 6 N D). The paper writes ``log`` without a base; its Table 2 reproduces its own two results only
    with log10 of C in FLOPs and log2 of G: EL = 7.2 at C = 1e22, A = 3.1 %, G = 12 ("over 7x", §4.2.2)
    and the best granularity 2**(-beta / (2 gamma)) = 11.3 (its optimum "around 12", §4.1.2); natural
    logs give EL ~ 5e3 and G* ~ 33. ``fixed`` names the parameters a fit held at a prior's values.
    """

    a: float
    d: float
    beta: float
    gamma: float
    a_start: float = EL_A_START
    a_max: float = EL_A_MAX
    fixed: tuple[str, ...] = ()

    def exponent(self, G, C):
        lg = np.log2(np.asarray(G, float))
        return self.a + self.d * np.log10(np.asarray(C, float)) + self.gamma * lg ** 2 + self.beta * lg

    def predict(self, A, G, C):
        """EL at activation ratio A, paper granularity G and compute C = M D (arrays broadcast)."""
        return saturated_activation(A, self.a_start, self.a_max) ** self.exponent(G, C)

    def optimal_granularity(self) -> float:
        """The G that maximizes EL (where the exponent is smallest; inf if gamma <= 0)."""
        return float(2.0 ** (-self.beta / (2 * self.gamma))) if self.gamma > 0 else math.inf


#: The paper's fitted law (Table 2).
PUBLISHED_EL = ELFit(a=1.23, d=-7.61e-2, beta=-1.17e-1, gamma=1.67e-2)


def el_range_message(A: float, G: float, C: float) -> str:
    """'' if (A, G, C) lies inside :data:`EL_FIT_RANGE`, else what lies outside it."""
    out = [f"{k}={v:.3g} is outside {EL_FIT_RANGE[k][0]:.3g}-{EL_FIT_RANGE[k][1]:.3g}"
           for k, v in (("A", A), ("G", G), ("C", C)) if not EL_FIT_RANGE[k][0] <= v <= EL_FIT_RANGE[k][1]]
    return f"{' and '.join(out)} (range of arXiv 2507.17702's EL fit): extrapolated" if out else ""


def efficiency_leverage(dense: DenseCurve, C_moe: np.ndarray, L_moe: np.ndarray) -> np.ndarray:
    """EL per MoE run = dense compute for the MoE's loss / the MoE's compute."""
    return dense.compute_for(L_moe) / np.asarray(C_moe, float)


def fit_el(A: np.ndarray, G: np.ndarray, C: np.ndarray, EL: np.ndarray, prior: ELFit = PUBLISHED_EL) -> ELFit:
    """Least squares on ``log EL = log Â * (a + d log10 C + gamma log2(G)^2 + beta log2 G)``.

    For the saturation of ``prior`` (A_start, A_max) the law is linear in (a, d, gamma, beta), so it is
    solved exactly (lstsq). What the runs cannot identify stays at ``prior``'s value and is named in
    ``fixed``: d with one compute level, beta with one granularity, gamma with fewer than three (and,
    if the design is still rank-deficient, gamma, beta, d in that order). Needs >= 2 finite runs.
    Args: A, G, C, EL: (n,) activation ratio, paper granularity, compute M D, measured EL.
    """
    A, G, C, EL = (np.asarray(v, float) for v in (A, G, C, EL))
    ok = np.isfinite(EL) & (EL > 0) & (A < 1) & (A > 0) & (G > 0) & (C > 0)
    if ok.sum() < 2:
        raise UserError(f"fit moe_el: {int(ok.sum())} MoE run(s) with a finite efficiency leverage; the law needs "
                        "at least 2 (add MoE rungs of other activation ratios, granularities or compute)")
    la = np.log(saturated_activation(A[ok], prior.a_start, prior.a_max))
    lc, lg = np.log10(C[ok]), np.log2(G[ok])
    cols = {"a": la, "d": la * lc, "gamma": la * lg ** 2, "beta": la * lg}
    free = ["a"] + ["d"] * (len(np.unique(C[ok])) >= 2) + ["beta"] * (len(np.unique(G[ok])) >= 2) \
        + ["gamma"] * (len(np.unique(G[ok])) >= 3)
    while len(free) > 1 and np.linalg.matrix_rank(np.column_stack([cols[p] for p in free])) < len(free):
        free.pop()
    fixed = tuple(p for p in ("d", "beta", "gamma") if p not in free)
    y = np.log(EL[ok]) - sum((getattr(prior, p) * cols[p] for p in fixed), np.zeros_like(la))
    coef, *_ = np.linalg.lstsq(np.column_stack([cols[p] for p in free]), y, rcond=None)
    vals = {p: getattr(prior, p) for p in ("a", "d", "beta", "gamma")} | dict(zip(free, map(float, coef)))
    return ELFit(vals["a"], vals["d"], vals["beta"], vals["gamma"], prior.a_start, prior.a_max, fixed)


# --- an MoE spec's dense-equivalent compute ---------------------------------------------------------
def forward_flops_per_token(spec: ProxySpec) -> float:
    """M of arXiv 2507.17702 (Eq. 2): non-embedding forward FLOPs per token, ``2 N_active + 4 n_layer
    d_model T`` (matmuls of the active non-embedding weights, plus attention scores and values)."""
    return 2.0 * spec.active_non_embedding_params() + 4.0 * spec.n_layer * spec.d_model * spec.seq_len


@dataclass(frozen=True)
class MoeLeverage:
    """An MoE target's efficiency leverage and what dense compute it is worth.

    ``compute`` = M D (FLOPs, the paper's C); ``dense_compute`` = EL * compute: the compute a dense
    model needs for the same loss; ``dense_active_params`` = EL * N_active: the dense size worth as
    much at the same D (the paper's "EL ~ M_dense / M_moe at fixed D", §3)."""

    activation_ratio: float
    granularity: float  # the paper's G = 2 d_model / d_expert
    compute: float
    el: float
    dense_compute: float
    dense_active_params: float
    in_range: bool
    message: str
    source: str = "efficiency leverage law (arXiv 2507.17702, Eq. 13, Table 2)"

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def moe_leverage(active_params: float, activation_ratio: float, granularity: float, tokens: float,
                 flops_per_token: float | None = None, law: ELFit = PUBLISHED_EL) -> MoeLeverage:
    """EL and dense-equivalent compute of an MoE with ``active_params`` non-embedding params per token,
    activation ratio A, paper granularity G, trained on ``tokens``; ``flops_per_token`` is M (default
    ``2 * active_params``, attention's sequence term left out)."""
    for name, v in (("active_params", active_params), ("activation_ratio", activation_ratio),
                    ("granularity", granularity), ("tokens", tokens)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise UserError(f"moe {name}: {v!r} must be a number > 0")
    if activation_ratio > 1:
        raise UserError(f"moe activation_ratio: {activation_ratio!r} must be in (0, 1]")
    M = float(flops_per_token) if flops_per_token else 2.0 * active_params
    C = M * tokens
    el = float(law.predict(activation_ratio, granularity, C))
    msg = el_range_message(activation_ratio, granularity, C)
    return MoeLeverage(float(activation_ratio), float(granularity), C, el, el * C, el * active_params, not msg, msg)


def spec_leverage(spec: ProxySpec, tokens: float | None = None, law: ELFit = PUBLISHED_EL) -> MoeLeverage:
    """:func:`moe_leverage` of a ProxySpec (``tokens`` defaults to its budget). G is the paper's, half of
    ``spec.granularity``; a dense spec has EL 1 by definition."""
    tokens = float(tokens if tokens is not None else spec.tokens)
    if spec.arch != "moe":
        C = forward_flops_per_token(spec) * tokens
        return MoeLeverage(1.0, 0.0, C, 1.0, C, float(spec.non_embedding_params()), True, "dense: EL = 1")
    return moe_leverage(float(spec.active_non_embedding_params()), spec.activation_ratio, spec.granularity / 2.0,
                        tokens, forward_flops_per_token(spec), law)
