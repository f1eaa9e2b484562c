"""The ``mfbo`` multi-fidelity searcher (small settings: each test runs in seconds)."""

from __future__ import annotations

import numpy as np
import pytest

from mixopt.core.errors import ConfigError  # noqa: E402
from mixopt.core.mixture import Mixture, MixtureSpace  # noqa: E402
from mixopt.search import Observation, Proposal, Rung, SearchContext, get_searcher  # noqa: E402
from mixopt.search.dirichlet import sample  # noqa: E402
from mixopt.search.mfbo import fidelity_features  # noqa: E402

DOMAINS = ("a", "b", "c", "d")
TARGET = np.array([0.4, 0.3, 0.2, 0.1])
LADDER = (Rung(0, {"size": "s"}, 1.0), Rung(1, {"size": "m"}, 8.0), Rung(2, {"size": "l"}, 64.0))
FAST = {"n_pool": 200, "n_candidates": 100, "num_fantasies": 4, "num_restarts": 1, "maxiter": 20,
        "min_fit": 8, "time_limit_s": 300}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/search/conftest.py


@pytest.fixture
def space() -> MixtureSpace:
    return MixtureSpace(DOMAINS, (0.05, 0.0, 0.0, 0.02), (1.0, 0.6, 0.25, 0.5), (0.5, 0.3, 0.15, 0.05))


def f(x, rung):
    """Rung r sees the target objective plus a rung-dependent offset and distortion."""
    x = np.asarray(x)
    return float(((x - TARGET) ** 2).sum() + 0.3 * (2 - rung) + 0.05 * (2 - rung) * x[0])


def ctx_from(space, rows, seed=0, ladder=LADDER) -> SearchContext:
    """rows: (x, rung, value or None, state)."""
    obs = tuple(Observation(i, Mixture.from_array(space.project(x), DOMAINS), st, v, r)
                for i, (x, r, v, st) in enumerate(rows))
    return SearchContext(space, obs, seed, ladder)


def history(space, n_cheap=10, n_target=3, seed=1):
    X = sample(space, n_cheap + n_target, np.random.default_rng(seed))
    return [(x, 0 if i < n_cheap else 2, f(x, 0 if i < n_cheap else 2), "COMPLETE") for i, x in enumerate(X)]


def mfbo(**opts):
    return get_searcher("mfbo", {**FAST, **opts})


def test_needs_a_ladder(space):
    with pytest.raises(ConfigError, match="scale ladder"):
        mfbo().suggest(SearchContext(space, (), 0), 1)


def test_fidelity_features():
    assert np.allclose(fidelity_features([1, 8, 64]), [0, 0.5, 1])
    assert np.allclose(fidelity_features([5, 5]), [0, 1])


def test_initial_design_cheap_with_some_target(space):
    out = mfbo().suggest(ctx_from(space, []), 8)
    assert all(isinstance(p, Proposal) and space.contains(p.mixture) for p in out)
    fids = [p.rung for p in out]
    assert fids.count(0) == 6 and fids.count(2) == 2


def test_model_phase_prefers_cheap_rungs_early(space, caplog):
    rows = history(space) + [(np.array([0.3, 0.3, 0.2, 0.2]), 0, None, "FAILED"),
                             (np.array([0.3, 0.3, 0.2, 0.2]), 0, float("nan"), "COMPLETE")]
    ctx = ctx_from(space, rows, seed=5)
    a = mfbo().suggest(ctx, 2)
    assert a == mfbo().suggest(ctx_from(space, rows, seed=5), 2)      # reproducible
    assert all(space.contains(p.mixture) for p in a)
    assert all(p.rung in (0, 1, 2) for p in a) and min(p.rung for p in a) < 2
    x0, x1 = (p.mixture.as_array(DOMAINS) for p in a)
    assert np.abs(x0 - x1).sum() > 1e-4                                 # batch is distinct
    assert "fallback" not in caplog.text                                # the MF-MES path ran


def test_fallback_when_time_limit_tiny(space):
    out = mfbo(time_limit_s=1e-4).suggest(ctx_from(space, history(space)), 2)
    assert len(out) == 2 and all(space.contains(p.mixture) and p.rung in (0, 1, 2) for p in out)


def test_recommend_at_target(space):
    rec = mfbo().recommend(ctx_from(space, history(space, 12, 6)))
    assert space.contains(rec.mixture) and rec.info["rung"] == 2
    assert rec.info["n_fit_per_rung"] == [12, 0, 6]
    assert np.isfinite(rec.predicted) and abs(rec.predicted - f(rec.mixture.as_array(DOMAINS), 2)) < 0.2


def test_select_at_target(space, caplog):
    pool = sample(space, 30, np.random.default_rng(3))
    idx = mfbo().select(ctx_from(space, history(space)), pool, 3)
    assert len(set(idx)) == 3 and all(isinstance(i, int) and 0 <= i < 30 for i in idx)
    assert "failed" not in caplog.text


def test_target_rung_keeps_its_share(space):
    """Once the model runs, proposals go to the target rung whenever it would fall below min_target_share."""
    rows = history(space, n_cheap=16, n_target=2)                 # 2 / 18 = 11% at the target
    out = mfbo(min_target_share=0.3).suggest(ctx_from(space, rows, seed=2), 3)
    assert [p.rung for p in out] == [2, 2, 2]                  # 2/19, 3/20, 4/21 are all below 0.3
    free = mfbo(min_target_share=0.0).suggest(ctx_from(space, rows, seed=2), 1)
    assert free[0].rung in (0, 1, 2)


def test_recommend_needs_target_evidence(space):
    rows = history(space, n_cheap=14, n_target=2)
    rec = mfbo().recommend(ctx_from(space, rows))                 # min_target = 3 > 2
    assert rec.info["source"] == "best_trial" and rec.info["rung"] == 2 and "min_target" in rec.info["reason"]
    best = min((r for r in rows if r[1] == 2), key=lambda r: r[2])
    assert rec.predicted == best[2]
    cheap_only = history(space, n_cheap=14, n_target=0)
    rec = mfbo().recommend(ctx_from(space, cheap_only))
    assert rec.info["rung"] == 0 and rec.info["n_fit_per_rung"] == [14, 0, 0]
    with pytest.raises(ConfigError, match="min_target_share"):
        get_searcher("mfbo", {"min_target_share": 2})


def test_merged_scores_are_the_zero_training_fidelity(space):
    """Merged scores (model-merging proxies) enter the GP at s = 0 with their real cost, move the rungs
    up the cost model, and are never proposed: every proposal is a rung to train."""
    X = sample(space, 40, np.random.default_rng(3))
    merged = tuple(Observation(-1 - i, Mixture.from_array(x, DOMAINS), "COMPLETE", f(x, 0) + 0.4)
                   for i, x in enumerate(X))
    ctx = ctx_from(space, history(space, n_cheap=4, n_target=3))
    with_merged = SearchContext(ctx.space, ctx.observations, 0, LADDER, merged=merged, merged_cost=0.05)
    m = mfbo(merged_rows=16)
    s, rel = m._ladder(with_merged)
    assert s[0] > 0 and s[-1] == 1 and rel[0] == pytest.approx(0.05 / 64)  # merged: s = 0, the cheapest
    Xd, sv, y = m._data(with_merged, s)
    assert (sv == 0).sum() == 16 and len(y) == 16 + 7  # the best 8 merged and a spread of 8 more, then trials
    assert min(y[sv == 0]) == pytest.approx(min(o.value for o in merged))
    assert np.allclose(m._ladder(ctx)[0], [0, 0.5, 1]) and len(m._data(ctx, m._ladder(ctx)[0])[2]) == 7
    out = m.suggest(with_merged, 2)
    assert len(out) == 2 and all(p.rung in (0, 1, 2) and space.contains(p.mixture) for p in out)
