"""Bayesian optimization on the constrained simplex (searcher ``bo``).

Until ``min_fit`` finite trials exist, proposals are RegMix Dirichlet draws
(:func:`mixopt.search.dirichlet.sample`). Then: a GP (:func:`mixopt.search.gp.fit_gp`; compositional
input warp ``sqrt(p + m)``, m the trials' median weight, Matern-5/2 ARD) is fitted on the negated
objective (BoTorch maximizes), and
``qLogNoisyExpectedImprovement`` (Ament et al. 2023) with the study's PENDING/RUNNING trials
as ``X_pending`` is maximized by ``optimize_acqf`` (SLSQP) under the sum-to-one equality
constraint ``(indices, coefficients, rhs) = (0..k-1, 1, 1)`` and the space's floor/cap bounds.
Batches are built greedily (point i is chosen with points < i pending), starting each
optimization from the best of ``raw_samples`` feasible Dirichlet draws.

A proposal never blocks a study: on a numerical failure the searcher scores a Dirichlet pool
of ``n_pool`` mixtures with the acquisition function and takes the best distinct rows; past
``time_limit_s`` (or if the acquisition could not be built) it scores the pool by the GP's
posterior mean (cheap), and with no GP at all it takes plain Dirichlet draws. The points
already optimized in the batch are kept. The limit is checked between stages (the GP fit is
not interrupted), so a call can overrun it by one fit plus one pool scoring.

Refits (``refit="schedule"``, default): the GP's hyperparameters are refitted only at the row
counts of :func:`mixopt.search.refit.refit_points` (every trial up to 8, then gaps growing by
25%, at most 32) or when the marginal likelihood drifts, warm-started from an earlier fit and
cached per process; in between the posterior is exact on all trials with the last
hyperparameters. The hyperparameters are a deterministic function of the trials, the seed and
the options (as long as no fit hits its time limit, half of ``time_limit_s``), so a restarted
process proposes the same mixtures (``refit="always"``: fit every call).

``recommend`` minimizes a pessimistic posterior mean; if the GP predicts that optimum worse
than the best measured trial, the trial is recommended (:func:`mixopt.search.trust.guard`).

Example:
    >>> from mixopt.search import get_searcher
    >>> s = get_searcher("bo", {"time_limit_s": 5, "raw_samples": 64})
    >>> s.name
    'bo'
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from botorch.acquisition.analytic import AnalyticAcquisitionFunction

from mixopt.core.errors import ConfigError
from mixopt.core.mixture import Mixture, MixtureSpace
from mixopt.search.base import Proposal, Recommendation, SearchContext, best_completed
from mixopt.search.dirichlet import REGMIX_STRENGTHS, sample, validate_sampling_options
from mixopt.search.gp import DTYPE, REFITS, WARPS, fit_gp, posterior_mean_std
from mixopt.search.pool import project_rows, untried_rows
from mixopt.search.surrogates import BO_WARP
from mixopt.search.trust import guard

log = logging.getLogger(__name__)
DUP_L1 = 1e-4        # two mixtures closer than this (L1) count as the same point


# ---- shared helpers (also used by mixopt.search.mfbo) ----------------------------------------------
@contextmanager
def seeded_torch(rng: np.random.Generator):
    """Run a block with torch's global RNG seeded from ``rng``, restoring it afterwards."""
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(int(rng.integers(2**31 - 1)))
        yield


def simplex_bounds(space: MixtureSpace, extra: int = 0):
    """BoTorch bounds (2, k + extra) and the sum-to-one equality constraint on the first k."""
    import torch

    k = space.dim
    lo = np.concatenate([space.lower_array(), np.zeros(extra)])
    hi = np.concatenate([space.upper_array(), np.ones(extra)])
    bounds = torch.as_tensor(np.stack([lo, hi]), dtype=DTYPE)
    eq = [(torch.arange(k), torch.ones(k, dtype=DTYPE), 1.0)]
    return bounds, eq


def acq_values(acq, Z: np.ndarray, batch: int = 512) -> np.ndarray:
    """acq at each row of Z (m, d) as a q=1 batch: (m,)."""
    import torch

    Zt = torch.as_tensor(Z, dtype=DTYPE).unsqueeze(-2)                 # (m, 1, d)
    with torch.no_grad():
        out = [acq(Zt[i:i + batch]).reshape(-1) for i in range(0, len(Zt), batch)]
    return torch.cat(out).numpy() if out else np.zeros(0)


def optimize_point(acq, space: MixtureSpace, starts: np.ndarray, num_restarts: int,
                   deadline: float, fixed: dict[int, float] | None = None, maxiter: int = 100) -> np.ndarray:
    """Maximize a q=1 acquisition over the space from the best ``num_restarts`` of ``starts``.

    ``starts`` (r, k) are feasible mixtures; ``fixed`` fixes extra columns (e.g. the fidelity
    at index k). Raises TimeoutError when ``deadline`` (time.monotonic) has passed. (k,).
    """
    import torch
    from botorch.optim import optimize_acqf

    if time.monotonic() > deadline:
        raise TimeoutError("time limit reached before optimizing the acquisition")
    fixed = fixed or {}
    Z = starts
    if fixed:
        Z = np.hstack([starts, np.tile([fixed[j] for j in sorted(fixed)], (len(starts), 1))])
    vals = acq_values(acq, Z)
    top = np.argsort(-vals, kind="stable")[:num_restarts]
    ics = torch.as_tensor(Z[top], dtype=DTYPE).unsqueeze(-2)          # (r, 1, d)
    bounds, eq = simplex_bounds(space, extra=Z.shape[1] - space.dim)
    cand, _ = optimize_acqf(acq, bounds=bounds, q=1, num_restarts=len(top), batch_initial_conditions=ics,
                            equality_constraints=eq, fixed_features=fixed or None,
                            options={"maxiter": maxiter}, timeout_sec=max(deadline - time.monotonic(), 0.1))
    x = cand.detach().numpy().reshape(-1)[: space.dim]
    if not np.all(np.isfinite(x)):
        raise FloatingPointError("acquisition optimizer returned a non-finite point")
    return space.project(x)


def is_new(x: np.ndarray, taken: np.ndarray) -> bool:
    """True unless ``x`` is within DUP_L1 (L1) of a row of ``taken``."""
    return len(taken) == 0 or float(np.abs(taken - x).sum(axis=1).min()) >= DUP_L1


def best_distinct(pool: np.ndarray, scores: np.ndarray, taken: np.ndarray, n: int) -> list[np.ndarray]:
    """The n highest-scoring pool rows that are distinct from ``taken`` and from each other."""
    out: list[np.ndarray] = []
    ref = taken.reshape(-1, pool.shape[1])
    for i in np.argsort(-scores, kind="stable"):
        if is_new(pool[i], ref):
            out.append(pool[i])
            ref = np.vstack([ref, pool[i][None, :]])
            if len(out) == n:
                break
    return out


def check_options(name: str, ints: dict[str, object], floats: dict[str, object]) -> None:
    """ConfigError for integer options < 1 or non-positive numbers."""
    for key, v in ints.items():
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ConfigError(f"search.options.{key}: {v!r} must be an integer >= 1 (searcher {name!r})")
    for key, v in floats.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ConfigError(f"search.options.{key}: {v!r} must be a positive number (searcher {name!r})")


# ---- the searcher ----------------------------------------------------------------------------
@dataclass(frozen=True)
class BOSearcher:
    """Options: min_fit (finite trials before the GP; default 3, chosen by replay on tables other
    than the headline one: bench/bench_cv_defaults.py), warp (sqrt_median|sqrt|none|clr; default
    sqrt_median: :func:`mixopt.search.gp.warp_eps`, measured in bench/bench_defaults_all.py),
    raw_samples (Dirichlet starts scored per point), num_restarts, maxiter (SLSQP),
    mc_samples (qLogNEI Sobol samples), n_pool (fallback/recommend pool), time_limit_s,
    max_fit_rows (GP hyperparameters fitted on at most this many rows), strengths, max_tries,
    refit (schedule|always: hyperparameter refits, see the module doc), fallback_to_best
    (recommend the best trial when the GP predicts its optimum worse than it)."""

    name: str = "bo"
    min_fit: int = 3
    warp: str = BO_WARP
    raw_samples: int = 256
    num_restarts: int = 2
    maxiter: int = 50
    mc_samples: int = 128
    n_pool: int = 2000
    time_limit_s: float = 20.0
    max_fit_rows: int | None = 256
    strengths: tuple[float, ...] = REGMIX_STRENGTHS
    max_tries: int = 20
    refit: str = "schedule"
    fallback_to_best: bool = True

    def __post_init__(self) -> None:
        if self.warp not in WARPS:
            raise ConfigError(f"search.options.warp: {self.warp!r}; allowed: {', '.join(WARPS)}")
        if self.refit not in REFITS:
            raise ConfigError(f"search.options.refit: {self.refit!r}; allowed: {', '.join(REFITS)}")
        if not isinstance(self.fallback_to_best, bool):
            raise ConfigError(f"search.options.fallback_to_best: {self.fallback_to_best!r} must be true or false")
        check_options(self.name, {"min_fit": self.min_fit, "raw_samples": self.raw_samples,
                                  "num_restarts": self.num_restarts, "maxiter": self.maxiter,
                                  "mc_samples": self.mc_samples, "n_pool": self.n_pool,
                                  "max_fit_rows": self.max_fit_rows}, {"time_limit_s": self.time_limit_s})
        if self.min_fit < 2:
            raise ConfigError(f"search.options.min_fit: {self.min_fit!r} must be >= 2 (searcher {self.name!r})")
        validate_sampling_options(self.name, self.strengths, self.max_tries)
        object.__setattr__(self, "strengths", tuple(float(v) for v in self.strengths))

    # ---- model ---------------------------------------------------------------------------
    def _sample(self, ctx: SearchContext, n: int, rng: np.random.Generator) -> np.ndarray:
        return sample(ctx.space, n, rng, self.strengths, self.max_tries)

    def _fit(self, ctx: SearchContext, X: np.ndarray, y: np.ndarray):
        """GP on the negated objective (BoTorch maximizes); L-BFGS stops at half the time limit."""
        return fit_gp(X, -y, self.warp, self.max_fit_rows, ctx.seed, timeout_s=0.5 * float(self.time_limit_s),
                      refit=self.refit)

    def _acquisition(self, model, X: np.ndarray, pending: np.ndarray, seed: int):
        import torch
        from botorch.acquisition.logei import qLogNoisyExpectedImprovement
        from botorch.sampling.normal import SobolQMCNormalSampler

        Xp = torch.as_tensor(pending, dtype=DTYPE) if len(pending) else None
        return qLogNoisyExpectedImprovement(
            model, X_baseline=torch.as_tensor(X, dtype=DTYPE), X_pending=Xp, prune_baseline=True,
            sampler=SobolQMCNormalSampler(torch.Size([self.mc_samples]), seed=seed), cache_root=False)

    # ---- protocol ------------------------------------------------------------------------
    def suggest(self, ctx: SearchContext, n: int) -> list[Proposal]:
        if n <= 0:
            return []
        X, y = ctx.completed_xy()
        if len(y) < self.min_fit:
            P = self._sample(ctx, n, ctx.rng(f"{self.name}.explore"))
        else:
            with seeded_torch(ctx.rng(f"{self.name}.torch")):
                P = self._propose(ctx, X, y, n)
        return Proposal.from_array(project_rows(ctx.space, P), ctx.space.domains)

    def _propose(self, ctx: SearchContext, X: np.ndarray, y: np.ndarray, n: int) -> np.ndarray:
        """n new mixtures (n, k): greedy qLogNEI batch, or the pool fallback."""
        deadline = time.monotonic() + float(self.time_limit_s)
        rng = ctx.rng(f"{self.name}.suggest")
        pool = self._sample(ctx, self.n_pool, rng)
        taken, pending = ctx.all_x(), ctx.pending_x()
        model = acq = None
        chosen: list[np.ndarray] = []
        try:
            model = self._fit(ctx, X, y)
            acq = self._acquisition(model, X, pending, int(rng.integers(2**31 - 1)))
            for i in range(n):
                if i:
                    acq.set_X_pending(_tensor(np.vstack([pending.reshape(-1, X.shape[1])] + chosen)))
                starts = self._sample(ctx, self.raw_samples, rng)
                x = optimize_point(acq, ctx.space, starts, self.num_restarts, deadline, maxiter=self.maxiter)
                if not is_new(x, np.vstack([taken] + chosen) if chosen else taken):
                    x = best_distinct(starts, acq_values(acq, starts), np.vstack([taken] + chosen), 1)[0]
                chosen.append(x)
            return np.array(chosen)
        except Exception as e:  # noqa: BLE001 - any failure falls back; a proposal must not block
            log.warning("bo: %s after %d of %d points (%s: %s); scoring a Dirichlet pool instead",
                        "fallback", len(chosen), n, type(e).__name__, e)
        if time.monotonic() > deadline:   # out of time: the posterior mean is far cheaper to score
            acq = None
        return np.array(chosen + self._pool_fallback(ctx, model, acq, pool, taken, chosen, n - len(chosen)))

    def _pool_fallback(self, ctx, model, acq, pool, taken, chosen, m) -> list[np.ndarray]:
        ref = np.vstack([taken.reshape(-1, ctx.space.dim)] + [c[None, :] for c in chosen])
        scores = None
        for how in ("acq", "mean"):
            try:
                if how == "acq" and acq is not None:
                    scores = acq_values(acq, pool)
                elif how == "mean" and model is not None:
                    scores = posterior_mean_std(model, pool)[0]
            except Exception as e:  # noqa: BLE001
                log.warning("bo: pool scoring by %s failed (%s)", how, e)
            if scores is not None and np.all(np.isfinite(scores)):
                break
            scores = None
        if scores is None:
            scores = -np.arange(len(pool), dtype=float)   # plain Dirichlet order
        out = best_distinct(pool, scores, ref, m)
        while len(out) < m:   # pool smaller than asked: repeat its best rows
            out.append(pool[len(out) % len(pool)])
        return out

    def select(self, ctx: SearchContext, pool: np.ndarray, n: int) -> list[int]:
        """Indices of the n rows of ``pool`` (m, k) to evaluate next, best first.

        Rows equal to an existing trial's mixture are skipped while enough others remain.
        Before ``min_fit`` finite trials: random rows (``ctx.rng``). Then greedy qLogNEI:
        each chosen row becomes pending for the next; posterior mean if that fails.
        """
        pool = np.asarray(pool, dtype=float).reshape(-1, ctx.space.dim)
        cand = untried_rows(pool, ctx.all_x(), n)
        n = min(n, len(cand))
        X, y = ctx.completed_xy()
        if len(y) < self.min_fit:
            return [int(i) for i in ctx.rng(f"{self.name}.select").choice(cand, size=n, replace=False)]
        with seeded_torch(ctx.rng(f"{self.name}.torch")):
            return self._select_greedy(ctx, X, y, pool, cand, n)

    def _select_greedy(self, ctx, X, y, pool, cand, n) -> list[int]:
        pending = ctx.pending_x()
        rng = ctx.rng(f"{self.name}.select")
        out: list[int] = []
        left = list(cand)
        try:
            model = self._fit(ctx, X, y)
        except Exception as e:  # noqa: BLE001
            log.warning("bo.select: GP fit failed (%s); random rows", e)
            return [int(i) for i in rng.choice(cand, size=n, replace=False)]
        try:
            acq = self._acquisition(model, X, pending, int(rng.integers(2**31 - 1)))
            while len(out) < n:
                if out:
                    acq.set_X_pending(_tensor(np.vstack([pending.reshape(-1, X.shape[1]), pool[out]])))
                v = acq_values(acq, pool[left])
                if not np.all(np.isfinite(v)):
                    raise FloatingPointError("non-finite acquisition values")
                out.append(int(left.pop(int(np.argmax(v)))))
            return out
        except Exception as e:  # noqa: BLE001
            log.warning("bo.select: acquisition failed (%s); ranking by posterior mean", e)
        mean = posterior_mean_std(model, pool[left])[0]
        return out + [int(left[i]) for i in np.argsort(-mean, kind="stable")[: n - len(out)]]

    def recommend(self, ctx: SearchContext) -> Recommendation:
        X, y = ctx.completed_xy()
        if len(y) < self.min_fit:
            rec = best_completed(ctx, self.name)
            rec.info.update(reason=f"fewer than {self.min_fit} finite trials; no GP")
            return rec
        with seeded_torch(ctx.rng(f"{self.name}.torch")):
            model = self._fit(ctx, X, y)
            x = minimize_mean(model, ctx.space, np.vstack([X, self._sample(ctx, self.n_pool,
                              ctx.rng(f"{self.name}.recommend"))]), self.num_restarts,
                              time.monotonic() + float(self.time_limit_s))
            mean, std = posterior_mean_std(model, x[None, :])
        rec = Recommendation(Mixture.from_array(x, ctx.space.domains), float(-mean[0]), float(std[0]),
                             info={"searcher": self.name, "n_fit": int(len(y)), "warp": self.warp,
                                   "warp_eps": float(model.input_transform.warp.eps),
                                   "source": "gp_posterior_mean"})
        return guard(ctx, rec, self.fallback_to_best, lambda z: float(posterior_mean_std(model, z[None, :])[1][0]))


def minimize_mean(model, space: MixtureSpace, pool: np.ndarray, num_restarts: int, deadline: float,
                  fixed: dict[int, float] | None = None, beta: float = 1.0) -> np.ndarray:
    """The point of the space maximizing ``mean - beta * std`` of the model's posterior (the
    model is fitted on the negated objective: this minimizes a pessimistic predicted
    objective, so the recommendation stays where the GP has data instead of trusting its
    extrapolation into the simplex's corners): pool, then SLSQP from the best pool rows. (k,)."""
    acq = LowerBound(model, beta)
    v_pool = acq_values(acq, _with_fixed(pool, fixed))
    best = pool[int(np.argmax(v_pool))]
    try:
        x = optimize_point(acq, space, pool, num_restarts, deadline, fixed=fixed)
        v = acq_values(acq, _with_fixed(np.stack([x, best]), fixed))
        return x if v[0] >= v[1] else space.project(best)
    except Exception as e:  # noqa: BLE001
        log.warning("posterior-mean optimization failed (%s); best pool point", e)
        return space.project(best)


class LowerBound(AnalyticAcquisitionFunction):
    """Analytic ``mean - beta * std`` of the posterior (a lower confidence bound; q = 1)."""

    def __init__(self, model, beta: float) -> None:
        super().__init__(model=model)
        self.beta = float(beta)

    def forward(self, X):   # (b, 1, d) -> (b,)
        mean, sigma = self._mean_and_sigma(X)
        return mean - self.beta * sigma


def _with_fixed(P: np.ndarray, fixed: dict[int, float] | None) -> np.ndarray:
    if not fixed:
        return P
    return np.hstack([P, np.tile([fixed[j] for j in sorted(fixed)], (len(P), 1))])


def _tensor(a: np.ndarray):
    import torch

    return torch.as_tensor(np.asarray(a, dtype=float), dtype=DTYPE)
