"""Conformance tests every searcher passes, plus RegMix-specific behaviour."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mixopt.core.errors import ConfigError
from mixopt.core.mixture import MixtureSpace
from mixopt.search import SearchContext, get_searcher
from mixopt.search.dirichlet import sample
from tests.search.conftest import ctx_from

DOMAINS = ("a", "b", "c", "d")
FAST = {"regmix": {"n_candidates": 2000, "top_k": 20, "surrogate_options": {"n_estimators": 100}},
        "random": {}, "dirichlet": {}}
TARGET = np.array([0.4, 0.3, 0.2, 0.1])


def _mix(proposals) -> list:
    """The mixtures of a searcher's proposals."""
    return [p.mixture for p in proposals]


@pytest.fixture
def space() -> MixtureSpace:
    # floors on a and d, a cap (as a repetition cap would give) on c, a skewed prior
    return MixtureSpace(DOMAINS, (0.05, 0.0, 0.0, 0.02), (1.0, 0.6, 0.25, 0.5), (0.5, 0.3, 0.15, 0.05))


def objective(x: np.ndarray) -> float:
    return float(((np.asarray(x) - TARGET) ** 2).sum())


def history(space, n, seed=1):
    X = sample(space, n, np.random.default_rng(seed))
    return X, [objective(x) for x in X]


def make(name):
    return get_searcher(name, FAST[name])


@pytest.mark.parametrize("name", sorted(FAST))  # every searcher: tests/search/test_conformance.py
def test_suggest_inside_space_and_reproducible(space, name):
    for n_hist in (0, 30):
        X, y = history(space, n_hist)
        ctx = ctx_from(space, X, y, seed=7)
        a = _mix(make(name).suggest(ctx, 5))
        b = _mix(make(name).suggest(ctx_from(space, X, y, seed=7), 5))   # a "restarted" process
        assert len(a) == 5 and a == b
        for m in a:
            assert space.contains(m), m
        c = _mix(make(name).suggest(ctx_from(space, X, y, seed=8), 5))
        assert c != a


@pytest.mark.parametrize("name", sorted(FAST))  # every searcher: tests/search/test_conformance.py
def test_failed_and_nonfinite_values_are_ignored(space, name):
    X, y = history(space, 30)
    y = list(y)
    y[0], y[1], y[2] = math.nan, math.inf, -math.inf
    states = ["COMPLETE"] * 30
    states[3] = "FAILED"
    ctx = ctx_from(space, X, y, states)
    Xc, yc = ctx.completed_xy()
    assert len(yc) == 26 and np.all(np.isfinite(yc))
    ms = _mix(make(name).suggest(ctx, 3))
    assert all(space.contains(m) for m in ms)
    rec = make(name).recommend(ctx)
    assert space.contains(rec.mixture)
    assert rec.predicted is None or math.isfinite(rec.predicted)


@pytest.mark.parametrize("name", sorted(FAST))  # every searcher: tests/search/test_conformance.py
def test_recommend_with_no_history_is_inside(space, name):
    rec = make(name).recommend(SearchContext(space, (), 0))
    assert space.contains(rec.mixture) and rec.predicted is None


def test_regmix_pending_trials_change_the_batch(space):
    X, y = history(space, 30)
    s = make("regmix")
    first = _mix(s.suggest(ctx_from(space, X, y), 3))
    ctx = ctx_from(space, list(X) + [first[0].as_array(DOMAINS)], list(y) + [None],
                   ["COMPLETE"] * 30 + ["PENDING"])
    second = _mix(s.suggest(ctx, 3))
    pend = first[0].as_array(DOMAINS)
    assert all(np.abs(m.as_array(DOMAINS) - pend).sum() >= s.min_distance - 1e-9 for m in second)


def test_regmix_batch_is_spread(space):
    X, y = history(space, 30)
    ms = _mix(make("regmix").suggest(ctx_from(space, X, y), 6))
    A = np.array([m.as_array(DOMAINS) for m in ms])
    d = np.abs(A[:, None, :] - A[None, :, :]).sum(-1) + np.eye(6) * 9
    assert d.min() >= 0.05 - 1e-9


def test_regmix_falls_back_to_dirichlet_with_few_points(space):
    X, y = history(space, 3)                        # the default (auto: GP) fits from 4 trials
    ctx = ctx_from(space, X, y)
    s = make("regmix")
    ms = _mix(s.suggest(ctx, 4))
    expect = sample(space, 4, ctx.rng("regmix.explore"))
    assert np.allclose([m.as_array(DOMAINS) for m in ms], expect, atol=1e-9)
    rec = s.recommend(ctx)
    assert rec.info["source"] == "best_trial" and rec.predicted == min(y)
    lin = get_searcher("regmix", {"surrogate": "linear", "n_candidates": 500})
    X, y = history(space, 4)                        # k + 1 = 5 needed for linear
    assert "reason" in lin.recommend(ctx_from(space, X, y)).info


def log_linear(x: np.ndarray) -> float:
    return float(np.exp(np.asarray(x) @ np.array([0.5, -0.4, 0.3, -0.2])))


# LightGBM on a quadratic bowl with an interior optimum; the linear surrogate on a convex
# log-linear objective (a linear model cannot place an interior optimum, so a bowl is unfair)
@pytest.mark.parametrize("surrogate,f", [("lightgbm", objective), ("linear", log_linear)])
def test_regmix_recommend_beats_random(space, surrogate, f):
    X = sample(space, 40, np.random.default_rng(1))
    y = [f(x) for x in X]
    ctx = ctx_from(space, X, y)
    opts = dict(FAST["regmix"], surrogate=surrogate)
    if surrogate == "linear":
        opts.pop("surrogate_options")
    rec = get_searcher("regmix", opts).recommend(ctx)
    assert rec.info["surrogate"] == surrogate and rec.info["n_fit"] == 40 and rec.info["top_k"] == 20
    true = f(rec.mixture.as_array(DOMAINS))
    rand = [f(x) for x in sample(space, 200, np.random.default_rng(3))]
    assert true < np.quantile(rand, 0.05)          # better than 95% of random mixtures
    assert rec.predicted is not None and math.isfinite(rec.predicted)
    best = get_searcher("random").recommend(ctx)
    assert best.predicted == min(y) and true < np.median(rand)


def test_sample_respects_tight_caps_and_floors():
    sp = MixtureSpace(("a", "b", "c"), (0.3, 0.0, 0.1), (0.35, 0.5, 0.6), (0.98, 0.01, 0.01))
    X = sample(sp, 500, np.random.default_rng(0), max_tries=2)
    assert X.shape == (500, 3)
    assert all(sp.contains(x) for x in X)


def test_rng_is_salted_and_history_dependent(space):
    ctx = SearchContext(space, (), 3)
    assert ctx.rng("x").random() == SearchContext(space, (), 3).rng("x").random()
    assert ctx.rng("x").random() != ctx.rng("y").random()


def test_registry_errors():
    with pytest.raises(ConfigError, match="allowed: .*dirichlet, .*random, regmix"):
        get_searcher("nope")
    with pytest.raises(ConfigError, match="search.options.bogus.*allowed:.*top_k"):
        get_searcher("regmix", {"bogus": 1})
    with pytest.raises(ConfigError, match="surrogate.*allowed: auto, bo, gp, lightgbm, linear, mixing_law"):
        get_searcher("regmix", {"surrogate": "xgb"})
    with pytest.raises(ConfigError, match="top_k"):
        get_searcher("regmix", {"top_k": 0})
    with pytest.raises(ConfigError, match="strengths"):
        get_searcher("random", {"strengths": [-1.0]})
    with pytest.raises(ConfigError, match="max_tries"):
        get_searcher("dirichlet", {"max_tries": 0})
