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

Everything here is numpy/scipy; reading runs and logging fits to MLflow is in
:func:`run_fit`, through the study API and :mod:`mixopt.study.mlflow_storage`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares

from mixopt.core.errors import UserError
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


@dataclass
class ELFit:
    """``EL(A, G, C) = Ahat ** (alpha + gamma * log(G)**2 + beta * log(G))``, ``alpha = a + d * log(C)``,
    with ``Ahat = 1 / A`` (A = activation ratio; EL grows as fewer experts are active)."""

    a: float
    d: float
    beta: float
    gamma: float

    def predict(self, A, G, C):
        A, G, C = (np.asarray(v, float) for v in (A, G, C))
        lg = np.log(G)
        return (1.0 / A) ** (self.a + self.d * np.log(C / 1e12) + self.gamma * lg ** 2 + self.beta * lg)


def efficiency_leverage(dense: DenseCurve, C_moe: np.ndarray, L_moe: np.ndarray) -> np.ndarray:
    """EL per MoE run = dense compute for the MoE's loss / the MoE's compute."""
    return dense.compute_for(L_moe) / np.asarray(C_moe, float)


def fit_el(A: np.ndarray, G: np.ndarray, C: np.ndarray, EL: np.ndarray) -> ELFit:
    """Least squares on log EL = log(1/A) * (a + d log C + gamma (log G)^2 + beta log G) — linear in
    (a, d, gamma, beta), so it is solved exactly (lstsq); fewer than 4 finite runs is an error."""
    A, G, C, EL = (np.asarray(v, float) for v in (A, G, C, EL))
    ok = np.isfinite(EL) & (EL > 0) & (A < 1)
    if ok.sum() < 4:
        raise UserError(f"fit moe_el: {int(ok.sum())} MoE runs with a finite efficiency leverage; the law has 4 "
                        "parameters (add MoE rungs of other activation ratios, granularities or compute)")
    la, lg = np.log(1.0 / A[ok]), np.log(G[ok])
    X = np.column_stack([la, la * np.log(C[ok] / 1e12), la * lg ** 2, la * lg])
    coef, *_ = np.linalg.lstsq(X, np.log(EL[ok]), rcond=None)
    return ELFit(float(coef[0]), float(coef[1]), float(coef[3]), float(coef[2]))
