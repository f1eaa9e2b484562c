"""RegMix (Liu et al. 2024): regress the objective on mixture weights, then simulate.

Fit a surrogate (LightGBM or linear) on completed trials, score a large pool of RegMix
Dirichlet draws (:func:`mixopt.search.dirichlet.sample`) and take the **average of the top-k**
predicted mixtures as the recommendation (the paper simulates 1M mixtures and averages the
top 100; we default to 20,000 draws, which scores in about a second with LightGBM on one
thread). ``suggest`` proposes that average first, then the best-predicted pool points that are
at least ``min_distance`` (L1) away from every earlier trial (any state, pending included) and
from each other, so a batch is not n copies of one point. Until ``min_fit`` finite trials
exist it explores with plain Dirichlet draws.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mixopt.core.errors import ConfigError
from mixopt.core.mixture import Mixture
from mixopt.search.base import Proposal, Recommendation, SearchContext, best_completed
from mixopt.search.dirichlet import REGMIX_STRENGTHS, sample, validate_sampling_options
from mixopt.search.pool import fresh_rows, random_rows, spread
from mixopt.search.surrogates import available as surrogate_names
from mixopt.search.surrogates import make_surrogate


def _int_option(name: str, key: str, v: object, low: int) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
        raise ConfigError(f"search.options.{key}: {v!r} must be an integer >= {low} (searcher {name!r})")


@dataclass(frozen=True)
class RegMixSearcher:
    """Options: surrogate (lightgbm|linear), surrogate_options, n_candidates, top_k, min_fit
    (default 8 for lightgbm, k + 1 for linear), min_distance (L1, in [0, 2]), strengths,
    max_tries."""

    name: str = "regmix"
    surrogate: str = "lightgbm"
    surrogate_options: dict = field(default_factory=dict)
    n_candidates: int = 20_000
    top_k: int = 100
    min_fit: int | None = None
    min_distance: float = 0.05
    strengths: tuple[float, ...] = REGMIX_STRENGTHS
    max_tries: int = 20

    def __post_init__(self) -> None:
        if self.surrogate not in surrogate_names():
            raise ConfigError(f"search.options.surrogate: {self.surrogate!r}; allowed: "
                              f"{', '.join(surrogate_names())}")
        if not isinstance(self.surrogate_options, dict):
            raise ConfigError(f"search.options.surrogate_options: {self.surrogate_options!r} must be a mapping")
        make_surrogate(self.surrogate, 0, **self.surrogate_options)  # option errors surface now
        _int_option(self.name, "n_candidates", self.n_candidates, 1)
        _int_option(self.name, "top_k", self.top_k, 1)
        if self.min_fit is not None:
            _int_option(self.name, "min_fit", self.min_fit, 2)
        if isinstance(self.min_distance, bool) or not isinstance(self.min_distance, (int, float)) \
                or not 0 <= self.min_distance <= 2:
            raise ConfigError(f"search.options.min_distance: {self.min_distance!r} must be a number "
                              f"in [0, 2] (L1 distance between mixtures; searcher {self.name!r})")
        validate_sampling_options(self.name, self.strengths, self.max_tries)
        object.__setattr__(self, "strengths", tuple(float(v) for v in self.strengths))

    # ---- helpers -------------------------------------------------------------------------
    def _min_fit(self, k: int) -> int:
        if self.min_fit is not None:
            return int(self.min_fit)
        return k + 1 if self.surrogate == "linear" else 8

    def _simulate(self, ctx: SearchContext, salt: str):
        """Fit on completed trials, score a pool: (pool (N, k) sorted by prediction, preds, model)."""
        X, y = ctx.completed_xy()
        model = make_surrogate(self.surrogate, ctx.seed, **self.surrogate_options).fit(X, y)
        pool = sample(ctx.space, self.n_candidates, ctx.rng(salt), self.strengths, self.max_tries)
        pred = model.predict(pool)                                        # (N,)
        order = np.argsort(pred, kind="stable")
        return pool[order], pred[order], model

    def _top_k_average(self, ctx: SearchContext, pool: np.ndarray) -> np.ndarray:
        return ctx.space.project(pool[: min(self.top_k, len(pool))].mean(axis=0))   # (k,)

    # ---- protocol ------------------------------------------------------------------------
    def suggest(self, ctx: SearchContext, n: int) -> list[Proposal]:
        if n <= 0:
            return []
        _, y = ctx.completed_xy()
        if len(y) < self._min_fit(ctx.space.dim):
            X = sample(ctx.space, n, ctx.rng(f"{self.name}.explore"), self.strengths, self.max_tries)
            return Proposal.from_array(X, ctx.space.domains)
        pool, _, _ = self._simulate(ctx, f"{self.name}.suggest")
        cands = np.vstack([self._top_k_average(ctx, pool)[None, :], pool])  # (N + 1, k)
        chosen = spread(cands, ctx.all_x(), n, self.min_distance)
        return Proposal.from_array(chosen, ctx.space.domains)

    def recommend(self, ctx: SearchContext) -> Recommendation:
        _, y = ctx.completed_xy()
        if len(y) < self._min_fit(ctx.space.dim):
            rec = best_completed(ctx, self.name)
            rec.info.update(reason=f"fewer than {self._min_fit(ctx.space.dim)} finite trials; no fit")
            return rec
        pool, _, model = self._simulate(ctx, f"{self.name}.recommend")
        x = self._top_k_average(ctx, pool)
        m = Mixture.from_array(x, ctx.space.domains)
        pred = float(model.predict(m.as_array(ctx.space.domains)[None, :])[0])
        return Recommendation(m, pred, info={
            "searcher": self.name, "surrogate": self.surrogate, "n_fit": int(len(y)),
            "top_k": int(min(self.top_k, len(pool))), "n_candidates": int(len(pool))})

    def select(self, ctx: SearchContext, pool: np.ndarray, n: int) -> list[int]:
        """Rows of ``pool`` (m, k) to evaluate next: the surrogate's best predictions first (the
        pool replaces the Dirichlet draws, so ``n_candidates``/``top_k`` play no part); rows equal
        to an earlier trial are skipped; seeded random rows before ``min_fit`` finite trials."""
        X, y = ctx.completed_xy()
        if len(y) < self._min_fit(ctx.space.dim):
            return random_rows(ctx, pool, n, f"{self.name}.select")
        idx = fresh_rows(ctx, pool)
        model = make_surrogate(self.surrogate, ctx.seed, **self.surrogate_options).fit(X, y)
        pred = model.predict(np.asarray(pool, dtype=float)[idx])         # (len(idx),)
        return idx[np.argsort(pred, kind="stable")][:n].tolist()
