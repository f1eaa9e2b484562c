"""Screen on merged scores, train the most promising for real (searcher ``merge_screen``).

A study with model-merging proxies (``merge:`` in the config, :mod:`mixopt.run.experts`) scores
many mixtures by merging its domain experts before it trains anything; the context holds them as
``ctx.merged``. This wrapper turns them into proposals: ``suggest`` returns the best merged mixtures
that no trial has yet (none within ``min_distance`` in L1 of a trial's mixture, or of another
proposal), at most ``train_top`` of them over the study, then hands over to the wrapped ``searcher``
(any registered searcher; its proposals see the screened trials like any other). With no merged scores
it is the wrapped searcher.

``recommend``:

* ``inner`` (default): the wrapped searcher's recommendation (it sees the screened trials too);
* ``merged``: the mean of the ``top_k`` best merged mixtures, RegMix's averaging of its top
  predictions with merged scores in place of the regression's (arXiv 2407.01492, section 3); the
  predicted objective is their mean merged objective. Not the default: merged scores favour
  concentrated mixtures, and on the README's 18-domain benchmark this recommendation lost to
  uniform and natural at 10x by 7 paired standard errors;
* ``trained``: the best trained trial (measured, at the proxy's size).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mixopt.core.errors import ConfigError
from mixopt.core.mixture import Mixture
from mixopt.search.base import Proposal, Recommendation, SearchContext, best_completed
from mixopt.search.wrappers import _build, _positive_int, with_pending

RECOMMEND = ("merged", "trained", "inner")


@dataclass(frozen=True)
class MergeScreen:
    searcher: Any = "regmix"
    options: dict = field(default_factory=dict)
    train_top: int = 8
    top_k: int = 8
    min_distance: float = 0.02
    recommend_from: str = "inner"
    name: str = "merge_screen"

    def __post_init__(self) -> None:
        _positive_int(self.name, "train_top", self.train_top, 0)
        _positive_int(self.name, "top_k", self.top_k, 1)
        if not isinstance(self.min_distance, (int, float)) or not 0 <= self.min_distance < 2:
            raise ConfigError(f"search.options.min_distance: {self.min_distance!r} must be in [0, 2) (L1, {self.name})")
        if self.recommend_from not in RECOMMEND:
            raise ConfigError(f"search.options.recommend_from: {self.recommend_from!r}; allowed: {', '.join(RECOMMEND)}")
        object.__setattr__(self, "inner", _build(self.name, "searcher", self.searcher, self.options))

    def _ranked(self, ctx: SearchContext) -> np.ndarray:
        """Merged mixtures (m, k), best merged objective first."""
        X, y = ctx.merged_xy()
        return X[np.argsort(y, kind="stable")]

    def _screened(self, ctx: SearchContext, n: int) -> list[Proposal]:
        """Up to n of the best merged mixtures no trial (or chosen one) is near; at most train_top in all."""
        taken = ctx.all_x()
        merged, _ = ctx.merged_xy()
        done = sum(1 for x in taken if (np.abs(merged - x).sum(1) <= 1e-9).any())  # screened ones trained so far
        room = min(n, self.train_top - done)
        out: list[np.ndarray] = []
        for m in self._ranked(ctx):
            if len(out) >= room:
                break
            if all(np.abs(m - x).sum() > self.min_distance for x in [*taken, *out]):
                out.append(m)
        return Proposal.from_array(np.array(out).reshape(-1, ctx.space.dim), ctx.space.domains)

    def suggest(self, ctx: SearchContext, n: int) -> list[Proposal]:
        first = self._screened(ctx, n) if len(ctx.merged) else []
        if len(first) >= n:
            return first[:n]
        return first + list(self.inner.suggest(with_pending(ctx, first), n - len(first)))

    def recommend(self, ctx: SearchContext) -> Recommendation:
        X, y = ctx.merged_xy()
        if self.recommend_from == "merged" and len(y):
            top = np.argsort(y, kind="stable")[:self.top_k]
            x = ctx.space.project(X[top].mean(0))
            return Recommendation(Mixture.from_array(x, ctx.space.domains), float(np.mean(y[top])),
                                  float(np.std(y[top])), {"searcher": self.name, "source": "merged", "top_k": len(top),
                                                          "n_merged": int(len(y))})
        if self.recommend_from == "trained":
            return best_completed(ctx, self.name)
        rec = self.inner.recommend(ctx)
        return dataclasses.replace(rec, info={**rec.info, "via": self.name})
