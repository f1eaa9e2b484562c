"""Multi-fidelity Bayesian optimization over the study's scale ladder (searcher ``mfbo``).

ADMIRE-BayesOpt style: the fidelity is the proxy scale. Each rung i of ``ctx.rungs``
(cheapest first, the last is the target) gets a fidelity feature

    s_i = log(c_i / c_0) / log(c_T / c_0)  in [0, 1]   (c = measured cost per trial; s_T = 1)

(equal costs: s_i = i / T). One ``SingleTaskMultiFidelityGP`` (:func:`mixopt.search.gp.fit_mf_gp`;
mixture columns warped (``warp``: default the Hellinger ``sqrt``; ``bo``'s ``sqrt_median`` was measured
on single-fidelity pools only), a downsampling kernel on s) is fitted on every finite trial
of every rung. Acquisition: multi-fidelity max-value entropy search
(``qMultiFidelityMaxValueEntropy``, Takeno et al. 2020) about the optimum *at the target
fidelity* (``project`` sets s = 1), divided by the cost through ``InverseCostWeightedUtility``
with an exact cost model ``c(s) = c_T * (c_0 / c_T)^(1 - s)`` (log-linear interpolation of the
measured rung costs, so it matches every rung exactly). MES was chosen over the multi-fidelity
knowledge gradient because it scores a pool in one batched call (KG's one-shot optimization
with fantasies takes minutes at 17 domains on two cores).

Proposal: score a Dirichlet pool at every rung, take the best (mixture, rung) by information
gain per unit cost, refine the mixture by SLSQP at that rung (sum-to-one equality, floors and
caps), then repeat with it pending for the next batch element. Initial design (fewer than
``min_fit`` finite trials over all rungs): Dirichlet mixtures at the cheapest rung, every
``target_every``-th at the target. ``recommend``: the posterior mean at the target fidelity,
minimized over the space. A time limit and a pool fallback as in :mod:`mixopt.search.bo`.

Merged scores (model-merging proxies, ``ctx.merged``): a mixture scored by merging domain experts is
the zero-training fidelity. When the study has them, the cost model starts at what one costs
(``ctx.merged_cost``), so they get the feature s = 0 and the rungs move up; the GP learns from them
(``merged_rows`` of them) and the acquisition weighs every rung by its cost against theirs; they are
never proposed (screening rounds score them in bulk).

Target-rung evidence: once the model runs, a proposal goes to the target rung whenever fewer
than ``min_target_share`` of the study's trials (pending included) would otherwise be there, so
the cheap rungs cannot absorb the whole budget. ``recommend`` trusts the model only with at
least ``min_target`` finite target-rung trials; with fewer it recommends the best trial of the
highest rung that has data (``info["reason"]`` says so), and a model optimum predicted worse
than the best target trial gives way to that trial (:func:`mixopt.search.trust.guard`).
Hyperparameter refits are scheduled and warm-started as in ``bo`` (``refit``); the data are
in trial order so that a new trial extends the cached prefix.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from mixopt.core.errors import ConfigError
from mixopt.core.mixture import Mixture
from mixopt.search.base import Proposal, Recommendation, SearchContext, best_completed
from mixopt.search.bo import (
    acq_values,
    best_distinct,
    check_options,
    is_new,
    minimize_mean,
    optimize_point,
    seeded_torch,
)
from mixopt.search.dirichlet import REGMIX_STRENGTHS, sample, validate_sampling_options
from mixopt.search.gp import DEFAULT_WARP, DTYPE, REFITS, WARPS, fit_mf_gp, posterior_mean_std
from mixopt.search.pool import untried_rows
from mixopt.search.trust import best_target_trial, guard

log = logging.getLogger(__name__)
NO_LADDER = "mfbo needs a scale ladder: set `ladder:` in the study config"


def fidelity_features(costs: list[float]) -> np.ndarray:
    """s_i in [0, 1] from the rung costs (cheapest first): normalized log-cost. (R,)."""
    c = np.maximum(np.asarray(costs, dtype=float), 1e-12)
    span = math.log(c[-1] / c[0]) if c[-1] > c[0] else 0.0
    if span <= 0 or not np.all(np.diff(c) > 0):
        return np.linspace(0.0, 1.0, len(c))
    return np.log(c / c[0]) / span


@dataclass(frozen=True)
class MFBOSearcher:
    """Options: min_fit (finite trials over all rungs before the GP; default 10), target_every
    (initial design: every n-th trial at the target), warp, n_pool (mixtures scored per rung),
    n_candidates (max-value samples' candidate set), num_fantasies, num_restarts, maxiter,
    time_limit_s, strengths, max_tries, min_target_share (least share of trials at the target
    rung once the model runs), min_target (target-rung trials before the model's recommendation
    is trusted), refit (schedule|always), fallback_to_best, merged_rows (merged scores the GP learns from
    at most: the best half and a spread of the rest)."""

    name: str = "mfbo"
    min_fit: int = 10
    target_every: int = 4
    warp: str = DEFAULT_WARP
    n_pool: int = 500
    n_candidates: int = 500
    num_fantasies: int = 8
    num_restarts: int = 2
    maxiter: int = 50
    time_limit_s: float = 20.0
    strengths: tuple[float, ...] = REGMIX_STRENGTHS
    max_tries: int = 20
    min_target_share: float = 0.15
    min_target: int = 3
    refit: str = "schedule"
    fallback_to_best: bool = True
    merged_rows: int = 128

    def __post_init__(self) -> None:
        if self.warp not in WARPS:
            raise ConfigError(f"search.options.warp: {self.warp!r}; allowed: {', '.join(WARPS)}")
        if self.refit not in REFITS:
            raise ConfigError(f"search.options.refit: {self.refit!r}; allowed: {', '.join(REFITS)}")
        if not isinstance(self.fallback_to_best, bool):
            raise ConfigError(f"search.options.fallback_to_best: {self.fallback_to_best!r} must be true or false")
        v = self.min_target_share
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
            raise ConfigError(f"search.options.min_target_share: {v!r} must be a number in [0, 1] "
                              f"(searcher {self.name!r})")
        check_options(self.name, {"min_fit": self.min_fit, "target_every": self.target_every,
                                  "n_pool": self.n_pool, "n_candidates": self.n_candidates,
                                  "num_fantasies": self.num_fantasies, "num_restarts": self.num_restarts,
                                  "maxiter": self.maxiter, "min_target": self.min_target,
                                  "merged_rows": self.merged_rows},
                     {"time_limit_s": self.time_limit_s})
        if self.min_fit < 2:
            raise ConfigError(f"search.options.min_fit: {self.min_fit!r} must be >= 2 (searcher {self.name!r})")
        validate_sampling_options(self.name, self.strengths, self.max_tries)
        object.__setattr__(self, "strengths", tuple(float(v) for v in self.strengths))

    # ---- data ----------------------------------------------------------------------------
    @staticmethod
    def _merged_cost(ctx: SearchContext) -> float | None:
        """The cost of a merged score when the study has merged scores (model-merging proxies), else None."""
        c = ctx.merged_cost
        return float(c) if ctx.merged and c is not None and math.isfinite(c) and c > 0 else None

    def _ladder(self, ctx: SearchContext) -> tuple[np.ndarray, np.ndarray]:
        """(s of each rung (R,), cost relative to the target); ConfigError without a ladder.

        With merged scores the cost model starts at the merged score's cost: it is the cheapest
        fidelity (feature 0), which is never proposed, only learned from."""
        if len(ctx.rungs) < 2:
            raise ConfigError(NO_LADDER)
        costs = [float(f.cost) for f in ctx.rungs]
        if not all(math.isfinite(c) and c > 0 for c in costs):
            costs = [float(i + 1) for i in range(len(costs))]
        merged = self._merged_cost(ctx)
        if merged is not None and merged < costs[0]:
            costs = [merged, *costs]
            return fidelity_features(costs)[1:], np.asarray(costs) / costs[-1]
        return fidelity_features(costs), np.asarray(costs) / costs[-1]

    def _data(self, ctx: SearchContext, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The merged scores at feature 0 when the ladder's cost model starts at them (at most
        ``merged_rows``: the best half and an even spread of the rest; first, so that trials extend the
        rows a cached fit saw), then the finite trials of every rung in trial order: X (n, k), s (n,),
        y (n,); rung None is the target."""
        T = len(s) - 1
        rows = []
        if s[0] > 0:  # the merged scores are the zero-training fidelity, s = 0
            merged = [o for o in ctx.merged if o.is_finite]
            order = np.argsort([float(o.value) for o in merged], kind="stable")  # type: ignore[arg-type]
            half = self.merged_rows // 2
            rest = max(0, min(len(order) - half, half))  # an even spread of the rest, when there is a rest
            keep = np.concatenate([order[:half], order[half:][np.linspace(0, len(order) - half - 1, rest).astype(int)]])
            rows += [(merged[i].mixture.as_array(ctx.space.domains), 0.0, float(merged[i].value))  # type: ignore[arg-type]
                     for i in np.sort(keep.astype(int))] if len(order) else []
        rows += [(o.mixture.as_array(ctx.space.domains), s[T if o.rung is None else o.rung], float(o.value))
                 for o in ctx.observations
                 if o.is_finite and (o.rung is None or 0 <= o.rung <= T)]  # type: ignore[arg-type]
        X = np.array([r[0] for r in rows], dtype=float).reshape(-1, ctx.space.dim)
        return X, np.array([r[1] for r in rows], dtype=float), np.array([r[2] for r in rows], dtype=float)

    def _target_counts(self, ctx: SearchContext) -> tuple[int, int]:
        """(trials at the target rung, all trials): COMPLETE finite or PENDING/RUNNING ones."""
        T = len(ctx.rungs) - 1
        live = [o for o in ctx.observations if o.is_finite or o.state in ("PENDING", "RUNNING")]
        return sum(1 for o in live if o.rung is None or o.rung == T), len(live)

    def _needs_target(self, n_target: int, n_all: int) -> bool:
        """True when one more trial off the target rung would leave it below min_target_share."""
        return n_target < float(self.min_target_share) * (n_all + 1)

    def _fit(self, ctx: SearchContext, X: np.ndarray, sv: np.ndarray, y: np.ndarray):
        return fit_mf_gp(X, sv, -y, self.warp, ctx.seed, 0.5 * float(self.time_limit_s), self.refit)

    def _pending(self, ctx: SearchContext, s: np.ndarray) -> np.ndarray:
        """PENDING/RUNNING trials as [mixture, s] rows, (m, k + 1)."""
        rows = [np.append(o.mixture.as_array(ctx.space.domains), s[-1 if o.rung is None else o.rung])
                for o in ctx.observations if o.state in ("PENDING", "RUNNING")]
        return np.array(rows, dtype=float).reshape(-1, ctx.space.dim + 1)

    def _sample(self, ctx: SearchContext, n: int, rng: np.random.Generator) -> np.ndarray:
        return sample(ctx.space, n, rng, self.strengths, self.max_tries)

    def _acquisition(self, ctx, model, s, rel_cost, pending, rng):
        import torch
        from botorch.acquisition.cost_aware import InverseCostWeightedUtility
        from botorch.acquisition.max_value_entropy_search import qMultiFidelityMaxValueEntropy
        from botorch.acquisition.utils import project_to_target_fidelity
        from botorch.models.deterministic import GenericDeterministicModel

        k = ctx.space.dim
        c0 = float(rel_cost[0])

        def cost(Z: torch.Tensor) -> torch.Tensor:   # (b, q, k + 1) -> (b, q, 1), target = 1
            return (c0 ** (1.0 - Z[..., k:k + 1])).clamp_min(1e-12)

        cand = torch.as_tensor(self._sample(ctx, self.n_candidates, rng), dtype=DTYPE)
        cand = torch.cat([cand, torch.ones(len(cand), 1, dtype=DTYPE)], dim=-1)
        Xp = torch.as_tensor(pending, dtype=DTYPE) if len(pending) else None
        return qMultiFidelityMaxValueEntropy(
            model, cand, num_fantasies=self.num_fantasies, X_pending=Xp,
            cost_aware_utility=InverseCostWeightedUtility(GenericDeterministicModel(cost, 1)),
            project=lambda Z: project_to_target_fidelity(Z, {k: 1.0}, d=k + 1))

    # ---- protocol ------------------------------------------------------------------------
    def suggest(self, ctx: SearchContext, n: int) -> list[Proposal]:
        s, rel_cost = self._ladder(ctx)
        if n <= 0:
            return []
        X, sv, y = self._data(ctx, s)
        T = len(s) - 1
        if len(y) < self.min_fit:
            P = self._sample(ctx, n, ctx.rng(f"{self.name}.explore"))
            t0 = len(ctx.observations)
            fids = [T if (t0 + j) % self.target_every == self.target_every - 1 else 0 for j in range(n)]
            return [Proposal(Mixture.from_array(ctx.space.project(p), ctx.space.domains), f)
                    for p, f in zip(P, fids)]
        with seeded_torch(ctx.rng(f"{self.name}.torch")):
            out = self._propose(ctx, X, sv, y, s, rel_cost, n)
        n_t, n_all = self._target_counts(ctx)
        for j, (p, f) in enumerate(out):     # the fallback paths too keep the target rung's share
            if f != T and self._needs_target(n_t, n_all):
                out[j] = (p, T)
            n_t, n_all = n_t + int(out[j][1] == T), n_all + 1
        return [Proposal(Mixture.from_array(ctx.space.project(p), ctx.space.domains), int(f)) for p, f in out]

    def _propose(self, ctx, X, sv, y, s, rel_cost, n) -> list[tuple[np.ndarray, int]]:
        deadline = time.monotonic() + float(self.time_limit_s)
        rng = ctx.rng(f"{self.name}.suggest")
        pool = self._sample(ctx, self.n_pool, rng)
        pending = self._pending(ctx, s)
        taken = [ctx.all_x()]
        out: list[tuple[np.ndarray, int]] = []
        model = acq = None
        n_t, n_all = self._target_counts(ctx)
        T = len(s) - 1
        try:
            model = self._fit(ctx, X, sv, y)
            acq = self._acquisition(ctx, model, s, rel_cost, pending, rng)
            while len(out) < n:
                if out:
                    acq.set_X_pending(_t(np.vstack([pending] + [np.append(p, s[f])[None, :] for p, f in out])))
                ref = np.vstack(taken + [p[None, :] for p, _ in out])
                vals = np.stack([acq_values(acq, _col(pool, s[i])) for i in range(len(s))])   # (R, N)
                if not np.all(np.isfinite(vals)):
                    raise FloatingPointError("non-finite acquisition values")
                i, j = np.unravel_index(int(np.argmax(vals)), vals.shape)
                if self._needs_target(n_t + sum(f == T for _, f in out), n_all + len(out)):
                    i = T
                x = optimize_point(acq, ctx.space, pool[np.argsort(-vals[i])], self.num_restarts, deadline,
                                   fixed={ctx.space.dim: float(s[i])}, maxiter=self.maxiter)
                if not is_new(x, ref):
                    x = best_distinct(pool, vals[i], ref, 1)[0]
                out.append((x, int(i)))
            return out
        except Exception as e:  # noqa: BLE001 - any failure falls back; a proposal must not block
            log.warning("mfbo: fallback after %d of %d points (%s: %s)", len(out), n, type(e).__name__, e)
        return out + self._fallback(ctx, model, acq, pool, s, taken, out, n - len(out))

    def _fallback(self, ctx, model, acq, pool, s, taken, out, m) -> list[tuple[np.ndarray, int]]:
        """Best pool rows by acquisition (any rung), else by target posterior mean at rung 0."""
        ref = np.vstack(taken + [p[None, :] for p, _ in out])
        try:
            if acq is None:
                raise RuntimeError("no acquisition function")
            vals = np.stack([acq_values(acq, _col(pool, s[i])) for i in range(len(s))])
            if np.all(np.isfinite(vals)):
                rung = vals.argmax(axis=0)
                return [(x, int(rung[np.flatnonzero((pool == x).all(1))[0]]))
                        for x in best_distinct(pool, vals.max(axis=0), ref, m)]
        except Exception as e:  # noqa: BLE001
            log.warning("mfbo: pool scoring by acquisition failed (%s)", e)
        scores = -np.arange(len(pool), dtype=float)
        if model is not None:
            try:
                scores = posterior_mean_std(model, _col(pool, 1.0))[0]
            except Exception as e:  # noqa: BLE001
                log.warning("mfbo: pool scoring by posterior mean failed (%s)", e)
        rows = best_distinct(pool, scores, ref, m)
        rows += [pool[i % len(pool)] for i in range(m - len(rows))]
        return [(x, 0) for x in rows]

    def select(self, ctx: SearchContext, pool: np.ndarray, n: int) -> list[int]:
        """Indices of n rows of ``pool`` (m, k) to evaluate next, scored by MF-MES at the target
        fidelity (greedy, each chosen row pending for the next); random rows before min_fit."""

        s, rel_cost = self._ladder(ctx)
        pool = np.asarray(pool, dtype=float).reshape(-1, ctx.space.dim)
        cand = untried_rows(pool, ctx.all_x(), n)
        n = min(n, len(cand))
        X, sv, y = self._data(ctx, s)
        rng = ctx.rng(f"{self.name}.select")
        if len(y) < self.min_fit:
            return [int(i) for i in rng.choice(cand, size=n, replace=False)]
        left, out = list(cand), []
        with seeded_torch(ctx.rng(f"{self.name}.torch")):
            model = self._fit(ctx, X, sv, y)
            try:
                pending = self._pending(ctx, s)
                acq = self._acquisition(ctx, model, s, rel_cost, pending, rng)
                while len(out) < n:
                    if out:
                        acq.set_X_pending(_t(np.vstack([pending, _col(pool[out], 1.0)])))
                    v = acq_values(acq, _col(pool[left], 1.0))
                    if not np.all(np.isfinite(v)):
                        raise FloatingPointError("non-finite acquisition values")
                    out.append(int(left.pop(int(np.argmax(v)))))
                return out
            except Exception as e:  # noqa: BLE001
                log.warning("mfbo.select: acquisition failed (%s); ranking by posterior mean", e)
            mean = posterior_mean_std(model, _col(pool[left], 1.0))[0]
        return out + [int(left[i]) for i in np.argsort(-mean, kind="stable")[: n - len(out)]]

    def recommend(self, ctx: SearchContext) -> Recommendation:
        s, _ = self._ladder(ctx)
        X, sv, y = self._data(ctx, s)
        if len(y) < self.min_fit:
            rec = best_completed(ctx, self.name)
            rec.info.update(reason=f"fewer than {self.min_fit} finite trials; no GP")
            return rec
        k, T = ctx.space.dim, len(s) - 1
        per_rung = [int(np.sum(sv == v)) for v in s]
        if per_rung[T] < self.min_target:
            top = max(r for r in range(T + 1) if per_rung[r] > 0)
            best = best_target_trial(ctx, "target" if top == T else top)
            return Recommendation(best.mixture, float(best.value), info={  # type: ignore[union-attr, arg-type]
                "searcher": self.name, "source": "best_trial", "trial_id": best.trial_id,  # type: ignore[union-attr]
                "rung": top, "n_fit": int(len(y)), "n_fit_per_rung": per_rung,
                "reason": f"{per_rung[T]} finite target-rung trial(s), fewer than min_target={self.min_target}: "
                          f"the best measured trial of rung {top}, the highest with data"})
        with seeded_torch(ctx.rng(f"{self.name}.torch")):
            model = self._fit(ctx, X, sv, y)
            pool = np.vstack([X, self._sample(ctx, 5000, ctx.rng(f"{self.name}.recommend"))])
            x = minimize_mean(model, ctx.space, pool, self.num_restarts,
                              time.monotonic() + float(self.time_limit_s), fixed={k: 1.0})
            mean, std = posterior_mean_std(model, _col(x[None, :], 1.0))
        rec = Recommendation(Mixture.from_array(x, ctx.space.domains), float(-mean[0]), float(std[0]),
                             info={"searcher": self.name, "n_fit": int(len(y)), "rung": T,
                                   "n_fit_per_rung": per_rung, "source": "mf_gp_posterior_mean_at_target"})
        return guard(ctx, rec, self.fallback_to_best,
                     lambda z: float(posterior_mean_std(model, _col(z[None, :], 1.0))[1][0]))


def _col(P: np.ndarray, s: float) -> np.ndarray:
    """Append a constant fidelity column: (m, k) -> (m, k + 1)."""
    return np.hstack([P, np.full((len(P), 1), float(s))])


def _t(a: np.ndarray):
    import torch

    return torch.as_tensor(np.asarray(a, dtype=float), dtype=DTYPE)
