"""Gaussian-process building blocks for the BO searchers; the only module that builds GPs.

Mixtures are compositional (points of the simplex), so the GP does not see raw weights: an
input warp maps each mixture to features first, then ``Normalize`` scales them to [0, 1]^k.
Warps (``warp=``):

* ``"none"``: raw weights.
* ``"sqrt"``: sqrt(p + eps), the Hellinger embedding (Euclidean distance = Hellinger distance).
* ``"clr"``: centred log-ratio log(p + eps) - mean_j log(p_j + eps) (Aitchison geometry).

Kernel: Matern-5/2 with ARD lengthscales and BoTorch's dimension-scaled lognormal priors
(Hvarfner et al. 2024), a ``Standardize`` outcome transform, float64, ``fit_gpytorch_mll``.

Choice by measurement (``DEFAULT_WARP = "sqrt"``). Held-out Spearman of the posterior mean
of ``loss.pile_cc``, fit on n runs of ``regmix_1m_train.csv`` (n = 64: mean over 3 seeded
subsets, ``mixopt.analysis.predict``'s subset rule; hyperparameters fitted on <= 256 rows), tested on the
1M / 60M test tables (256 mixtures each); s/fit on a shared, loaded 2-core box, 1 torch thread:

    python -W ignore bench/bench_gp_warps.py --seeds 3

    warp    n   spearman 1m   spearman 60m   s/fit
    none    64  0.9280        0.9243         3.2
    none   512  0.9853        0.9837        13.5
    sqrt    64  0.9682        0.9630         4.9
    sqrt   512  0.9938        0.9903         2.4
    clr     64  0.8680        0.8603         1.0
    clr    512  0.9612        0.9543         4.4

CLR (eps = 1e-3) exaggerates differences between tiny weights (log 0.001 vs log 0.01 is as
far as 0.1 vs 1), which RegMix's sparse Dirichlet mixtures are full of; the Hellinger warp
keeps them close and wins at both sizes.

Example:
    >>> import numpy as np
    >>> X = np.random.default_rng(0).dirichlet(np.ones(3), 20); y = X[:, 0] ** 2
    >>> gp = fit_gp(X, y)
    >>> mean, std = posterior_mean_std(gp, X[:2])
    >>> mean.shape, std.shape
    ((2,), (2,))
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP, SingleTaskMultiFidelityGP
from botorch.models.transforms.input import ChainedInputTransform, InputTransform, Normalize
from botorch.models.transforms.outcome import Standardize
from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior
from gpytorch.mlls import ExactMarginalLogLikelihood
from torch import Tensor

WARPS = ("none", "sqrt", "clr")
DEFAULT_WARP = "sqrt"
EPS = 1e-3          # added to weights before sqrt/log: a zero weight stays finite, gradients bounded
DTYPE = torch.float64


class SimplexWarp(InputTransform):
    """Warp the mixture columns ``indices`` of X (other columns, e.g. a fidelity, pass through).

    X: (..., n, d) -> (..., n, d). Not reversible; applied on train, eval and fantasize.
    """

    def __init__(self, warp: str, indices: Sequence[int], eps: float = EPS) -> None:
        super().__init__()
        if warp not in WARPS:
            raise ValueError(f"gp warp {warp!r}; allowed: {', '.join(WARPS)}")
        self.warp, self.eps = warp, float(eps)
        self.register_buffer("indices", torch.as_tensor(list(indices), dtype=torch.long))
        self.transform_on_train = self.transform_on_eval = self.transform_on_fantasize = True

    def transform(self, X: Tensor) -> Tensor:
        if self.warp == "none":
            return X
        P = X[..., self.indices].clamp_min(0.0) + self.eps          # (..., n, k)
        if self.warp == "sqrt":
            W = P.sqrt()
        else:
            L = P.log()
            W = L - L.mean(dim=-1, keepdim=True)
        out = X.clone()
        out[..., self.indices] = W
        return out


def _input_transform(d: int, k: int, warp: str) -> ChainedInputTransform:
    return ChainedInputTransform(warp=SimplexWarp(warp, range(k)), normalize=Normalize(d))


def _tensors(X: np.ndarray, y: np.ndarray) -> tuple[Tensor, Tensor]:
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float).reshape(-1)
    if X.ndim != 2 or len(X) != len(y) or len(y) < 2:
        raise ValueError(f"gp: X must be (n, k) and y (n,) with n >= 2, got {X.shape} and {y.shape}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise ValueError("gp: X and y must be finite; drop failed or nan rows first")
    return torch.as_tensor(X, dtype=DTYPE), torch.as_tensor(y, dtype=DTYPE).unsqueeze(-1)


MAXITER = 150      # L-BFGS iterations for the hyperparameters (converged to ~1e-3 in MLL by then)


def _mll_fit(model, timeout_s: float | None = None) -> None:
    """Maximize the marginal likelihood with L-BFGS-B, at most MAXITER iterations."""
    opts = {"options": {"maxiter": MAXITER}}
    if timeout_s is not None:
        opts["timeout_sec"] = max(float(timeout_s), 0.01)
    fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model), optimizer_kwargs=opts)


def fit_gp(X: np.ndarray, y: np.ndarray, warp: str = DEFAULT_WARP, max_fit_rows: int | None = 256,
           seed: int = 0, timeout_s: float | None = None) -> SingleTaskGP:
    """Fit a float64 ``SingleTaskGP`` on mixtures X (n, k) and objective y (n,); eval mode.

    ``max_fit_rows``: above this many rows, hyperparameters are fitted on a seeded random
    subset of that size and reused for the exact posterior on all rows (keeps a 512-row fit
    around a second on two cores; ``None`` fits on all rows). ``timeout_s`` stops L-BFGS early
    (the hyperparameters reached so far are kept).
    """
    Xt, Yt = _tensors(X, y)
    k = Xt.shape[-1]

    def build(Xs: Tensor, Ys: Tensor) -> SingleTaskGP:
        return SingleTaskGP(Xs, Ys, covar_module=get_covar_module_with_dim_scaled_prior(k, use_rbf_kernel=False),
                            input_transform=_input_transform(k, k, warp), outcome_transform=Standardize(1))

    n = len(Yt)
    if max_fit_rows is not None and n > max_fit_rows:
        idx = torch.as_tensor(np.sort(np.random.default_rng(seed).choice(n, max_fit_rows, replace=False)))
        sub = build(Xt[idx], Yt[idx])
        _mll_fit(sub, timeout_s)
        model = build(Xt, Yt)
        model.load_state_dict(_hyperparameters(sub), strict=False)
        model.eval()
        return model
    model = build(Xt, Yt)
    _mll_fit(model, timeout_s)
    model.eval()
    return model


def _hyperparameters(model) -> dict:
    """The model's state minus anything tied to the training rows (transform statistics).

    Normalize bounds and Standardize mean/std are recomputed from all rows by the full
    model's constructor, so only kernel and likelihood parameters are carried over.
    """
    return {k: v for k, v in model.state_dict().items()
            if k.startswith(("covar_module", "likelihood", "mean_module"))}


def fit_mf_gp(X: np.ndarray, s: np.ndarray, y: np.ndarray, warp: str = DEFAULT_WARP) -> SingleTaskMultiFidelityGP:
    """Fit a ``SingleTaskMultiFidelityGP`` on mixtures X (n, k), fidelity s (n,) in [0, 1], y (n,).

    The model's inputs are ``[X, s]`` (n, k + 1); the fidelity is the last column
    (``data_fidelities=[k]``, a downsampling kernel), and is not warped. Eval mode.
    """
    Xt, Yt = _tensors(X, y)
    k = Xt.shape[-1]
    st = torch.as_tensor(np.asarray(s, dtype=float).reshape(-1, 1), dtype=DTYPE)
    Z = torch.cat([Xt, st], dim=-1)                                     # (n, k + 1)
    bounds = torch.zeros(2, k + 1, dtype=DTYPE)
    bounds[1] = 1.0
    tf = ChainedInputTransform(warp=SimplexWarp(warp, range(k)),
                               normalize=Normalize(k + 1, indices=list(range(k))))
    model = SingleTaskMultiFidelityGP(Z, Yt, data_fidelities=[k], input_transform=tf,
                                      outcome_transform=Standardize(1))
    _mll_fit(model)
    model.eval()
    return model


def posterior_mean_std(model, X: np.ndarray, batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and std of the latent objective at X (m, d), in y's units. (m,), (m,)."""
    Xt = torch.as_tensor(np.asarray(X, dtype=float), dtype=DTYPE)
    means, stds = [], []
    with torch.no_grad():
        for i in range(0, len(Xt), batch):
            post = model.posterior(Xt[i:i + batch])
            means.append(post.mean.reshape(-1))
            stds.append(post.variance.clamp_min(0).sqrt().reshape(-1))
    if not means:
        return np.zeros(0), np.zeros(0)
    return torch.cat(means).numpy(), torch.cat(stds).numpy()


class GPSurrogate:
    """``make_surrogate("gp")``: fit/predict the posterior mean of :func:`fit_gp`."""

    name = "gp"
    min_rows = 2

    def __init__(self, seed: int = 0, warp: str = DEFAULT_WARP, max_fit_rows: int | None = 256) -> None:
        if warp not in WARPS:
            from mixopt.core.errors import ConfigError
            raise ConfigError(f"surrogate gp.warp: {warp!r}; allowed: {', '.join(WARPS)}")
        self.seed, self.warp, self.max_fit_rows = int(seed), warp, max_fit_rows
        self.model = None

    def fit(self, X: np.ndarray, y: np.ndarray) -> GPSurrogate:
        torch.manual_seed(self.seed)
        self.model = fit_gp(X, y, self.warp, self.max_fit_rows, self.seed)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("surrogate gp: call fit() before predict()")
        return posterior_mean_std(self.model, X)[0]
