"""The ``bo`` searcher and the ``gp`` surrogate (small settings: each test runs in seconds)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from mixopt.core.errors import ConfigError  # noqa: E402
from mixopt.core.mixture import MixtureSpace  # noqa: E402
from mixopt.search import get_searcher  # noqa: E402
from mixopt.search.dirichlet import sample  # noqa: E402
from mixopt.search.surrogates import make_surrogate  # noqa: E402
from tests.search.conftest import ctx_from, mixtures_of  # noqa: E402

DOMAINS = ("a", "b", "c", "d", "e")
TARGET = np.array([0.3, 0.3, 0.2, 0.1, 0.1])
FAST = {"raw_samples": 64, "num_restarts": 2, "maxiter": 30, "mc_samples": 32, "n_pool": 300,
        "min_fit": 6, "time_limit_s": 300}   # no time-outs: results must not depend on machine load


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/search/conftest.py


@pytest.fixture
def space() -> MixtureSpace:
    return MixtureSpace(DOMAINS, (0.05, 0.0, 0.0, 0.02, 0.0), (1.0, 0.6, 0.25, 0.5, 1.0),
                        (0.4, 0.3, 0.15, 0.05, 0.1))


def bowl(x: np.ndarray) -> float:
    return float(((np.asarray(x) - TARGET) ** 2).sum())


def history(space, n, seed=1):
    X = sample(space, n, np.random.default_rng(seed))
    return X, [bowl(x) for x in X]


def bo(**opts):
    return get_searcher("bo", {**FAST, **opts})


def test_inside_space_reproducible_and_distinct(space, caplog):
    X, y = history(space, 12)
    a = mixtures_of(bo().suggest(ctx_from(space, X, y, seed=3), 3))
    b = mixtures_of(bo().suggest(ctx_from(space, X, y, seed=3), 3))     # a "restarted" process
    assert a == b and len(a) == 3
    A = np.array([m.as_array(DOMAINS) for m in a])
    for m in a:
        assert space.contains(m), m
    assert all(np.abs(A[i] - A[j]).sum() > 1e-4 for i in range(3) for j in range(i))
    assert np.abs(A[:, None, :] - X[None, :, :]).sum(-1).min() > 1e-4     # no repeat of a trial
    assert "fallback" not in caplog.text                                  # the qLogNEI path ran


def test_initial_design_is_dirichlet_until_min_fit(space):
    X, y = history(space, 3)
    out = mixtures_of(bo().suggest(ctx_from(space, X, y), 4))
    assert len(out) == 4 and all(space.contains(m) for m in out)
    assert bo().recommend(ctx_from(space, X, y)).info["source"] == "best_trial"


def test_failed_and_nonfinite_ignored(space):
    X, y = history(space, 12)
    bad_X = sample(space, 4, np.random.default_rng(9))
    vals = y + [float("nan"), float("inf"), None, -float("inf")]
    states = ["COMPLETE"] * 12 + ["COMPLETE", "COMPLETE", "FAILED", "COMPLETE"]
    ctx = ctx_from(space, np.vstack([X, bad_X]), vals, states)
    out = mixtures_of(bo().suggest(ctx, 2))
    assert all(space.contains(m) for m in out)
    rec = bo().recommend(ctx)
    assert rec.info["n_fit"] == 12 and np.isfinite(rec.predicted) and rec.std >= 0


def test_pending_points_change_the_batch(space):
    X, y = history(space, 12)
    base = ctx_from(space, X, y)
    first = mixtures_of(bo().suggest(base, 1))[0]
    pend = ctx_from(space, np.vstack([X, first.as_array(DOMAINS)]), y + [None],
                    ["COMPLETE"] * 12 + ["PENDING"])
    nxt = mixtures_of(bo().suggest(pend, 1))[0]
    assert np.abs(nxt.as_array(DOMAINS) - first.as_array(DOMAINS)).sum() > 1e-3


def test_fallback_when_time_limit_tiny(space, caplog):
    X, y = history(space, 12)
    out = mixtures_of(bo(time_limit_s=1e-4).suggest(ctx_from(space, X, y), 3))
    assert "fallback" in caplog.text
    assert len(out) == 3 and all(space.contains(m) for m in out)
    assert len({tuple(m.as_array(DOMAINS)) for m in out}) == 3


def test_select_valid_distinct_indices(space, caplog):
    X, y = history(space, 12)
    pool = np.vstack([X[:3], sample(space, 40, np.random.default_rng(4))])   # 3 rows already run
    for ctx in (ctx_from(space, X[:2], y[:2]), ctx_from(space, X, y)):
        idx = bo().select(ctx, pool, 4)
        assert len(idx) == 4 and len(set(idx)) == 4
        assert all(isinstance(i, int) and 0 <= i < len(pool) for i in idx)
        assert not set(idx) & {0, 1}       # rows equal to a trial's mixture are skipped
    assert bo().select(ctx_from(space, X, y), pool, 4) == bo().select(ctx_from(space, X, y), pool, 4)
    assert "failed" not in caplog.text


def test_recommend_near_optimum_and_warm_start(space):
    X, y = history(space, 20)
    rec = bo().recommend(ctx_from(space, X, y))        # warm start: history added as completed
    assert space.contains(rec.mixture)
    assert bowl(rec.mixture.as_array(DOMAINS)) <= min(y) + 0.01


def test_beats_random_on_a_bowl(space):
    """Best found after 20 evaluations (6 initial), summed over 2 seeds: bo well below random."""
    def run(name, seed):
        s = get_searcher(name, FAST if name == "bo" else {})
        Xs, ys = [], []
        for _ in range(10):
            ctx = ctx_from(space, Xs, ys, seed=seed)
            for m in mixtures_of(s.suggest(ctx, 2)):
                Xs.append(m.as_array(DOMAINS))
                ys.append(bowl(Xs[-1]))
        return min(ys)
    bo_best = sum(run("bo", s) for s in (0, 1))
    rnd_best = sum(np.mean([run("random", s) for s in range(10 * k, 10 * k + 5)]) for k in (0, 1))
    assert bo_best < 0.5 * rnd_best, (bo_best, rnd_best)


def test_options_validated():
    with pytest.raises(ConfigError, match="warp"):
        get_searcher("bo", {"warp": "tan"})
    with pytest.raises(ConfigError, match="time_limit_s"):
        get_searcher("bo", {"time_limit_s": 0})
    with pytest.raises(ConfigError, match="min_fit"):
        get_searcher("bo", {"min_fit": 1})


def test_gp_surrogate_ranks_smooth_function():
    rng = np.random.default_rng(0)
    X, Xt = rng.dirichlet(np.ones(5), 60), rng.dirichlet(np.ones(5), 100)
    f = lambda A: 3.0 + ((A - TARGET) ** 2).sum(1)  # noqa: E731
    s = make_surrogate("gp", seed=0).fit(X, f(X) + 0.002 * rng.normal(size=60))
    p = s.predict(Xt)
    assert p.shape == (100,) and spearmanr(p, f(Xt)).statistic > 0.9
    with pytest.raises(ConfigError, match="unknown option"):
        make_surrogate("gp", bogus=1)


@pytest.mark.parametrize("warp", ["none", "sqrt", "clr", "sqrt_median"])
def test_gp_scales_by_the_simplex_not_the_trials(warp):
    """The GP's input scaling is the range a warped weight can take on the simplex: trials of dense
    mixtures (every weight near 1/k) are not stretched to [0, 1] (that made the GP chase noise on
    ADMIRE's dense tables); every point of the simplex, vertices included, lands in [0, 1]."""
    import torch

    from mixopt.search.gp import SimplexWarp, fit_gp, simplex_bounds, warp_eps

    k = 5
    rng = np.random.default_rng(0)
    X = rng.dirichlet(np.full(k, 50.0), 24)                     # weights within about 0.1-0.3
    y = X @ np.arange(k) + 0.01 * rng.standard_normal(24)
    gp = fit_gp(X, y, warp=warp)
    norm = gp.input_transform.normalize
    eps = warp_eps(warp, X)
    assert torch.allclose(norm.bounds, simplex_bounds(warp, k, eps)) and not norm.learn_coefficients
    corners = np.vstack([np.eye(k), np.full((1, k), 1.0 / k), [[0.0] + [1.0 / (k - 1)] * (k - 1)], X])
    Z = gp.input_transform(torch.as_tensor(corners, dtype=torch.float64))
    assert float(Z.min()) >= -1e-9 and float(Z.max()) <= 1 + 1e-9
    dense = gp.input_transform(torch.as_tensor(X, dtype=torch.float64))
    assert float(dense.max() - dense.min()) < 0.9                 # not stretched to the unit cube
    assert SimplexWarp(warp, range(k))(torch.eye(k, dtype=torch.float64)).shape == (k, k)


def test_sqrt_median_warp_shifts_by_the_trials_median_weight():
    """bo's default warp is sqrt(p + m), m the trials' median weight to one significant digit, at
    least EPS: the plain Hellinger warp on sparse mixtures, close to linear on dense ones."""
    import torch

    from mixopt.search.gp import EPS, fit_gp, simplex_bounds, warp_eps
    from mixopt.search.surrogates import make_surrogate

    assert get_searcher("bo", {}).warp == "sqrt_median"
    assert make_surrogate("bo").warp == "sqrt_median" and make_surrogate("gp").warp == "sqrt"
    assert make_surrogate("bo", warp="clr").warp == "clr"
    rng = np.random.default_rng(1)
    sparse = rng.dirichlet(np.full(8, 0.05), 20)                # most weights ~0
    dense = rng.dirichlet(np.full(8, 200.0), 20)                # every weight near 1/8
    assert warp_eps("sqrt_median", sparse) == EPS and warp_eps("sqrt", dense) == EPS
    assert warp_eps("sqrt_median", dense) == pytest.approx(0.1)   # median 0.125, one digit
    assert warp_eps("sqrt_median", np.full((3, 4), 0.0451)) == pytest.approx(0.05)
    y = dense @ np.arange(8.0)
    gp = fit_gp(dense, y, warp="sqrt_median")
    assert gp.input_transform.warp.eps == pytest.approx(0.1)
    assert torch.allclose(gp.input_transform.normalize.bounds, simplex_bounds("sqrt", 8, 0.1))
    # near-linear for weights below m: the warp of the dense trials spans less than the plain sqrt's
    Xt = torch.as_tensor(dense, dtype=torch.float64)
    span = lambda g: float(g.input_transform(Xt).max() - g.input_transform(Xt).min())  # noqa: E731
    assert span(gp) < span(fit_gp(dense, y, warp="sqrt"))
