"""Mixing-law searcher (Ye et al. 2024, "Data Mixing Laws"; Olmix): fit, then optimize.

The law for one loss is ``L(p) = c + k * exp(t . p)`` with ``p`` the mixture (k domains), ``c``
the irreducible loss, ``k > 0`` and ``t`` a vector over domains (so the law is convex in p).
The papers fit one law per validation domain ``i`` and optimize a weighted sum of the laws;
so does this searcher whenever the trials report per-domain losses (``Observation.losses``)
for the objective's domains (``SearchContext.objective_weights``): one law per domain, their
weighted sum minimized. Without per-domain losses (a replayed runs table's single column),
**one law is fitted to the objective itself**. On the simplex ``t`` is identified only
up to a constant shift (``t + a`` and ``k * exp(-a)`` give the same function), so the fit is
reported in the gauge ``sum(t) = 0``.

Fit: :func:`scipy.optimize.least_squares` with a robust ``soft_l1`` loss over
``(c, log k, t)``, started from the best profile fits (for a grid of ``c`` below ``min(y)``,
``log(y - c)`` is linear in p: an ordinary least-squares start) plus seeded perturbations;
the fit with the lowest robust cost is kept. A small ridge on ``t`` keeps fits with few
points (n close to, or below, k + 2: the default ``min_fit`` is 4) from running off.
Speed: below full rank ``t`` is fitted in the trials' row space, and a restart stops when its
cost stalls (see :func:`fit_mixing_law`; ``bench/bench_replay.py --standin`` times it).

Propose: minimize ``law(p) + kl_weight * KL(p || prior)`` (prior = ``space.prior_array()``)
under the floors, caps and sum-to-one with SLSQP from several Dirichlet starts; a batch is the
minimum followed by the best-scored Dirichlet candidates at L1 distance >= ``min_distance``
from every earlier trial (pending included) and each other (RegMix's rule). Without the KL
term a single convex law is minimized on a vertex of the capped simplex; the KL pull is what
keeps the recommendation near the data.

Refits (``refit="schedule"``, default): a full multi-start fit happens only at the row counts
of :func:`mixopt.search.refit.refit_points`, warm-started from an earlier point's law
(:func:`mixopt.search.refit.warm_start_from`) and cached per process; in between, the law is the
last point's law refined by one local least-squares run on all rows. Deterministic in the
trials, seed and options (``"always"``: a full fit every call).

Explore/exploit (``acquisition``): ``"mean"`` ranks by the fitted law; ``"thompson"`` by a law
whose parameters are drawn from the fit's Laplace approximation (one draw per proposal / pool
pick; ``recommend`` always uses the fitted law). A recommendation the law predicts worse than the
best measured trial gives way to that trial
(:func:`mixopt.search.trust.guard`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares, minimize

from mixopt.core.errors import ConfigError
from mixopt.core.mixture import Mixture, MixtureSpace
from mixopt.search.base import Proposal, Recommendation, SearchContext, best_completed
from mixopt.search.dirichlet import REGMIX_STRENGTHS, sample
from mixopt.search.pool import fresh_rows, project_rows, random_rows, spread
from mixopt.search.refit import FitCache, digest, last_refit_point, warm_start_from
from mixopt.search.trust import guard

ACQUISITIONS = ("mean", "thompson")
REFITS = ("schedule", "always")
CACHE = FitCache(512)

_EPS = 1e-12


@dataclass(frozen=True)
class MixingLaw:
    """A fitted law ``y = c + k * exp(t . p)``; ``t`` in the gauge sum(t) = 0, shape (k,).

    ``cov`` (optional, (k + 2, k + 2)): a Laplace approximation of the covariance of
    ``(c, log k, t)``, in objective units, from the fit's Jacobian and robust residual scale.
    """

    c: float
    k: float
    t: np.ndarray
    cost: float = 0.0
    cov: np.ndarray | None = None

    def predict_std(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Prediction and its delta-method std from ``cov`` (zeros without it): (n,), (n,)."""
        X = np.asarray(X, dtype=float)
        e = self.k * np.exp(X @ self.t)
        if self.cov is None:
            return self.c + e, np.zeros(len(X))
        G = np.hstack([np.ones((len(X), 1)), e[:, None], e[:, None] * X])        # d f / d (c, log k, t)
        var = np.einsum("ij,jk,ik->i", G, self.cov, G)
        return self.c + e, np.sqrt(np.clip(var, 0.0, None))

    def theta(self) -> np.ndarray:
        """The parameters as ``(c, log k, t)``, (k + 2,)."""
        return np.concatenate([[self.c, math.log(max(self.k, 1e-300))], self.t])

    def draw(self, rng: np.random.Generator) -> MixingLaw:
        """A law with parameters drawn from N(theta, cov) (Thompson sampling); itself without cov."""
        if self.cov is None:
            return self
        w, V = np.linalg.eigh(0.5 * (self.cov + self.cov.T))
        th = self.theta() + V @ (np.sqrt(np.clip(w, 0.0, None)) * rng.standard_normal(len(w)))
        return _gauge(th[0], th[1], th[2:])

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted objective for mixtures X (n, k) -> (n,); the exponent is capped so that a law run off
        to a huge k (inf * 0 otherwise) still gives finite, ordered values."""
        with np.errstate(divide="ignore"):
            z = np.log(self.k) + np.asarray(X, dtype=float) @ self.t
        return self.c + np.exp(np.minimum(z, 709.0))

    def value_grad(self, p: np.ndarray) -> tuple[float, np.ndarray]:
        e = self.k * math.exp(min(float(p @ self.t), 700.0))
        return self.c + e, e * self.t


@dataclass(frozen=True)
class LawSum:
    """The objective as a weighted sum of per-domain laws: ``sum_i w_i * (c_i + k_i exp(t_i . p))``
    (Data Mixing Laws: one law per validation domain, combined by the objective's weights)."""

    weights: tuple[float, ...]
    laws: tuple[MixingLaw, ...]
    domains: tuple[str, ...] = ()

    def predict(self, X: np.ndarray) -> np.ndarray:
        return sum(w * law.predict(X) for w, law in zip(self.weights, self.laws))

    def draw(self, rng: np.random.Generator) -> LawSum:
        """Each law's parameters drawn from its Laplace approximation (Thompson sampling)."""
        return LawSum(self.weights, tuple(law.draw(rng) for law in self.laws), self.domains)

    def value_grad(self, p: np.ndarray) -> tuple[float, np.ndarray]:
        val, grad = 0.0, np.zeros_like(p, dtype=float)
        for w, law in zip(self.weights, self.laws):
            v, g = law.value_grad(p)
            val, grad = val + w * v, grad + w * g
        return val, grad


def _gauge(c: float, logk: float, t: np.ndarray) -> MixingLaw:
    a = float(t.mean())
    return MixingLaw(float(c), float(math.exp(min(logk + a, 700.0))), t - a)


def _row_basis(X: np.ndarray) -> np.ndarray | None:
    """An orthonormal basis (k, r) of the row space of X (n, k) when its rank r < k, else None."""
    _, sv, Vt = np.linalg.svd(X, full_matrices=False)
    r = int(np.sum(sv > sv[0] * max(X.shape) * np.finfo(float).eps)) if len(sv) and sv[0] > 0 else 0
    return Vt[:r].T if r < X.shape[1] else None


def _resid(th: np.ndarray, X: np.ndarray, y: np.ndarray, spread: float, lam: float) -> np.ndarray:
    """Residuals of ``(c, log k, t)`` in units of ptp(y) (so the ridge is scale-free), then ``lam * t``."""
    z = np.clip(th[1] + X @ th[2:], -700, 700)
    return np.concatenate([(th[0] + np.exp(z) - y) / spread, lam * th[2:]])


def _jac(th: np.ndarray, X: np.ndarray, spread: float, lam: float) -> np.ndarray:
    """Jacobian of :func:`_resid`, (n + d, d + 2) for X (n, d)."""
    n, d = X.shape
    e = np.exp(np.clip(th[1] + X @ th[2:], -700, 700))[:, None] / spread
    ridge_rows = np.hstack([np.zeros((d, 2)), lam * np.eye(d)])
    return np.vstack([np.hstack([np.full((n, 1), 1.0 / spread), e, e * X]), ridge_rows])


STALL_WINDOW = 10     # a restart stops once STALL_WINDOW iterations lowered its cost by less than
STALL_RTOL = 1e-3     # STALL_RTOL (relative): it is drifting along the flat valley k -> inf, t -> 0


def _stall_stop(window: int, rtol: float):
    """A ``least_squares`` callback raising StopIteration once the last ``window`` iterations
    lowered the cost by less than ``rtol`` of it."""
    costs: list[float] = []

    def cb(intermediate_result) -> None:
        costs.append(float(intermediate_result.cost))
        if len(costs) > window and costs[-window - 1] - costs[-1] < rtol * costs[-1]:
            raise StopIteration

    return cb


def fit_mixing_law(X: np.ndarray, y: np.ndarray, rng: np.random.Generator, restarts: int = 5,
                   ridge: float = 1e-6, f_scale: float | None = None, init: MixingLaw | None = None,
                   max_nfev: int | None = None) -> MixingLaw:
    """Robust least-squares fit of ``y = c + k exp(t . X)`` to X (n, k), y (n,); best of restarts.

    ``f_scale`` is the soft_l1 inlier scale in objective units (default: 1.4826 * MAD of the
    best starting fit's residuals). ``ridge`` penalizes ``n * ||t||^2`` against residuals
    measured in units of ``ptp(y)``. ``init`` (a law fitted before, e.g. on fewer rows) is the
    first start (a warm start; ``restarts=1`` refines it alone). The profile starts (for five
    values of ``c`` below ``min(y)``, ``log(y - c)`` is linear in p) are solved as one
    least-squares problem with five right-hand sides.

    When X has rank r < k (fewer rows than domains, or a domain absent from every row), ``t`` is
    fitted in the row space of X (r coordinates): the data see only ``X t`` and the ridge removes
    any component outside it, so the minimizer lies there, and the solver no longer crawls while
    the ridge's tiny curvature removes that component (what made fits with fewer runs than
    domains slow). ``max_nfev`` caps the function evaluations of each restart (default ``40 *``
    the number of fitted parameters, ``r + 2``); a restart also stops once ``STALL_WINDOW``
    iterations lowered its cost by less than ``STALL_RTOL`` of it: it is then drifting along the
    flat valley ``k -> inf, t -> 0`` (noisy rows, a little more rows than domains), where further
    evaluations barely change how the law ranks mixtures.

    Example:
        >>> X = np.random.default_rng(0).dirichlet(np.ones(3), 40)
        >>> y = 2.0 + 0.5 * np.exp(X @ np.array([-1.0, 0.5, 0.5]))
        >>> law = fit_mixing_law(X, y, np.random.default_rng(0))
        >>> bool(np.allclose(law.predict(X), y, atol=1e-4))
        True
    """
    X, y = np.asarray(X, dtype=float), np.asarray(y, dtype=float)
    n, dim = X.shape
    spread = float(np.ptp(y)) or max(abs(float(y.mean())), 1.0) * 1e-3
    A = np.hstack([np.ones((n, 1)), X])
    c0 = float(y.min()) - np.array([0.02, 0.1, 0.3, 1.0, 3.0]) * spread       # profile starts, (5,)
    coef = np.linalg.lstsq(A, np.log(y[:, None] - c0[None, :]), rcond=None)[0]  # (k + 1, 5): one solve
    sse = np.sum((c0[None, :] + np.exp(A @ coef) - y[:, None]) ** 2, axis=0)
    order = np.argsort(sse, kind="stable")
    starts = [np.concatenate([[c0[j]], coef[:, j]]) for j in order]
    theta0 = starts[0]
    if f_scale is None:
        res = theta0[0] + np.exp(A @ theta0[1:]) - y
        f_scale = max(1.4826 * float(np.median(np.abs(res - np.median(res)))), 1e-6 * spread)
    lam = math.sqrt(ridge * n)
    B = _row_basis(X)                                  # t = B g; None: g = t
    XB = X if B is None else X @ B

    def reduce(th: np.ndarray) -> np.ndarray:
        return th if B is None else np.concatenate([th[:2], B.T @ th[2:]])

    inits = ([init.theta()] if init is not None else []) + starts[:2]
    scale = max(float(np.std(theta0[2:])), 0.5)
    while len(inits) < max(restarts, 1):
        th = theta0.copy()
        th[2:] += rng.normal(0.0, scale, dim)
        inits.append(th)
    best = None
    for th in inits[: max(restarts, 1)]:
        try:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # inside SciPy's trust region
                sol = least_squares(lambda g: _resid(g, XB, y, spread, lam), reduce(th),
                                    jac=lambda g: _jac(g, XB, spread, lam), loss="soft_l1", f_scale=f_scale / spread,
                                    method="trf", max_nfev=int(max_nfev or 40 * (XB.shape[1] + 2)),
                                    callback=_stall_stop(STALL_WINDOW, STALL_RTOL) if STALL_WINDOW else None)
        except (ValueError, FloatingPointError):
            continue
        if np.all(np.isfinite(sol.x)) and (best is None or sol.cost < best.cost):
            best = sol
    if best is None:   # every restart failed: the best profile fit
        return _gauge(theta0[0], theta0[1], theta0[2:])
    x = best.x if B is None else np.concatenate([best.x[:2], B @ best.x[2:]])
    law = _gauge(x[0], x[1], x[2:])
    r = _resid(x, X, y, spread, lam)[:n]
    sigma = max(1.4826 * float(np.median(np.abs(r - np.median(r)))), 1e-3)     # robust residual scale
    J = _jac(x, X, spread, lam)
    cov = sigma ** 2 * np.linalg.pinv(J.T @ J, hermitian=True)     # resid and J are in units of ptp(y)
    return MixingLaw(law.c, law.k, law.t, float(best.cost), _to_gauge_cov(cov, x))


def _to_gauge_cov(cov: np.ndarray, th: np.ndarray) -> np.ndarray:
    """Covariance of (c, log k, t) at ``th`` carried to the gauge sum(t) = 0 (a linear map)."""
    d = len(th) - 2
    G = np.eye(d + 2)
    G[1, 2:] += 1.0 / d                    # log k' = log k + mean(t)
    G[2:, 2:] -= 1.0 / d                   # t' = t - mean(t)
    return G @ cov @ G.T


def kl(p: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """KL(p || prior) per row of p (n, k) or for one p (k,); 0 log 0 = 0."""
    p = np.asarray(p, dtype=float)
    q = np.clip(prior, _EPS, None)
    pc = np.clip(p, 0.0, None)
    return np.sum(np.where(pc > 0, pc * np.log(np.clip(pc, _EPS, None) / q), 0.0), axis=-1)


def minimize_law(law: MixingLaw, space: MixtureSpace, starts: np.ndarray, kl_weight: float) -> np.ndarray:
    """Local minima of ``law(p) + kl_weight * KL(p || prior)`` in ``space`` from each start (s, k),
    sorted best first, (s, k)."""
    q = np.clip(space.prior_array(), _EPS, None)
    q = q / q.sum()
    bounds = list(zip(space.lower, space.upper))

    def f(p: np.ndarray) -> tuple[float, np.ndarray]:
        pc = np.clip(p, _EPS, None)
        v, g = law.value_grad(p)
        return v + kl_weight * float(np.sum(pc * np.log(pc / q))), g + kl_weight * (np.log(pc / q) + 1.0)

    cons = [{"type": "eq", "fun": lambda p: p.sum() - 1.0, "jac": lambda p: np.ones_like(p)}]
    out = []
    for x0 in starts:
        sol = minimize(f, x0, jac=True, method="SLSQP", bounds=bounds, constraints=cons,
                       options={"maxiter": 200, "ftol": 1e-10})
        p = space.project(sol.x if np.all(np.isfinite(sol.x)) else x0)
        out.append((f(p)[0], p))
    out.sort(key=lambda v: v[0])
    return np.array([p for _, p in out]).reshape(-1, space.dim)


@dataclass(frozen=True)
class MixingLawSearcher:
    """Options: kl_weight (lambda >= 0), restarts (fit), n_starts (SLSQP), n_candidates (batch
    fill), min_fit (default 4, chosen by replay on other tables; None = k + 2), min_distance (L1,
    [0, 2]), ridge, f_scale (None = auto),
    acquisition (mean|thompson), refit (schedule|always), fallback_to_best."""

    name: str = "mixing_law"
    kl_weight: float = 0.01
    restarts: int = 5
    n_starts: int = 4
    n_candidates: int = 2000
    min_fit: int | None = 4
    min_distance: float = 0.05
    ridge: float = 1e-6
    f_scale: float | None = None
    acquisition: str = "mean"
    refit: str = "schedule"
    fallback_to_best: bool = True

    def __post_init__(self) -> None:
        for key, allowed in (("acquisition", ACQUISITIONS), ("refit", REFITS)):
            if getattr(self, key) not in allowed:
                raise ConfigError(f"search.options.{key}: {getattr(self, key)!r}; allowed: {', '.join(allowed)}")
        if not isinstance(self.fallback_to_best, bool):
            raise ConfigError(f"search.options.fallback_to_best: {self.fallback_to_best!r} must be true or false")
        for key in ("restarts", "n_starts", "n_candidates"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ConfigError(f"search.options.{key}: {v!r} must be an integer >= 1 (searcher {self.name!r})")
        if self.min_fit is not None and (isinstance(self.min_fit, bool) or not isinstance(self.min_fit, int)
                                         or self.min_fit < 3):
            raise ConfigError(f"search.options.min_fit: {self.min_fit!r} must be an integer >= 3 "
                              f"(searcher {self.name!r})")
        for key, lo, hi in (("kl_weight", 0, math.inf), ("min_distance", 0, 2), ("ridge", 0, math.inf)):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (lo <= v <= hi) or math.isnan(v):
                raise ConfigError(f"search.options.{key}: {v!r} must be a number in [{lo}, {hi}] "
                                  f"(searcher {self.name!r})")
        if self.f_scale is not None and (not isinstance(self.f_scale, (int, float)) or not self.f_scale > 0):
            raise ConfigError(f"search.options.f_scale: {self.f_scale!r} must be a number > 0 or null")

    # ---- helpers -------------------------------------------------------------------------
    def _min_fit(self, k: int) -> int:
        return int(self.min_fit) if self.min_fit is not None else k + 2

    def fit(self, ctx: SearchContext) -> MixingLaw | LawSum | None:
        """Per-domain laws combined by the objective's weights when every finite trial reports
        the objective's domain losses (the Data Mixing Laws way); else one law fitted to the
        objective. None below ``min_fit`` finite trials."""
        X, y = ctx.completed_xy()
        if len(y) < self._min_fit(ctx.space.dim):
            return None
        doms = tuple(ctx.objective_weights)
        per = ctx.completed_losses(doms) if doms else None
        if per is not None and len(per[1]) == len(y):
            Xd, Ld = per
            laws = tuple(self._fit_rows(Xd, Ld[:, j], ctx.seed, d) for j, d in enumerate(doms))
            return LawSum(tuple(float(ctx.objective_weights[d]) for d in doms), laws, doms)
        return self._fit_rows(X, y, ctx.seed, "")

    def _fit_rows(self, X: np.ndarray, y: np.ndarray, seed: int, col: str) -> MixingLaw:
        """The law on rows (X, y) in trial order per ``refit`` (see the module docstring)."""
        n = len(y)
        if self.refit == "always":
            return fit_mixing_law(X, y, np.random.default_rng([int(seed) & 0xFFFFFFFF, n]), self.restarts,
                                  self.ridge, self.f_scale)
        p = max(last_refit_point(n), min(n, 3))
        base = self._scheduled(X, y, p, seed, col)
        if p == n:
            return base
        # two local runs: from the last point's law (warm start) and from the best profile start
        return fit_mixing_law(X, y, np.random.default_rng(0), 2, self.ridge, self.f_scale, init=base)

    def _scheduled(self, X: np.ndarray, y: np.ndarray, p: int, seed: int, col: str) -> MixingLaw:
        key = (self.restarts, self.ridge, self.f_scale, int(seed), col, p, digest(X[:p], y[:p]))
        law = CACHE.get(key)
        if law is not None:
            return law  # type: ignore[return-value]
        prev = warm_start_from(p)
        init = None if prev is None or prev < 3 else self._scheduled(X, y, prev, seed, col)
        CACHE.stats["fits"] += 1
        law = fit_mixing_law(X[:p], y[:p], np.random.default_rng([int(seed) & 0xFFFFFFFF, p]), self.restarts,
                             self.ridge, self.f_scale, init=init)
        return CACHE.put(key, law)  # type: ignore[return-value]

    def _optimum(self, ctx: SearchContext, law: MixingLaw, salt: str) -> np.ndarray:
        starts = sample(ctx.space, self.n_starts, ctx.rng(salt), REGMIX_STRENGTHS)
        starts = np.vstack([ctx.space.project(ctx.space.prior_array())[None, :], starts])
        return minimize_law(law, ctx.space, starts, float(self.kl_weight))

    def _explore(self, ctx: SearchContext, n: int) -> np.ndarray:
        return sample(ctx.space, n, ctx.rng(f"{self.name}.explore"))

    # ---- protocol ------------------------------------------------------------------------
    def suggest(self, ctx: SearchContext, n: int) -> list[Proposal]:
        if n <= 0:
            return []
        law = self.fit(ctx)
        if law is None:
            return Proposal.from_array(self._explore(ctx, n), ctx.space.domains)
        minima = self._optimum(ctx, law, f"{self.name}.starts")
        if self.acquisition == "thompson":      # one drawn law's minimum per proposal, then the fitted law's
            rng = ctx.rng(f"{self.name}.thompson")
            minima = np.vstack([self._optimum(ctx, law.draw(rng), f"{self.name}.starts.{i}")[:1]
                                for i in range(n)] + [minima])
        pool = sample(ctx.space, self.n_candidates, ctx.rng(f"{self.name}.pool"))
        prior = ctx.space.prior_array()
        score = law.predict(pool) + self.kl_weight * kl(pool, prior)
        cands = np.vstack([minima, pool[np.argsort(score, kind="stable")]])
        chosen = spread(cands, ctx.all_x(), n, self.min_distance)
        return Proposal.from_array(project_rows(ctx.space, chosen), ctx.space.domains)

    def recommend(self, ctx: SearchContext) -> Recommendation:
        law = self.fit(ctx)
        if law is None:
            rec = best_completed(ctx, self.name)
            rec.info.update(reason=f"fewer than {self._min_fit(ctx.space.dim)} finite trials; no fit")
            return rec
        p = self._optimum(ctx, law, f"{self.name}.recommend")[0]
        m = Mixture.from_array(p, ctx.space.domains)
        x = m.as_array(ctx.space.domains)
        laws = law.laws if isinstance(law, LawSum) else (law,)
        rec = Recommendation(m, float(law.predict(x[None, :])[0]), info={
            "searcher": self.name, "n_fit": int(len(ctx.completed_xy()[1])), "source": "mixing_law_optimum",
            "per_domain": isinstance(law, LawSum), "laws": len(laws),
            "c": [float(l.c) for l in laws], "k": [float(l.k) for l in laws], "t": [l.t.tolist() for l in laws],
            "kl_to_prior": float(kl(x, ctx.space.prior_array())), "kl_weight": float(self.kl_weight)})
        return guard(ctx, rec, self.fallback_to_best)

    def select(self, ctx: SearchContext, pool: np.ndarray, n: int) -> list[int]:
        """Rows of ``pool`` (m, k) to evaluate next, best predicted objective first; rows equal to
        an earlier trial are skipped; seeded random rows before ``min_fit`` finite trials."""
        law = self.fit(ctx)
        if law is None:
            return random_rows(ctx, pool, n, f"{self.name}.select")
        idx = fresh_rows(ctx, pool)
        P = np.asarray(pool, dtype=float)[idx]
        if self.acquisition == "thompson":      # greedy: pick i is the best row under its own drawn law
            rng, out = ctx.rng(f"{self.name}.thompson"), []
            for _ in range(min(n, len(idx))):
                pred = law.draw(rng).predict(P)
                pred[np.isin(idx, out)] = np.inf
                out.append(int(idx[int(np.argmin(pred))]))
            return out
        pred = law.predict(P)
        return idx[np.argsort(pred, kind="stable")][:n].tolist()
