"""Regression surrogates mapping mixture weights to an objective (RegMix, Liu et al. 2024).

``make_surrogate(name, seed, **opts)`` returns an object with ``fit(X, y)`` and ``predict(X)``,
X of shape (n, k) (mixture weights), y of shape (n,). Names:

* ``lightgbm``: RegMix's regressor (sail-sg/regmix ``regression.ipynb``): gbdt, objective
  regression, 1000 trees, learning rate 0.01, 31 leaves. RegMix's notebook early-stops on the
  *test* set; we do not (no held-out data is touched). One change, chosen by 5-fold CV on the
  training table: ``min_child_samples="auto"`` = clip(n // 10, 5, 20), which is LightGBM's 20
  at n >= 200 and lets trees split at all with 64 runs.
* ``linear``: RegMix's linear regression on the weights, fitted on log(y) when every y > 0
  (``target="auto"``; better in CV on the RegMix runs), with optional ridge ``alpha``.
* ``gp``: the posterior mean of a Gaussian process on warped weights (:mod:`mixopt.search.gp`;
  options ``warp``, ``max_fit_rows``, ``refit``, ``time_limit_s``); BoTorch is imported only when built.
  ``bo`` is the same model under the ``bo`` searcher's name (its GP, fitted on the objective, with
  its default warp ``sqrt_median`` unless ``warp`` is given).
* ``auto`` (RegMix's default): the GP below ``switch_at`` rows (default 128), LightGBM from
  there. Held-out Spearman (``mixopt predict``, fit on n runs of ``regmix_1m_train.csv``, test
  ``regmix_1m_test.csv``, ``loss.pile_cc``, mean of 3 seeded subsets; mixing law for reference):

      n      gp      lightgbm   mixing_law
      32     0.964   0.893      0.893
      64     0.968   0.938      0.944
      128    0.984   0.973      0.950
      256    0.994   0.984      0.961
      512    0.994   0.990      0.964   (all rows, one fit)

  The GP wins most where runs are few; from ~128 runs the gap is under 0.01 while LightGBM fits
  in a fraction of the time and is RegMix's own regressor. Other options go to LightGBM, except the GP's
  ``warp``, ``max_fit_rows``, ``refit`` and ``time_limit_s``.
* ``mixing_law``: the mixing law ``c + k exp(t . p)`` of :mod:`mixopt.search.mixing_law` (options
  ``restarts``, ``ridge``, ``f_scale``): the ``mixing_law`` searcher's model.

Surrogates that know their uncertainty (``gp``, ``bo``, ``auto`` while it is the GP,
``mixing_law``) also have ``predict_std(X) -> (mean, std)`` and ``has_std`` true.
"""

from __future__ import annotations

import inspect

import numpy as np

from mixopt.core.errors import ConfigError, UserError


class NotEnoughDataError(UserError):
    """Too few (finite) rows to fit a surrogate."""


def _check_xy(name: str, X: np.ndarray, y: np.ndarray, min_rows: int) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float).reshape(-1)
    if X.ndim != 2 or X.shape[0] != y.shape[0]:
        raise ValueError(f"surrogate {name}: X must be (n, k) and y (n,), got {X.shape} and {y.shape}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise ValueError(f"surrogate {name}: X and y must be finite; drop failed or nan rows first")
    if X.shape[0] < min_rows:
        raise NotEnoughDataError(
            f"surrogate {name}: needs at least {min_rows} finite rows to fit, got {X.shape[0]}")
    return X, y


# LightGBM parameters a user may tune through surrogate_options (numbers only)
_LGBM_EXTRA = {"max_depth", "subsample", "subsample_freq", "colsample_bytree", "reg_alpha", "reg_lambda",
               "min_split_gain", "min_child_weight", "max_bin"}


class LightGBMSurrogate:
    """LightGBM regressor with RegMix's settings; deterministic for a given seed."""

    name = "lightgbm"
    min_rows = 2

    def __init__(self, seed: int = 0, n_estimators: int = 1000, learning_rate: float = 0.01,
                 num_leaves: int = 31, min_child_samples: int | str = "auto", n_jobs: int = 1,
                 **extra: object) -> None:
        if min_child_samples != "auto" and (not isinstance(min_child_samples, int) or min_child_samples < 1):
            raise ConfigError(f"surrogate lightgbm.min_child_samples: {min_child_samples!r} must be "
                              "'auto' or an integer >= 1")
        for key, val, kind in (("n_estimators", n_estimators, int), ("num_leaves", num_leaves, int),
                               ("n_jobs", n_jobs, int), ("learning_rate", learning_rate, float)):
            if isinstance(val, bool) or not isinstance(val, (int, float) if kind is float else int) or val <= 0:
                raise ConfigError(f"surrogate lightgbm.{key}: {val!r} must be a positive "
                                  f"{'number' if kind is float else 'integer'}")
        fixed = {"boosting_type", "objective", "random_state", "seed", "verbose", "deterministic", "force_row_wise"}
        for key, val in extra.items():
            if key in fixed:
                raise ConfigError(f"surrogate lightgbm.{key}: set by mixopt (RegMix settings, study seed); "
                                  "remove it from surrogate_options")
            if key not in _LGBM_EXTRA:
                raise ConfigError(f"surrogate lightgbm.{key}: unknown option; allowed: n_estimators, learning_rate, "
                                  f"num_leaves, min_child_samples, n_jobs, {', '.join(sorted(_LGBM_EXTRA))}")
            if isinstance(val, bool) or not isinstance(val, (int, float)):
                raise ConfigError(f"surrogate lightgbm.{key}: {val!r} must be a number")
        self.params = dict(boosting_type="gbdt", objective="regression", n_estimators=n_estimators,
                           learning_rate=learning_rate, num_leaves=num_leaves, random_state=seed,
                           n_jobs=n_jobs, verbose=-1, deterministic=True, force_row_wise=True,
                           **extra)
        self.min_child_samples = min_child_samples
        self.model = None

    def fit(self, X: np.ndarray, y: np.ndarray) -> LightGBMSurrogate:
        import lightgbm as lgb

        X, y = _check_xy(self.name, X, y, self.min_rows)
        mcs = self.min_child_samples
        if mcs == "auto":
            mcs = int(np.clip(len(y) // 10, 5, 20))
        # min_child_samples must leave room for a split; LightGBM silently fits a constant otherwise
        mcs = max(1, min(int(mcs), len(y) // 2))
        self.model = lgb.LGBMRegressor(min_child_samples=mcs, **self.params)
        self.model.fit(X, y)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("surrogate lightgbm: call fit() before predict()")
        return np.asarray(self.model.predict(np.asarray(X, dtype=float)), dtype=float)


class LinearSurrogate:
    """Least squares (ridge if ``alpha > 0``) of y, or log y, on the mixture weights.

    With weights on the simplex the intercept and the k weights are collinear; sklearn's
    minimum-norm least squares handles that, so k + 1 rows are not strictly required, but
    fewer than 2 rows cannot be fitted at all.
    """

    name = "linear"
    min_rows = 2

    def __init__(self, seed: int = 0, alpha: float = 0.0, target: str = "auto") -> None:
        if target not in ("auto", "log", "raw"):
            raise ConfigError(f"surrogate linear.target: {target!r}; allowed: auto, log, raw")
        if not isinstance(alpha, (int, float)) or alpha < 0:
            raise ConfigError(f"surrogate linear.alpha: {alpha!r} must be a number >= 0")
        self.alpha, self.target = float(alpha), target
        self.model = None
        self._log = False

    def fit(self, X: np.ndarray, y: np.ndarray) -> LinearSurrogate:
        from sklearn.linear_model import LinearRegression, Ridge

        X, y = _check_xy(self.name, X, y, self.min_rows)
        if self.target == "log" and np.any(y <= 0):
            raise ValueError("surrogate linear: target='log' needs every y > 0")
        self._log = self.target == "log" or (self.target == "auto" and bool(np.all(y > 0)))
        t = np.log(y) if self._log else y
        self.model = Ridge(alpha=self.alpha) if self.alpha > 0 else LinearRegression()
        self.model.fit(X, t)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("surrogate linear: call fit() before predict()")
        t = np.asarray(self.model.predict(np.asarray(X, dtype=float)), dtype=float)
        return np.exp(t) if self._log else t


_SURROGATES = {"lightgbm": LightGBMSurrogate, "linear": LinearSurrogate}


def _gp_surrogate(seed: int = 0, **opts: object):
    """Build :class:`mixopt.search.gp.GPSurrogate` lazily (torch/BoTorch load only for ``gp``)."""
    unknown = sorted(set(opts) - {"warp", "max_fit_rows", "refit", "time_limit_s"})
    if unknown:
        raise ConfigError(f"surrogate gp: unknown option(s) {', '.join(unknown)}; "
                          "allowed: max_fit_rows, refit, time_limit_s, warp")
    from mixopt.search.gp import GPSurrogate

    return GPSurrogate(seed=seed, **opts)  # type: ignore[arg-type]


def _bo_surrogate(seed: int = 0, **opts: object):
    """``bo``: the ``bo`` searcher's GP, its default warp (``sqrt_median``) included."""
    opts.setdefault("warp", BO_WARP)
    return _gp_surrogate(seed, **opts)


_SURROGATES["gp"] = _gp_surrogate
_SURROGATES["bo"] = _bo_surrogate
GP_WARPS = ("none", "sqrt", "clr", "sqrt_median")      # mixopt.search.gp.WARPS, without importing torch
# the bo searcher's (and the bo surrogate's) warp: sqrt(p + the trials' median weight). On the six released
# tables (bench_defaults_all.py, evaluations to the top 1 %) it ties "sqrt" on the sparse RegMix and Olmix
# tables, where the median weight is 0-0.003, and needs fewer on ADMIRE's dense pools (100 seeds: 12.5 vs
# 13.5 and 18 vs 22).
BO_WARP = "sqrt_median"


class AutoSurrogate:
    """``auto``: :class:`mixopt.search.gp.GPSurrogate` below ``switch_at`` rows, LightGBM from there."""

    name = "auto"
    min_rows = 2
    _GP_KEYS = ("warp", "max_fit_rows", "refit", "time_limit_s")

    def __init__(self, seed: int = 0, switch_at: int = 128, **opts: object) -> None:
        if isinstance(switch_at, bool) or not isinstance(switch_at, int) or switch_at < 2:
            raise ConfigError(f"surrogate auto.switch_at: {switch_at!r} must be an integer >= 2")
        self.gp_opts = {k: opts.pop(k) for k in self._GP_KEYS if k in opts}
        if self.gp_opts.get("warp", "sqrt") not in GP_WARPS:
            raise ConfigError(f"surrogate auto.warp: {self.gp_opts['warp']!r}; allowed: {', '.join(GP_WARPS)}")
        if self.gp_opts.get("refit", "always") not in ("always", "schedule"):
            raise ConfigError(f"surrogate auto.refit: {self.gp_opts['refit']!r}; allowed: always, schedule")
        self.seed, self.switch_at = int(seed), int(switch_at)
        self.lightgbm = LightGBMSurrogate(seed=seed, **opts)      # validates LightGBM's options now
        self.model = None

    def fit(self, X: np.ndarray, y: np.ndarray) -> AutoSurrogate:
        X, y = _check_xy(self.name, X, y, self.min_rows)
        if len(y) < self.switch_at:
            self.model = _gp_surrogate(self.seed, **self.gp_opts).fit(X, y)
        else:
            self.model = self.lightgbm.fit(X, y)
        return self

    @property
    def chosen(self) -> str | None:
        """"gp" or "lightgbm" after ``fit``."""
        return None if self.model is None else ("lightgbm" if self.model is self.lightgbm else "gp")

    @property
    def has_std(self) -> bool:
        return self.chosen == "gp"

    def predict(self, X: np.ndarray) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("surrogate auto: call fit() before predict()")
        return self.model.predict(X)

    def predict_std(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self.has_std:
            raise RuntimeError("surrogate auto: no std while LightGBM is the model")
        return self.model.predict_std(X)  # type: ignore[union-attr]

    def sample(self, X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A joint posterior draw at X (the GP's; see ``predict_std``)."""
        if not self.has_std:
            raise RuntimeError("surrogate auto: no posterior while LightGBM is the model")
        return self.model.sample(X, rng)  # type: ignore[union-attr]


class MixingLawSurrogate:
    """``mixing_law``: :func:`mixopt.search.mixing_law.fit_mixing_law` as a surrogate (seeded restarts)."""

    name = "mixing_law"
    min_rows = 3
    has_std = True

    def __init__(self, seed: int = 0, restarts: int = 5, ridge: float = 1e-6, f_scale: float | None = None) -> None:
        if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 1:
            raise ConfigError(f"surrogate mixing_law.restarts: {restarts!r} must be an integer >= 1")
        if isinstance(ridge, bool) or not isinstance(ridge, (int, float)) or not ridge >= 0:
            raise ConfigError(f"surrogate mixing_law.ridge: {ridge!r} must be a number >= 0")
        if f_scale is not None and (isinstance(f_scale, bool) or not isinstance(f_scale, (int, float))
                                    or not f_scale > 0):
            raise ConfigError(f"surrogate mixing_law.f_scale: {f_scale!r} must be a number > 0 or null")
        self.seed, self.restarts, self.ridge, self.f_scale = int(seed), int(restarts), float(ridge), f_scale
        self.law = None

    def fit(self, X: np.ndarray, y: np.ndarray) -> MixingLawSurrogate:
        from mixopt.search.mixing_law import fit_mixing_law

        X, y = _check_xy(self.name, X, y, self.min_rows)
        self.law = fit_mixing_law(X, y, np.random.default_rng(self.seed), self.restarts, self.ridge, self.f_scale)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        if self.law is None:
            raise RuntimeError("surrogate mixing_law: call fit() before predict()")
        return self.law.predict(np.asarray(X, dtype=float))

    def predict_std(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.law is None:
            raise RuntimeError("surrogate mixing_law: call fit() before predict()")
        return self.law.predict_std(np.asarray(X, dtype=float))

    def sample(self, X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The law with parameters drawn from its Laplace approximation, at X. (m,)."""
        if self.law is None:
            raise RuntimeError("surrogate mixing_law: call fit() before predict()")
        return self.law.draw(rng).predict(np.asarray(X, dtype=float))


_SURROGATES["auto"] = AutoSurrogate
_SURROGATES["mixing_law"] = MixingLawSurrogate


def available() -> list[str]:
    return sorted(_SURROGATES)


def make_surrogate(name: str, seed: int = 0, **opts: object):
    """Build a surrogate by name; ConfigError lists the allowed names or options.

    Example:
        >>> s = make_surrogate("linear").fit(np.eye(3), np.array([1.0, 2.0, 3.0]))
        >>> np.round(s.predict(np.eye(3)), 3).tolist()
        [1.0, 2.0, 3.0]
    """
    if name not in _SURROGATES:
        raise ConfigError(f"surrogate: unknown name {name!r}; allowed: {', '.join(available())}")
    cls = _SURROGATES[name]
    if cls in (LinearSurrogate, MixingLawSurrogate):  # LightGBM (and auto) check their own options
        allowed = [p for p in inspect.signature(cls).parameters if p != "seed"]
        unknown = sorted(set(opts) - set(allowed))
        if unknown:
            raise ConfigError(f"surrogate {name}: unknown option(s) {', '.join(unknown)}; "
                              f"allowed: {', '.join(allowed)}")
    return cls(seed=seed, **opts)
