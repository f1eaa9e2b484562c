"""Gaussian-process building blocks for the BO searchers; the only module that builds GPs.

Mixtures are compositional (points of the simplex), so the GP does not see raw weights: an
input warp maps each mixture to features first, then ``Normalize`` scales them to [0, 1]^k by
the range the warped weights can take on the simplex (:func:`simplex_bounds`), not the trials' range.
Warps (``warp=``):

* ``"none"``: raw weights.
* ``"sqrt"``: sqrt(p + eps), the Hellinger embedding (Euclidean distance = Hellinger distance).
* ``"clr"``: centred log-ratio log(p + eps) - mean_j log(p_j + eps) (Aitchison geometry).
* ``"sqrt_median"``: sqrt(p + m), m the fitted trials' median weight (:func:`warp_eps`; ``bo``'s default):
  about ``"sqrt"`` on sparse mixtures, closer to linear on dense ones. :func:`fit_gp` and
  :func:`fit_mf_gp` compute m; ``SimplexWarp`` and :func:`simplex_bounds` take it as ``eps``.

Kernel: Matern-5/2 with ARD lengthscales and BoTorch's dimension-scaled lognormal priors
(Hvarfner et al. 2024), a ``Standardize`` outcome transform, float64, ``fit_gpytorch_mll``.

Choice by measurement (``DEFAULT_WARP = "sqrt"``). Held-out Spearman of the posterior mean
of ``loss.pile_cc``, fit on n runs of ``regmix_1m_train.csv`` (n = 64: mean over 3 seeded
subsets, ``mixopt.analysis.predict``'s subset rule; hyperparameters fitted on <= 256 rows), tested on the
1M / 60M test tables (256 mixtures each); s/fit on a shared, loaded 2-core box, 1 torch thread:

    python -W ignore bench/bench_gp_warps.py --seeds 3

    warp    n   spearman 1m   spearman 60m   s/fit
    none    64  0.9467        0.9447        0.6
    none   512  0.9855        0.9841        1.9
    sqrt    64  0.9683        0.9629        0.4
    sqrt   512  0.9940        0.9904        1.7
    clr     64  0.8967        0.8894        0.5
    clr    512  0.9765        0.9696        1.7

(With ``Normalize`` bounds learned from the trials instead of :func:`simplex_bounds`, as before
2026-12: sqrt 0.9682 / 0.9630 at n = 64, the same; none 0.9280 / 0.9243, clr 0.8680 / 0.8603. The
fixed bounds matter most on dense mixtures: see :func:`simplex_bounds`.)

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

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP, SingleTaskMultiFidelityGP
from botorch.models.transforms.input import ChainedInputTransform, InputTransform, Normalize
from botorch.models.transforms.outcome import Standardize
from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior
from gpytorch.mlls import ExactMarginalLogLikelihood
from torch import Tensor

from mixopt.search.refit import FitCache, digest, last_refit_point, refit_points, warm_start_from  # noqa: F401

WARPS = ("none", "sqrt", "clr", "sqrt_median")
DEFAULT_WARP = "sqrt"
EPS = 1e-3          # added to weights before sqrt/log: a zero weight stays finite, gradients bounded
DTYPE = torch.float64
REFITS = ("always", "schedule")


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
        if self.warp in ("sqrt", "sqrt_median"):
            W = P.sqrt()
        else:
            L = P.log()
            W = L - L.mean(dim=-1, keepdim=True)
        out = X.clone()
        out[..., self.indices] = W
        return out


def simplex_bounds(warp: str, k: int, eps: float = EPS) -> Tensor:
    """(2, k): the range each warped weight can take anywhere on the simplex (not the trials' range).

    ``Normalize`` scales by these fixed bounds: learned bounds would stretch whatever range the trials
    happen to span to [0, 1], so on a table of dense mixtures (every weight between 0.01 and 0.2, as
    in ADMIRE's) small differences look far apart to the kernel and the GP chases noise.
    """
    if warp == "none":
        lo, hi = 0.0, 1.0
    elif warp in ("sqrt", "sqrt_median"):
        lo, hi = math.sqrt(eps), math.sqrt(1.0 + eps)
    else:   # clr: highest at p_j = 1; lowest at p_j = 0 with the rest spread evenly
        hi = (k - 1) / k * math.log((1.0 + eps) / eps)
        lo = (k - 1) / k * (math.log(eps) - math.log(1.0 / max(k - 1, 1) + eps))
    return torch.tensor([[lo] * k, [hi] * k], dtype=DTYPE)


def warp_eps(warp: str, X: np.ndarray) -> float:
    """The shift a warp adds to the weights before sqrt/log: ``EPS``, or for ``"sqrt_median"`` the
    median weight of the mixtures X (n, k) rounded to one significant digit, at least ``EPS``.

    sqrt(p + m) is linear in p for weights well below m and a square root above it: differences
    between weights far smaller than the typical one count little. On sparse mixtures (RegMix's
    Dirichlet draws, Olmix's swarm: median weight 0-0.002) it is the plain Hellinger warp; on dense
    ones (ADMIRE's pools: median 0.04) it keeps small weights from looking far apart.
    """
    if warp != "sqrt_median":
        return EPS
    X = np.asarray(X, dtype=float)
    m = float(np.median(X)) if X.size else 0.0
    return max(EPS, float(f"{m:.1g}"))


def _input_transform(d: int, k: int, warp: str, eps: float = EPS) -> ChainedInputTransform:
    return ChainedInputTransform(warp=SimplexWarp(warp, range(k), eps),
                                 normalize=Normalize(d, indices=list(range(k)), bounds=simplex_bounds(warp, k, eps)))


def _tensors(X: np.ndarray, y: np.ndarray) -> tuple[Tensor, Tensor]:
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float).reshape(-1)
    if X.ndim != 2 or len(X) != len(y) or len(y) < 2:
        raise ValueError(f"gp: X must be (n, k) and y (n,) with n >= 2, got {X.shape} and {y.shape}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise ValueError("gp: X and y must be finite; drop failed or nan rows first")
    return torch.as_tensor(X, dtype=DTYPE), torch.as_tensor(y, dtype=DTYPE).unsqueeze(-1)


MAXITER = 150      # L-BFGS iterations for the hyperparameters (converged to ~1e-3 in MLL by then)


def _mll_fit(model, timeout_s: float | None = None, ftol: float | None = None) -> None:
    """Maximize the marginal likelihood with L-BFGS-B from the model's current parameters, at most
    MAXITER iterations (a warm start is a model whose parameters were loaded first); ``ftol`` is
    L-BFGS-B's relative-reduction stopping tolerance (SciPy's default when None)."""
    opts: dict = {"options": {"maxiter": MAXITER} | ({"ftol": float(ftol)} if ftol else {})}
    if timeout_s is not None:
        opts["timeout_sec"] = max(float(timeout_s), 0.01)
    fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model), optimizer_kwargs=opts)


# ---- scheduled, warm-started refits (see mixopt.search.refit) ------------------------------------
# ``refit="schedule"``: hyperparameters are fitted at the points of ``refit_points`` only (warm-started
# per ``warm_start_from``, else from the priors' modes), and reused in between: the model
# on all n rows is built with the last point's hyperparameters, its posterior exact on all rows. Unless
# the marginal likelihood drifts: when the standardized one-step-ahead residuals of rows p..n-1 under
# those hyperparameters (one Cholesky) fail a chi-square test at level DRIFT_ALPHA, they are refitted at
# the first row count m that fails it (warm-started from the ones that failed), and the check repeats
# from m. All of it is a deterministic function of the rows, the seed and the options; cache keys name
# the row count, a hash of those rows and (drift refits) the fit the refit started from.
DRIFT_ALPHA = 1e-3
SCHEDULE_FTOL = 1e-6   # scheduled fits stop at this relative MLL reduction: about half the iterations of
#                        SciPy's default, the per-datum MLL within ~0.005 (17 domains, 10-60 runs)
CACHE = FitCache(256)
STATS = CACHE.stats          # hits / fits / drift_refits, for benchmarks and tests


def clear_cache() -> None:
    """Forget every cached GP fit (results do not change; the next fits take longer)."""
    CACHE.clear()


def _digest(Z: Tensor, Y: Tensor) -> str:
    return digest(Z.numpy(), Y.numpy())


@dataclass(frozen=True)
class _Spec:
    """How to build one kind of model on rows: ``build(Z, Y)``; ``tag`` names the configuration."""

    tag: tuple
    build: Callable[[Tensor, Tensor], object]
    max_fit_rows: int | None
    rescale: bool        # SingleTaskGP: lengthscales scaled by the Normalize coefficients' ratio on load (1 since
                         # the bounds are the simplex's) and kept >= 0.026


def _hyperparameters(model) -> dict:
    """The model's state minus anything tied to the training rows (transform statistics).

    Standardize mean/std are recomputed from all rows by the full model's constructor (the
    Normalize bounds are fixed), so only kernel and likelihood parameters are carried over.
    """
    return {k: v.detach().clone() for k, v in model.state_dict().items()
            if k.startswith(("covar_module", "likelihood", "mean_module"))}


def _coefficient(model) -> Tensor | None:
    tf = getattr(model, "input_transform", None)
    norm = getattr(tf, "normalize", None) if tf is not None else None
    return None if norm is None else norm.coefficient.detach().clone()


def _load(model, h: dict, rescale: bool) -> None:
    """Load hyperparameters ``h`` (from :func:`_fit_at`) into ``model``; with ``rescale`` the ARD
    lengthscales are scaled so the kernel is the same function of the warped weights should the
    model's Normalize range differ from the one they were fitted under (with the simplex's fixed
    bounds it does not: the ratio is 1 and what remains is the floor of 0.026)."""
    model.load_state_dict(h["state"], strict=False)
    coef = _coefficient(model)
    if rescale and h.get("coef") is not None and coef is not None and coef.shape == h["coef"].shape:
        ls = model.covar_module.lengthscale.detach()
        model.covar_module.lengthscale = (ls * h["coef"] / coef.clamp_min(1e-12)).clamp_min(0.026)


def _fit_at(spec: _Spec, Z: Tensor, Y: Tensor, p: int, seed: int, timeout_s: float | None,
            init: dict | None, ftol: float | None = None) -> dict:
    """Hyperparameters fitted on the first p rows (a seeded subset of max_fit_rows above that), from
    ``init`` or the priors' modes; torch's global RNG is neither used nor advanced."""
    rows = torch.arange(p)
    if spec.max_fit_rows is not None and p > spec.max_fit_rows:
        rows = torch.as_tensor(np.sort(np.random.default_rng(seed).choice(p, spec.max_fit_rows, replace=False)))
    model = spec.build(Z[rows], Y[rows])
    if init is not None:
        _load(model, init, spec.rescale)
    with torch.random.fork_rng():
        torch.manual_seed((int(seed) * 1_000_003 + p) % (2**31 - 1))
        _mll_fit(model, timeout_s, ftol)
    STATS["fits"] += 1
    return {"state": _hyperparameters(model), "coef": _coefficient(model)}


def _scheduled(spec: _Spec, Z: Tensor, Y: Tensor, p: int, seed: int, timeout_s: float | None) -> dict:
    """Hyperparameters at schedule point p (warm-started chain within p's octave)."""
    key = (spec.tag, int(seed), "sched", p, _digest(Z[:p], Y[:p]))
    h = CACHE.get(key)
    if h is not None:
        return h  # type: ignore[return-value]
    prev = warm_start_from(p)
    init = None if prev is None else _scheduled(spec, Z, Y, prev, seed, timeout_s)
    return CACHE.put(key, _fit_at(spec, Z, Y, p, seed, timeout_s, init, SCHEDULE_FTOL))  # type: ignore[return-value]


def _first_drift(model, start: int, alpha: float = DRIFT_ALPHA) -> int | None:
    """The smallest row count m > start at which rows start..m-1 fail the chi-square test of their
    standardized one-step-ahead residuals under the model's hyperparameters; None if none does.
    The model is in eval mode (train inputs transformed)."""
    from scipy.stats import chi2

    n = len(model.train_targets)
    if n <= start:
        return None
    with torch.no_grad():
        Xt = model.train_inputs[0]
        K = model.covar_module(Xt).to_dense() + model.likelihood.noise.reshape(()) * torch.eye(n, dtype=DTYPE)
        r = (model.train_targets - model.mean_module(Xt)).unsqueeze(-1)
        L, info = torch.linalg.cholesky_ex(K)
        if int(info) != 0:
            return None
        e = torch.linalg.solve_triangular(L, r, upper=False).reshape(-1).numpy()
    cum = np.cumsum(e[start:] ** 2)
    bad = np.flatnonzero(cum > chi2.ppf(1.0 - alpha, np.arange(1, len(cum) + 1)))
    return start + int(bad[0]) + 1 if len(bad) else None


def _fit(spec: _Spec, Z: Tensor, Y: Tensor, seed: int, timeout_s: float | None, refit: str):
    """The model on all rows of (Z, Y), eval mode, with hyperparameters per ``refit`` ("always":
    fitted now from the priors' modes; "schedule": see the comment block above)."""
    n = len(Y)
    if refit == "always":
        if spec.max_fit_rows is None or n <= spec.max_fit_rows:
            model = spec.build(Z, Y)
            _mll_fit(model, timeout_s)
            STATS["fits"] += 1
            model.eval()
            return model
        h = _fit_at(spec, Z, Y, n, seed, timeout_s, None)
    else:
        p = last_refit_point(n)
        h = _scheduled(spec, Z, Y, p, seed, timeout_s)
        hkey: tuple = ("sched", p)  # what h was fitted as: a drift refit's key names the fit it started from
        while p < n:        # drift checks on rows p..n-1, in order
            model = spec.build(Z, Y)
            _load(model, h, spec.rescale)
            model.eval()
            m = _first_drift(model, p)
            if m is None:
                return model
            hkey = ("drift", m, hkey)
            key = (spec.tag, int(seed), hkey, _digest(Z[:m], Y[:m]))
            hit = CACHE.get(key)
            if hit is None:
                STATS["drift_refits"] += 1
                hit = CACHE.put(key, _fit_at(spec, Z, Y, m, seed, timeout_s, h, SCHEDULE_FTOL))
            h, p = hit, m  # type: ignore[assignment]
    model = spec.build(Z, Y)
    _load(model, h, spec.rescale)
    model.eval()
    return model


def _gp_spec(k: int, warp: str, max_fit_rows: int | None, eps: float = EPS) -> _Spec:
    def build(Xs: Tensor, Ys: Tensor) -> SingleTaskGP:
        return SingleTaskGP(Xs, Ys, covar_module=get_covar_module_with_dim_scaled_prior(k, use_rbf_kernel=False),
                            input_transform=_input_transform(k, k, warp, eps), outcome_transform=Standardize(1))

    return _Spec(("gp", k, warp, max_fit_rows, eps), build, max_fit_rows, True)


def fit_gp(X: np.ndarray, y: np.ndarray, warp: str = DEFAULT_WARP, max_fit_rows: int | None = 256,
           seed: int = 0, timeout_s: float | None = None, refit: str = "always") -> SingleTaskGP:
    """Fit a float64 ``SingleTaskGP`` on mixtures X (n, k) and objective y (n,); eval mode.

    ``max_fit_rows``: above this many rows, hyperparameters are fitted on a seeded random
    subset of that size and reused for the exact posterior on all rows (keeps a 512-row fit
    around a second on two cores; ``None`` fits on all rows). ``timeout_s`` stops L-BFGS early
    (the hyperparameters reached so far are kept). ``refit``: ``"always"`` fits the
    hyperparameters on these rows now; ``"schedule"`` (searchers: rows in trial order) reuses
    those of the last schedule point (:func:`mixopt.search.refit.refit_points`), warm-started and
    cached, refitting early when the marginal likelihood drifts (see the comment above ``DRIFT_ALPHA``).
    """
    if refit not in REFITS:
        raise ValueError(f"gp refit {refit!r}; allowed: {', '.join(REFITS)}")
    Xt, Yt = _tensors(X, y)
    return _fit(_gp_spec(Xt.shape[-1], warp, max_fit_rows, warp_eps(warp, X)), Xt, Yt, seed, timeout_s, refit)


def fit_mf_gp(X: np.ndarray, s: np.ndarray, y: np.ndarray, warp: str = DEFAULT_WARP, seed: int = 0,
              timeout_s: float | None = None, refit: str = "always",
              max_fit_rows: int | None = 256) -> SingleTaskMultiFidelityGP:
    """Fit a ``SingleTaskMultiFidelityGP`` on mixtures X (n, k), fidelity s (n,) in [0, 1], y (n,).

    The model's inputs are ``[X, s]`` (n, k + 1); the fidelity is the last column
    (``data_fidelities=[k]``, a downsampling kernel), and is not warped. Eval mode.
    ``refit``, ``seed``, ``timeout_s`` and ``max_fit_rows`` as in :func:`fit_gp`.
    """
    if refit not in REFITS:
        raise ValueError(f"gp refit {refit!r}; allowed: {', '.join(REFITS)}")
    Xt, Yt = _tensors(X, y)
    k = Xt.shape[-1]
    st = torch.as_tensor(np.asarray(s, dtype=float).reshape(-1, 1), dtype=DTYPE)
    Z = torch.cat([Xt, st], dim=-1)                                     # (n, k + 1)

    eps = warp_eps(warp, X)

    def build(Zs: Tensor, Ys: Tensor) -> SingleTaskMultiFidelityGP:
        return SingleTaskMultiFidelityGP(Zs, Ys, data_fidelities=[k],
                                         input_transform=_input_transform(k + 1, k, warp, eps),
                                         outcome_transform=Standardize(1))

    return _fit(_Spec(("mf_gp", k, warp, max_fit_rows, eps), build, max_fit_rows, False), Z, Yt, seed, timeout_s,
                refit)


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
    """``make_surrogate("gp")``: fit/predict the posterior mean of :func:`fit_gp`.

    ``refit="always"`` (default: ``mixopt predict``) fits the hyperparameters on the rows given;
    ``"schedule"`` (a searcher refitting after each trial, rows in trial order) reuses cached,
    scheduled fits (:mod:`mixopt.search.refit`). ``time_limit_s`` stops each hyperparameter fit
    early (a per-step time budget; results then depend on the machine). ``predict_std`` gives the
    posterior std as well, ``sample`` a joint posterior draw.
    """

    name = "gp"
    min_rows = 2
    has_std = True

    def __init__(self, seed: int = 0, warp: str = DEFAULT_WARP, max_fit_rows: int | None = 256,
                 refit: str = "always", time_limit_s: float | None = None) -> None:
        from mixopt.core.errors import ConfigError

        if warp not in WARPS:
            raise ConfigError(f"surrogate gp.warp: {warp!r}; allowed: {', '.join(WARPS)}")
        if refit not in REFITS:
            raise ConfigError(f"surrogate gp.refit: {refit!r}; allowed: {', '.join(REFITS)}")
        if max_fit_rows is not None and (isinstance(max_fit_rows, bool) or not isinstance(max_fit_rows, int)
                                         or max_fit_rows < 2):
            raise ConfigError(f"surrogate gp.max_fit_rows: {max_fit_rows!r} must be an integer >= 2 or null")
        if time_limit_s is not None and (isinstance(time_limit_s, bool) or not isinstance(time_limit_s, (int, float))
                                         or not time_limit_s > 0):
            raise ConfigError(f"surrogate gp.time_limit_s: {time_limit_s!r} must be a number > 0 or null")
        self.seed, self.warp, self.max_fit_rows, self.refit = int(seed), warp, max_fit_rows, refit
        self.time_limit_s = time_limit_s
        self.model = None

    def fit(self, X: np.ndarray, y: np.ndarray) -> GPSurrogate:
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            self.model = fit_gp(X, y, self.warp, self.max_fit_rows, self.seed, self.time_limit_s, self.refit)
        return self

    def predict_std(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and std of the objective at X (m, k): (m,), (m,)."""
        if self.model is None:
            raise RuntimeError("surrogate gp: call fit() before predict()")
        return posterior_mean_std(self.model, X)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.predict_std(X)[0]

    def sample(self, X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One draw of the latent objective at X (m, k) from the joint posterior (Thompson). (m,)."""
        if self.model is None:
            raise RuntimeError("surrogate gp: call fit() before sample()")
        Xt = torch.as_tensor(np.asarray(X, dtype=float), dtype=DTYPE)
        with torch.no_grad():
            mvn = self.model.posterior(Xt).mvn
            mean = mvn.mean.reshape(-1).numpy()
            cov = mvn.covariance_matrix.numpy()
        cov = 0.5 * (cov + cov.T)
        jitter = 1e-10 * max(float(np.mean(np.diag(cov))), 1e-30)
        for _ in range(6):
            try:
                L = np.linalg.cholesky(cov + jitter * np.eye(len(cov)))
                break
            except np.linalg.LinAlgError:
                jitter *= 100.0
        else:
            return mean + np.sqrt(np.clip(np.diag(cov), 0, None)) * rng.standard_normal(len(mean))
        return mean + L @ rng.standard_normal(len(mean))
