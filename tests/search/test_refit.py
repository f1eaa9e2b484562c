"""Scheduled, warm-started, cached refits (``mixopt.search.refit``): fast and reproducible."""

from __future__ import annotations

import numpy as np
import pytest

from mixopt.core.mixture import MixtureSpace
from mixopt.search import get_searcher
from mixopt.search.dirichlet import sample
from mixopt.search.refit import (
    CHAIN,
    clear_caches,
    last_refit_point,
    refit_points,
    same_octave,
    warm_start_from,
)
from tests.search.conftest import ctx_from

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/search/conftest.py

DOMAINS = ("a", "b", "c", "d", "e")
TARGET = np.array([0.3, 0.3, 0.2, 0.1, 0.1])


def bowl(X: np.ndarray) -> np.ndarray:
    return ((np.atleast_2d(X) - TARGET) ** 2).sum(-1)


def test_schedule_shape():
    pts = refit_points(600)
    assert pts[:7] == [2, 3, 4, 5, 6, 7, 8] and pts[7:11] == [10, 13, 17, 22]
    gaps = np.diff(pts)
    assert np.all(gaps >= 1) and np.all(gaps <= 32) and np.all(np.diff(gaps) >= 0)
    assert len(pts) < 40                                          # a few dozen fits up to 600 trials
    assert all(last_refit_point(n) == max(p for p in pts if p <= n) for n in range(2, 600))
    for p in pts:                                                 # warm starts stay in the octave, chains short
        q, chain = p, 0
        while warm_start_from(q) is not None:
            assert same_octave(warm_start_from(q), q)
            q, chain = warm_start_from(q), chain + 1
        assert chain < CHAIN


def test_gp_schedule_is_cache_independent():
    """The hyperparameters for n rows are the same with a warm cache (every n in turn) or none."""
    from mixopt.search import gp

    rng = np.random.default_rng(0)
    X = rng.dirichlet(np.ones(5), 40)
    y = bowl(X) + 0.01 * rng.normal(size=40)
    clear_caches()
    warm, fits0 = {}, gp.STATS["fits"]
    for n in range(18, 41):
        warm[n] = gp.fit_gp(X[:n], y[:n], refit="schedule", seed=3).covar_module.lengthscale.detach().numpy()
    assert gp.STATS["fits"] - fits0 <= 8                          # 17, 22, 28, 35 (+ drift refits), not 23
    for n in (18, 29, 40):
        clear_caches()
        cold = gp.fit_gp(X[:n], y[:n], refit="schedule", seed=3).covar_module.lengthscale.detach().numpy()
        assert np.array_equal(cold, warm[n]), n


def test_mixing_law_schedule_is_cache_independent():
    rng = np.random.default_rng(1)
    X = rng.dirichlet(np.ones(5), 40)
    y = 2.0 + np.exp(X @ np.array([1.0, -1.0, 0.5, 0.0, -0.5])) + 0.01 * rng.normal(size=40)
    space = MixtureSpace(DOMAINS, (0.0,) * 5, (1.0,) * 5)
    s = get_searcher("mixing_law", {"min_fit": 6})
    clear_caches()
    warm = {n: s.fit(ctx_from(space, X[:n], y[:n], seed=2)) for n in range(6, 41)}
    for n in (9, 23, 40):
        clear_caches()
        cold = s.fit(ctx_from(space, X[:n], y[:n], seed=2))
        assert cold.c == warm[n].c and np.array_equal(cold.t, warm[n].t)


def test_bo_select_reproducible_across_processes_cache():
    space = MixtureSpace(DOMAINS, (0.0,) * 5, (1.0,) * 5)
    pool = sample(space, 60, np.random.default_rng(4))
    X = sample(space, 25, np.random.default_rng(5))
    bo = get_searcher("bo", {"min_fit": 4, "mc_samples": 32})
    ctx = ctx_from(space, X, bowl(X).tolist(), seed=1)
    a = bo.select(ctx, pool, 2)
    clear_caches()
    assert bo.select(ctx, pool, 2) == a
