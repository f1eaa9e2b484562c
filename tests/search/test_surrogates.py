from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from mixopt.core.errors import ConfigError
from mixopt.search.surrogates import NotEnoughDataError, make_surrogate


def data(n, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.dirichlet(np.ones(5), size=n)
    y = 3.0 + ((X - np.array([0.3, 0.3, 0.2, 0.1, 0.1])) ** 2).sum(1) + 0.002 * rng.normal(size=n)
    return X, y


@pytest.mark.parametrize("name", ["lightgbm", "linear"])
def test_fit_predict_ranks(name):
    X, y = data(150)
    Xt, yt = data(100, seed=1)
    opts = {"n_estimators": 300} if name == "lightgbm" else {}
    s = make_surrogate(name, seed=0, **opts).fit(X, y)
    p = s.predict(Xt)
    assert p.shape == (100,) and np.all(np.isfinite(p))
    assert spearmanr(p, yt).statistic > (0.8 if name == "lightgbm" else 0.3)


def test_lightgbm_deterministic_and_seeded():
    X, y = data(80)
    a = make_surrogate("lightgbm", seed=1, n_estimators=200).fit(X, y).predict(X[:5])
    b = make_surrogate("lightgbm", seed=1, n_estimators=200).fit(X, y).predict(X[:5])
    assert np.array_equal(a, b)


def test_lightgbm_small_n_is_not_constant():
    X, y = data(24)
    p = make_surrogate("lightgbm", n_estimators=200).fit(X, y).predict(X)
    assert np.ptp(p) > 0


def test_linear_log_target_and_raw_for_nonpositive():
    X, y = data(50)
    s = make_surrogate("linear").fit(X, y)
    assert s._log
    s = make_surrogate("linear").fit(X, y - 10)
    assert not s._log
    with pytest.raises(ValueError, match="y > 0"):
        make_surrogate("linear", target="log").fit(X, y - 10)


@pytest.mark.parametrize("name", ["lightgbm", "linear"])
def test_tiny_and_bad_inputs(name):
    X, y = data(5)
    with pytest.raises(NotEnoughDataError, match="at least 2"):
        make_surrogate(name).fit(X[:1], y[:1])
    with pytest.raises(ValueError, match="finite"):
        make_surrogate(name).fit(X, np.r_[y[:-1], np.nan])
    with pytest.raises(RuntimeError, match="fit"):
        make_surrogate(name).predict(X)


def test_unknown_name_and_options():
    with pytest.raises(ConfigError, match="allowed: auto, bo, gp, lightgbm, linear, mixing_law"):
        make_surrogate("xgb")
    with pytest.raises(ConfigError, match="linear"):
        make_surrogate("linear", bogus=1)
    with pytest.raises(ConfigError, match="min_child_samples"):
        make_surrogate("lightgbm", min_child_samples=0)


@pytest.mark.parametrize("name", ["mixing_law", "auto", "bo"])
def test_searcher_models_as_surrogates(name):
    """Every searcher's model can be scored by ``mixopt predict``: mixing_law, auto (regmix's default), bo."""
    X, y = data(60)
    Xt, yt = data(80, seed=1)
    s = make_surrogate(name, seed=0).fit(X, y)
    p = s.predict(Xt)
    assert p.shape == (80,) and np.all(np.isfinite(p)) and spearmanr(p, yt).statistic > 0.5
    mean, std = s.predict_std(Xt[:5])
    assert np.allclose(mean, p[:5]) and np.all(std >= 0) and s.has_std
    draw = s.sample(Xt[:5], np.random.default_rng(0))
    assert draw.shape == (5,) and np.all(np.isfinite(draw))


def test_auto_switches_to_lightgbm():
    X, y = data(40)
    s = make_surrogate("auto", switch_at=30, n_estimators=50).fit(X, y)
    assert s.chosen == "lightgbm" and not s.has_std
    assert make_surrogate("auto", switch_at=50).fit(X, y).chosen == "gp"
    with pytest.raises(ConfigError, match="switch_at"):
        make_surrogate("auto", switch_at=1)
    with pytest.raises(ConfigError, match="warp"):
        make_surrogate("auto", warp="tan")
    with pytest.raises(ConfigError, match="restarts"):
        make_surrogate("mixing_law", restarts=0)
    with pytest.raises(ConfigError, match="unknown option"):
        make_surrogate("mixing_law", bogus=1)
