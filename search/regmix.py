"""RegMix (Liu et al. 2024): regress the objective on mixture weights, then simulate.

Fit a surrogate on completed trials, score a large pool of RegMix Dirichlet draws
(:func:`mixopt.search.dirichlet.sample`) and take the **average of the top-k** predicted
mixtures as the recommendation (the paper simulates 1M mixtures and averages the top 100; we
default to 20,000 draws, which scores in about a second with LightGBM on one thread).
``suggest`` proposes that average first, then the best-predicted pool points that are at least
``min_distance`` (L1) away from every earlier trial (any state, pending included) and from each
other, so a batch is not n copies of one point. Until ``min_fit`` finite trials exist it
explores with plain Dirichlet draws.

Surrogate (``surrogate``, default ``auto``): a GP below 128 finite trials, LightGBM (RegMix's
regressor) from there (:class:`mixopt.search.surrogates.AutoSurrogate`); ``lightgbm``,
``linear``, ``gp``, ``mixing_law`` pick one. The GP's hyperparameters are refitted on a schedule,
warm-started and cached (``refit="schedule"`` unless ``surrogate_options`` says otherwise).

Explore/exploit (``acquisition``): ``mean`` ranks by the prediction (RegMix); with a surrogate
that knows its uncertainty (GP, mixing law), ``ei`` ranks by expected improvement over the best
posterior mean at a trial, ``lcb`` by ``mean - beta * std`` and ``thompson`` by one joint
posterior draw over the candidates (the 1,000 best by ``mean - 2 std`` when proposing from the
Dirichlet pool). Without a std (LightGBM, linear) every acquisition ranks by the prediction.
With ``acquisition`` other than ``mean``, ``suggest`` proposes the best-scored candidates (no
top-k average). ``recommend`` always averages the top-k *predicted* mixtures, and gives way to
the best measured trial when the surrogate predicts that average worse than it
(:func:`mixopt.search.trust.guard`).

Defaults (``min_fit``, ``acquisition``) were chosen by replaying on tables other than the one the
headline figure is measured on: see ``bench/bench_cv_defaults.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from mixopt.core.errors import ConfigError
from mixopt.core.mixture import Mixture
from mixopt.search.base import Proposal, Recommendation, SearchContext, best_completed
from mixopt.search.dirichlet import REGMIX_STRENGTHS, sample, validate_sampling_options
from mixopt.search.pool import fresh_rows, random_rows, spread
from mixopt.search.surrogates import available as surrogate_names
from mixopt.search.surrogates import make_surrogate
from mixopt.search.trust import guard

ACQUISITIONS = ("mean", "ei", "lcb", "thompson")
_SCHEDULED = ("gp", "bo", "auto")      # surrogates whose GP takes refit="schedule"
THOMPSON_MAX = 1000                    # candidates drawn jointly by a Thompson sample


def _int_option(name: str, key: str, v: object, low: int) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
        raise ConfigError(f"search.options.{key}: {v!r} must be an integer >= {low} (searcher {name!r})")


def log_ei(mean: np.ndarray, std: np.ndarray, best: float) -> np.ndarray:
    """log expected improvement below ``best`` (minimization), stable far in the tail. (n,)."""
    from scipy.special import log_ndtr

    std = np.maximum(np.asarray(std, dtype=float), 1e-12)
    z = (best - np.asarray(mean, dtype=float)) / std
    log_phi = -0.5 * z ** 2 - 0.5 * math.log(2 * math.pi)
    with np.errstate(divide="ignore", invalid="ignore"):
        # z Phi(z) + phi(z) = phi(z) (1 + z Phi(z) / phi(z)); the ratio is the inverse Mills ratio
        mid = np.log(np.clip(z * np.exp(log_ndtr(z) - log_phi) + 1.0, 1e-300, None)) + log_phi
        tail = log_phi - 2.0 * np.log(np.abs(z))                  # z -> -inf: phi(z) / z^2
    return np.log(std) + np.where(z > -8.0, mid, tail)


@dataclass(frozen=True)
class RegMixSearcher:
    """Options: surrogate (auto|lightgbm|linear|gp|mixing_law), surrogate_options, n_candidates,
    top_k, min_fit (default 4 for auto/gp/mixing_law, 8 for lightgbm, k + 1 for linear),
    min_distance (L1, in [0, 2]), strengths, max_tries, acquisition (mean|ei|lcb|thompson),
    beta (lcb), fallback_to_best."""

    name: str = "regmix"
    surrogate: str = "auto"
    surrogate_options: dict = field(default_factory=dict)
    n_candidates: int = 20_000
    top_k: int = 100
    min_fit: int | None = None
    min_distance: float = 0.05
    strengths: tuple[float, ...] = REGMIX_STRENGTHS
    max_tries: int = 20
    acquisition: str = "mean"
    beta: float = 1.0
    fallback_to_best: bool = True

    def __post_init__(self) -> None:
        if self.surrogate not in surrogate_names():
            raise ConfigError(f"search.options.surrogate: {self.surrogate!r}; allowed: "
                              f"{', '.join(surrogate_names())}")
        if not isinstance(self.surrogate_options, dict):
            raise ConfigError(f"search.options.surrogate_options: {self.surrogate_options!r} must be a mapping")
        make_surrogate(self.surrogate, 0, **self._surrogate_options())  # option errors surface now
        _int_option(self.name, "n_candidates", self.n_candidates, 1)
        _int_option(self.name, "top_k", self.top_k, 1)
        if self.min_fit is not None:
            _int_option(self.name, "min_fit", self.min_fit, 2)
        if isinstance(self.min_distance, bool) or not isinstance(self.min_distance, (int, float)) \
                or not 0 <= self.min_distance <= 2:
            raise ConfigError(f"search.options.min_distance: {self.min_distance!r} must be a number "
                              f"in [0, 2] (L1 distance between mixtures; searcher {self.name!r})")
        if self.acquisition not in ACQUISITIONS:
            raise ConfigError(f"search.options.acquisition: {self.acquisition!r}; allowed: {', '.join(ACQUISITIONS)}")
        if isinstance(self.beta, bool) or not isinstance(self.beta, (int, float)) or not 0 <= self.beta < math.inf:
            raise ConfigError(f"search.options.beta: {self.beta!r} must be a number >= 0 (searcher {self.name!r})")
        if not isinstance(self.fallback_to_best, bool):
            raise ConfigError(f"search.options.fallback_to_best: {self.fallback_to_best!r} must be true or false")
        validate_sampling_options(self.name, self.strengths, self.max_tries)
        object.__setattr__(self, "strengths", tuple(float(v) for v in self.strengths))

    # ---- helpers -------------------------------------------------------------------------
    def _surrogate_options(self) -> dict:
        opts = dict(self.surrogate_options)
        if self.surrogate in _SCHEDULED:
            opts.setdefault("refit", "schedule")
        return opts

    def _min_fit(self, k: int) -> int:
        if self.min_fit is not None:
            return int(self.min_fit)
        return {"linear": k + 1, "lightgbm": 8}.get(self.surrogate, 4)

    def _model(self, ctx: SearchContext):
        X, y = ctx.completed_xy()
        return make_surrogate(self.surrogate, ctx.seed, **self._surrogate_options()).fit(X, y)

    def _scores(self, ctx: SearchContext, model, P: np.ndarray, salt: str) -> np.ndarray:
        """Acquisition scores of candidates P (m, k), lower is better. (m,)."""
        if self.acquisition == "mean" or not getattr(model, "has_std", False):
            return model.predict(P)
        if self.acquisition == "thompson":
            return _thompson(model, P, ctx.rng(salt))
        mean, std = model.predict_std(P)
        if self.acquisition == "lcb":
            return mean - float(self.beta) * std
        X, _ = ctx.completed_xy()
        best = float(np.min(model.predict(X)))        # plug-in incumbent: best posterior mean at a trial
        return -log_ei(mean, std, best)

    def _simulate(self, ctx: SearchContext, salt: str):
        """Fit on completed trials, score a pool: (pool (N, k) sorted by prediction, preds, model)."""
        model = self._model(ctx)
        pool = sample(ctx.space, self.n_candidates, ctx.rng(salt), self.strengths, self.max_tries)
        pred = model.predict(pool)                                        # (N,)
        order = np.argsort(pred, kind="stable")
        return pool[order], pred[order], model

    def _top_k_average(self, ctx: SearchContext, pool: np.ndarray) -> np.ndarray:
        return ctx.space.project(pool[: min(self.top_k, len(pool))].mean(axis=0))   # (k,)

    def _model_name(self, model) -> str:
        return getattr(model, "chosen", None) or self.surrogate

    # ---- protocol ------------------------------------------------------------------------
    def suggest(self, ctx: SearchContext, n: int) -> list[Proposal]:
        if n <= 0:
            return []
        _, y = ctx.completed_xy()
        if len(y) < self._min_fit(ctx.space.dim):
            X = sample(ctx.space, n, ctx.rng(f"{self.name}.explore"), self.strengths, self.max_tries)
            return Proposal.from_array(X, ctx.space.domains)
        pool, pred, model = self._simulate(ctx, f"{self.name}.suggest")
        if self.acquisition != "mean" and getattr(model, "has_std", False):
            if self.acquisition == "thompson" and len(pool) > THOMPSON_MAX:
                mean, std = model.predict_std(pool)
                pool = pool[np.argsort(mean - 2.0 * std, kind="stable")[:THOMPSON_MAX]]
            cands = pool[np.argsort(self._scores(ctx, model, pool, f"{self.name}.thompson"), kind="stable")]
        else:
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
        rec = Recommendation(m, pred, info={
            "searcher": self.name, "surrogate": self.surrogate, "model": self._model_name(model),
            "n_fit": int(len(y)), "top_k": int(min(self.top_k, len(pool))), "n_candidates": int(len(pool)),
            "source": "top_k_average"})
        return guard(ctx, rec, self.fallback_to_best)

    def select(self, ctx: SearchContext, pool: np.ndarray, n: int) -> list[int]:
        """Rows of ``pool`` (m, k) to evaluate next, best acquisition score first (the pool
        replaces the Dirichlet draws, so ``n_candidates``/``top_k`` play no part); rows equal to
        an earlier trial are skipped; seeded random rows before ``min_fit`` finite trials."""
        _, y = ctx.completed_xy()
        if len(y) < self._min_fit(ctx.space.dim):
            return random_rows(ctx, pool, n, f"{self.name}.select")
        idx = fresh_rows(ctx, pool)
        model = self._model(ctx)
        score = self._scores(ctx, model, np.asarray(pool, dtype=float)[idx], f"{self.name}.thompson")
        return idx[np.argsort(score, kind="stable")][:n].tolist()


def _thompson(model, P: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One joint posterior draw at P (m, k) when the model can (``sample``), else independent
    marginal draws. (m,)."""
    if hasattr(model, "sample") and len(P) <= THOMPSON_MAX:
        return model.sample(P, rng)
    mean, std = model.predict_std(P)
    return mean + std * rng.standard_normal(len(P))
