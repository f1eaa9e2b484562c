"""The mixing-law searcher: the fit recovers a known law, proposals stay inside, KL pulls."""

from __future__ import annotations

import numpy as np
import pytest

from mixopt.core.errors import ConfigError
from mixopt.core.mixture import Mixture, MixtureSpace
from mixopt.search import get_searcher
from mixopt.search.dirichlet import sample
from mixopt.search.mixing_law import MixingLaw, fit_mixing_law, kl
from mixopt.search.pool import select_from_pool
from tests.search.conftest import ctx_from, mixtures_of

DOMAINS = ("a", "b", "c", "d", "e")
T_TRUE = np.array([-2.0, 0.5, 1.0, 0.3, 0.2])


@pytest.fixture
def space() -> MixtureSpace:
    return MixtureSpace(DOMAINS, (0.05, 0.0, 0.0, 0.0, 0.02), (0.5, 1.0, 0.25, 1.0, 1.0),
                        (0.1, 0.3, 0.2, 0.2, 0.2))


def law_data(n: int, noise: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.dirichlet(np.ones(len(DOMAINS)), n)
    y = 3.0 + 0.7 * np.exp(X @ T_TRUE) + rng.normal(0.0, noise, n)
    return X, y


def test_fit_recovers_known_law_under_noise_and_outliers():
    X, y = law_data(80, noise=0.005)
    y[[3, 17]] += 1.5                                    # two gross outliers: soft_l1 shrugs them off
    law = fit_mixing_law(X, y, np.random.default_rng(1))
    t_gauge = T_TRUE - T_TRUE.mean()                     # t is identified up to a shift on the simplex
    k_gauge = 0.7 * np.exp(T_TRUE.mean())
    assert law.c == pytest.approx(3.0, abs=0.05)
    assert law.k == pytest.approx(k_gauge, rel=0.1)
    assert np.allclose(law.t, t_gauge, atol=0.15), law.t
    assert abs(law.t.sum()) < 1e-9


def test_fit_is_seeded(space):
    X, y = law_data(30, noise=0.01)
    s = get_searcher("mixing_law")
    a, b = s.fit(ctx_from(space, X, y, seed=4)), s.fit(ctx_from(space, X, y, seed=4))
    assert a.c == b.c and np.array_equal(a.t, b.t)


def test_proposals_and_recommendation_inside_space(space):
    X, y = law_data(40, noise=0.01)
    s = get_searcher("mixing_law", {"n_candidates": 300, "fallback_to_best": False})   # the law's own optimum
    ctx = ctx_from(space, X, y)
    props = mixtures_of(s.suggest(ctx, 5))
    assert len(props) == 5 and all(space.contains(m) for m in props)
    A = np.array([m.as_array(DOMAINS) for m in props])
    d = np.abs(A[:, None] - A[None]).sum(-1) + 9 * np.eye(5)
    assert d.min() >= s.min_distance - 1e-9                          # a spread batch
    rec = s.recommend(ctx)
    assert space.contains(rec.mixture) and np.isfinite(rec.predicted)
    x = rec.mixture.as_array(DOMAINS)
    assert x[0] == pytest.approx(0.5, abs=0.02)                       # the best domain, at its cap
    assert rec.predicted == pytest.approx(float(MixingLaw(3.0, 0.7, T_TRUE).predict(x[None])[0]), abs=0.02)


def test_kl_weight_pulls_towards_prior(space):
    X, y = law_data(40, noise=0.01)
    ctx = ctx_from(space, X, y)
    prior = space.prior_array()
    kls = [kl(get_searcher("mixing_law", {"kl_weight": lam, "fallback_to_best": False}).recommend(ctx)
              .mixture.as_array(DOMAINS), prior)
           for lam in (0.0, 0.1, 1.0, 10.0)]
    assert all(a > b for a, b in zip(kls, kls[1:])), kls
    assert kls[-1] < 0.05


def test_explores_until_min_fit_then_selects_by_prediction(space):
    X, y = law_data(3, noise=0.0)                       # min_fit defaults to 4
    s = get_searcher("mixing_law")
    ctx = ctx_from(space, X, y)
    assert s.fit(ctx) is None and s.recommend(ctx).info["source"] == "best_trial"
    expect = sample(space, 3, ctx.rng("mixing_law.explore"))
    assert np.allclose([m.as_array(DOMAINS) for m in mixtures_of(s.suggest(ctx, 3))], expect)
    X, y = law_data(40, noise=0.0)
    pool = np.random.default_rng(5).dirichlet(np.ones(5), 50)
    idx = select_from_pool(s, ctx_from(space, X, y), pool, 5)
    truth = MixingLaw(3.0, 0.7, T_TRUE).predict(pool)
    assert set(idx) <= set(np.argsort(truth)[:8].tolist())


def test_options_are_checked():
    for opts in ({"kl_weight": -1}, {"restarts": 0}, {"min_fit": 1}, {"min_distance": 3}, {"f_scale": 0}):
        with pytest.raises(ConfigError):
            get_searcher("mixing_law", opts)


def test_per_domain_laws_when_trials_report_domain_losses():
    """With per-domain losses, one law per domain is fitted and their weighted sum minimized."""
    from mixopt.core.mixture import MixtureSpace
    from mixopt.search import get_searcher
    from mixopt.search.base import Observation, SearchContext

    doms = ("a", "b", "c")
    space = MixtureSpace(doms, (0.0,) * 3, (1.0,) * 3, (1 / 3,) * 3)
    T = {"a": np.array([-2.0, 0.5, 0.5]), "b": np.array([0.5, -2.0, 0.5]), "c": np.array([0.5, 0.5, -2.0])}
    w = {"a": 0.6, "b": 0.4}  # the objective ignores c
    X = np.random.default_rng(3).dirichlet(np.ones(3), 30)
    obs = []
    for i, x in enumerate(X):
        losses = {d: 2.0 + 0.8 * float(np.exp(x @ T[d])) for d in doms}
        obs.append(Observation(i, Mixture.from_array(x, doms), "COMPLETE", sum(w[d] * losses[d] for d in w),
                               losses=losses))
    ctx = SearchContext(space, tuple(obs), 0, (), w)
    s = get_searcher("mixing_law", {"kl_weight": 0.0})
    rec = s.recommend(ctx)
    assert rec.info["per_domain"] is True and rec.info["laws"] == 2
    grid = np.random.default_rng(0).dirichlet(np.ones(3), 20000)
    truth = sum(w[d] * (2.0 + 0.8 * np.exp(grid @ T[d])) for d in w)
    best = grid[np.argmin(truth)]
    assert np.abs(rec.mixture.as_array(doms) - best).sum() < 0.1
    assert rec.mixture["c"] < 0.05
    # without domain losses it falls back to one law on the objective
    bare = SearchContext(space, tuple(Observation(o.trial_id, o.mixture, o.state, o.value) for o in obs), 0, (), w)
    assert s.recommend(bare).info["per_domain"] is False


@pytest.mark.parametrize("n,k,absent", [(12, 40, None), (60, 8, 3)])
def test_rank_deficient_rows_fit_t_in_their_row_space(n, k, absent):
    """Fewer rows than domains (or a domain in no row): t is fitted in the rows' span (plus the
    gauge's constant shift), where the ridge puts the minimizer, even from a warm start outside
    it; the law fits the rows."""
    rng = np.random.default_rng(2)
    X = rng.dirichlet(np.full(k, 0.5), n)
    if absent is not None:
        X[:, absent] = 0.0
        X /= X.sum(axis=1, keepdims=True)
    y = 2.0 + 0.3 * np.exp(X @ rng.normal(0.0, 1.0, k)) + rng.normal(0.0, 1e-4, n)
    span = np.hstack([X.T, np.ones((k, 1))])                     # (k, n + 1)
    warm = MixingLaw(2.0, 0.3, rng.normal(0.0, 2.0, k))          # t far outside the span
    for law in (fit_mixing_law(X, y, np.random.default_rng(0)),
                fit_mixing_law(X, y, np.random.default_rng(0), restarts=1, init=warm)):
        coef = np.linalg.lstsq(span, law.t, rcond=None)[0]
        assert np.abs(span @ coef - law.t).max() < 1e-6
    assert np.abs(fit_mixing_law(X, y, np.random.default_rng(0)).predict(X) - y).max() < 0.05 * np.ptp(y)


def test_a_restart_stops_when_its_cost_stalls():
    from types import SimpleNamespace

    from mixopt.search.mixing_law import _stall_stop

    cb = _stall_stop(3, 1e-3)
    for c in (1.0, 0.5, 0.3, 0.2):                               # still falling: no stop
        cb(SimpleNamespace(cost=c))
    cb(SimpleNamespace(cost=0.19995))
    cb(SimpleNamespace(cost=0.1999))
    with pytest.raises(StopIteration):                           # 3 iterations gained < 0.1%
        cb(SimpleNamespace(cost=0.19985))
