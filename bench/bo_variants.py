"""Variants of ``bo`` tried on the released tables and not kept (README: "Which searcher?"); not a bench.

Replay one beside the default with ``bench_defaults_all.py --compare LABEL=bench/bo_variants.py:CLASS``
(each keeps ``bo``'s name, so it draws the same random rows as ``bo``)::

    nice -n 10 python bench/bench_defaults_all.py --tables admire_ift_3b,admire_ift_7b --seeds 30 \\
        --searchers bo --compare mll=bench/bo_variants.py:WarpByLikelihood \\
        --compare loo=bench/bo_variants.py:WarpByLOO --compare logei=bench/bo_variants.py:AnalyticLogEI \\
        --compare ucb=bench/bo_variants.py:UCB --compare shift05=bench/bo_variants.py:Shift05

* ``WarpByLikelihood`` / ``WarpByLOO``: fit the GP with ``sqrt`` and with ``none`` and keep the one
  with the higher marginal likelihood (priors included) / leave-one-out predictive log likelihood.
* ``AnalyticLogEI``: analytic ``LogExpectedImprovement`` at the best observed value (pool mode,
  one point at a time), ``UCB``: ``UpperConfidenceBound`` with beta 4, instead of qLogNEI.
* ``Shift05``: sqrt(p + 0.05) whatever the trials (``sqrt_median`` shifts by their median weight).

All were measured against the plain ``sqrt`` warp (the default then), so the acquisition variants keep it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mixopt.search.bo import BOSearcher
from mixopt.search.gp import DTYPE, fit_gp


def _mll(model) -> float:
    """Exact marginal log likelihood (with the hyperparameter priors) of the model's training rows."""
    from gpytorch.mlls import ExactMarginalLogLikelihood

    model.train()
    try:
        with torch.no_grad():
            mll = ExactMarginalLogLikelihood(model.likelihood, model)
            return float(mll(model(*model.train_inputs), model.train_targets))
    finally:
        model.eval()


def _loo(model) -> float:
    """Mean leave-one-out predictive log density (Rasmussen & Williams eq. 5.12), up to a constant."""
    model.train()
    try:
        with torch.no_grad():
            out = model(*model.train_inputs)
            n = len(model.train_targets)
            K = out.covariance_matrix + model.likelihood.noise.reshape(()) * torch.eye(n, dtype=DTYPE)
            Ki = torch.linalg.inv(K)
            a = Ki @ (model.train_targets - out.mean)
            d = torch.diagonal(Ki)
            return float((0.5 * torch.log(d) - 0.5 * (a / d) ** 2 * d).mean())
    finally:
        model.eval()


@dataclass(frozen=True)
class WarpByLikelihood(BOSearcher):
    criterion: str = "mll"

    def _fit(self, ctx, X, y):
        best = None
        for warp in ("sqrt", "none"):
            m = fit_gp(X, -y, warp, self.max_fit_rows, ctx.seed, timeout_s=0.5 * float(self.time_limit_s),
                       refit=self.refit)
            v = _mll(m) if self.criterion == "mll" else _loo(m)
            if best is None or v > best[0]:
                best = (v, m)
        return best[1]


@dataclass(frozen=True)
class WarpByLOO(WarpByLikelihood):
    criterion: str = "loo"


@dataclass(frozen=True)
class AnalyticLogEI(BOSearcher):
    warp: str = "sqrt"

    def _acquisition(self, model, X, pending, seed):
        from botorch.acquisition import LogExpectedImprovement

        return LogExpectedImprovement(model, best_f=float(np.max(self._best)))

    def _fit(self, ctx, X, y):
        object.__setattr__(self, "_best", -np.asarray(y, dtype=float))
        return super()._fit(ctx, X, y)


@dataclass(frozen=True)
class UCB(BOSearcher):
    warp: str = "sqrt"

    def _acquisition(self, model, X, pending, seed):
        from botorch.acquisition import UpperConfidenceBound

        return UpperConfidenceBound(model, beta=4.0)


@dataclass(frozen=True)
class Shift05(BOSearcher):
    warp: str = "sqrt"

    def _fit(self, ctx, X, y):
        from mixopt.search import gp as G

        Xt, Yt = G._tensors(X, -y)
        k = Xt.shape[-1]
        spec = G._gp_spec(k, "sqrt", self.max_fit_rows, 0.05)
        return G._fit(spec, Xt, Yt, ctx.seed, 0.5 * float(self.time_limit_s), self.refit)
