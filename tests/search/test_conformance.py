"""The conformance suite every registered searcher passes (Optuna / Ray Tune habit).

Parametrized over ``mixopt.search.available()``: reproducible under a seed, FAILED trials and nan/inf
values, warm start, pending trials, proposals and recommendations inside a space with floors
and caps, and pool selection. A searcher whose module does not import (yet) is skipped with
the reason. ``FAST`` holds small options per name so the file runs in well under a minute.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mixopt.core.mixture import Mixture, MixtureSpace
from mixopt.search import Observation, Rung, SearchContext, available, get_searcher
from mixopt.search.dirichlet import sample
from mixopt.search.pool import select_from_pool

DOMAINS = ("a", "b", "c", "d")
_REGMIX = {"n_candidates": 500, "top_k": 20, "surrogate_options": {"n_estimators": 50}}
FAST: dict[str, dict] = {
    "random": {}, "dirichlet": {},
    "regmix": _REGMIX,
    "mixing_law": {"n_candidates": 300, "restarts": 2, "n_starts": 2},
    "hybrid": {"init": "random", "main": "regmix", "n_init": 5, "main_options": _REGMIX},
    "concurrency_limit": {"searcher": "regmix", "max_pending": 100, "options": _REGMIX},
    "repeat": {"searcher": "regmix", "repeats": 2, "options": _REGMIX},
    # a generous time limit: a wall-clock fallback would make proposals depend on machine load
    "bo": {"raw_samples": 32, "num_restarts": 1, "maxiter": 20, "mc_samples": 32, "n_pool": 300,
           "time_limit_s": 120},
    "mfbo": {"n_pool": 200, "n_candidates": 200, "num_fantasies": 4, "num_restarts": 1, "maxiter": 20,
             "time_limit_s": 120},
}
MULTI_RUNG = {"mfbo"}          # searchers that need a scale ladder (>= 2 rungs)
T = np.array([1.5, -1.0, 0.5, -0.5])


def objective(x: np.ndarray) -> float:
    """A mixing-law-shaped objective (convex, best towards b and d)."""
    return float(1.0 + np.exp(np.asarray(x) @ T) + 0.3 * np.sum((np.asarray(x) - 0.25) ** 2))


@pytest.fixture(scope="module")
def space() -> MixtureSpace:
    # floors on a and d, caps on b and c (as a repetition cap gives), a skewed prior
    return MixtureSpace(DOMAINS, (0.05, 0.0, 0.0, 0.02), (1.0, 0.6, 0.25, 0.5), (0.5, 0.3, 0.15, 0.05))


def make(name: str):
    return get_searcher(name, FAST.get(name, {}))  # every registered searcher must load


def ctx_for(name: str, space: MixtureSpace, xs, values, states=None, seed: int = 0) -> SearchContext:
    """Observations at the target rung; a 2-rung ladder (and cheap-rung copies of the
    completed points, objective + 0.5) for multi-rung searchers."""
    obs = []
    for i, (x, v) in enumerate(zip(xs, values)):
        st = states[i] if states else ("COMPLETE" if v is not None else "PENDING")
        obs.append(Observation(i, Mixture.from_array(space.project(np.asarray(x)), space.domains), st,
                               v if st == "COMPLETE" else None))
    fids: tuple[Rung, ...] = ()
    if name in MULTI_RUNG:
        fids = (Rung(0, {"preset": "dense-0.1m"}, 1.0), Rung(1, {"preset": "dense-1m"}, 8.0))
        n = len(obs)
        obs += [Observation(n + j, o.mixture, o.state, None if o.value is None else float(o.value) + 0.5, 0)
                for j, o in enumerate(list(obs)) if o.state == "COMPLETE" and j % 2 == 0]
    return SearchContext(space, tuple(obs), seed, fids)


def history(space: MixtureSpace, n: int, seed: int = 1):
    X = sample(space, n, np.random.default_rng(seed))
    return X, [objective(x) for x in X]


def mix(p) -> Mixture:
    return p.mixture if hasattr(p, "mixture") else p


def arr(p) -> np.ndarray:
    return mix(p).as_array(DOMAINS)


@pytest.mark.parametrize("name", available())
def test_reproducible_and_inside_space(space, name):
    for n_hist in (0, 25):
        X, y = history(space, n_hist)
        a = make(name).suggest(ctx_for(name, space, X, y, seed=7), 3)
        b = make(name).suggest(ctx_for(name, space, X, y, seed=7), 3)   # a "restarted" process
        assert len(a) == 3
        assert np.allclose([arr(p) for p in a], [arr(p) for p in b], atol=0, rtol=0)
        assert all(space.contains(mix(p)) for p in a), a
    assert make(name).suggest(ctx_for(name, space, [], []), 0) == []


@pytest.mark.parametrize("name", available())
def test_failed_and_nonfinite_values(space, name):
    X, y = history(space, 25)
    y = list(y)
    y[0], y[1], y[2] = math.nan, math.inf, -math.inf
    states = ["COMPLETE"] * 25
    states[3] = "FAILED"
    ctx = ctx_for(name, space, X, y, states)
    props = make(name).suggest(ctx, 3)
    assert len(props) == 3 and all(space.contains(mix(p)) for p in props)
    rec = make(name).recommend(ctx)
    assert space.contains(rec.mixture)
    assert rec.predicted is None or math.isfinite(rec.predicted)
    bad = [space.project(X[i]) for i in range(4)]                 # a -inf "best" must not win
    assert not any(np.allclose(rec.mixture.as_array(DOMAINS), b, atol=1e-9) for b in bad)
    # nothing but failures: still proposes, recommends something inside
    all_bad = ctx_for(name, space, X[:6], [math.nan] * 6, ["FAILED", "COMPLETE"] * 3)
    assert all(space.contains(mix(p)) for p in make(name).suggest(all_bad, 2))
    assert space.contains(make(name).recommend(all_bad).mixture)


@pytest.mark.parametrize("name", available())
def test_warm_start_is_used(space, name):
    X, y = history(space, 60)
    ctx = ctx_for(name, space, X, y, seed=3)
    rec = make(name).recommend(ctx)
    assert space.contains(rec.mixture)
    assert objective(rec.mixture.as_array(DOMAINS)) <= np.quantile(y, 0.25), rec
    props = make(name).suggest(ctx, 2)
    assert all(space.contains(mix(p)) for p in props)


@pytest.mark.parametrize("name", available())
def test_pending_trials_are_not_proposed_again(space, name):
    X, y = history(space, 25)
    s = make(name)
    first = s.suggest(ctx_for(name, space, X, y), 2)
    pend = [arr(p) for p in first]
    ctx = ctx_for(name, space, list(X) + pend, list(y) + [None, None])
    second = s.suggest(ctx, 3)
    for p in second:
        assert space.contains(mix(p))
        assert not any(np.allclose(arr(p), q, atol=1e-6) for q in pend), (p, pend)


@pytest.mark.parametrize("name", available())
def test_recommend_inside_space_without_history(space, name):
    rec = make(name).recommend(ctx_for(name, space, [], []))
    assert space.contains(rec.mixture) and (rec.predicted is None or math.isfinite(rec.predicted))


@pytest.mark.parametrize("name", available())
@pytest.mark.parametrize("n_hist", [0, 25])
def test_select_from_pool(space, name, n_hist):
    pool = sample(space, 40, np.random.default_rng(11))
    X, y = history(space, n_hist)
    X, y = list(X) + list(pool[:5]), list(y) + [objective(x) for x in pool[:5]]  # 5 rows already run
    ctx = ctx_for(name, space, X, y)
    idx = select_from_pool(make(name), ctx, pool, 4)
    assert len(idx) == 4 and len(set(idx)) == 4
    assert all(isinstance(i, int) and 5 <= i < len(pool) for i in idx), idx
    assert select_from_pool(make(name), ctx, pool, 4) == idx                   # reproducible
