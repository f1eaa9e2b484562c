"""merge_screen: the best merged mixtures are trained first, then the inner searcher; what it recommends."""

import dataclasses

import numpy as np
import pytest

from mixopt.core.errors import ConfigError
from mixopt.core.mixture import Mixture, MixtureSpace
from mixopt.search import get_searcher
from mixopt.search.base import Observation, SearchContext

SPACE = MixtureSpace(("a", "b", "c"), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def _merged(n: int = 30, seed: int = 0) -> tuple[Observation, ...]:
    """Merged scores whose best mixtures lean on domain a (value = 3 - 2 w_a + noise)."""
    rng = np.random.default_rng(seed)
    W = rng.dirichlet(np.ones(3), n)
    vals = 3.0 - 2.0 * W[:, 0] + 0.01 * rng.standard_normal(n)
    return tuple(Observation(i, Mixture.from_array(w, SPACE.domains), "COMPLETE", float(v))
                 for i, (w, v) in enumerate(zip(W, vals)))


def _ctx(trials: list[tuple[np.ndarray, float]], merged=None) -> SearchContext:
    obs = tuple(Observation(i, Mixture.from_array(SPACE.project(x), SPACE.domains), "COMPLETE", v)
                for i, (x, v) in enumerate(trials))
    return SearchContext(SPACE, obs, 0, merged=_merged() if merged is None else merged)


def _ranked_merged(ctx: SearchContext) -> np.ndarray:
    X, y = ctx.merged_xy()
    return X[np.argsort(y, kind="stable")]


def test_trains_the_best_merged_mixtures_first_then_the_inner_searcher():
    s = get_searcher("merge_screen", {"searcher": "random", "train_top": 2})
    ctx = _ctx([])
    first = s.suggest(ctx, 2)
    best = _ranked_merged(ctx)
    assert np.allclose(first[0].mixture.as_array(SPACE.domains), best[0])
    assert np.abs(best - first[1].mixture.as_array(SPACE.domains)).sum(1).min() < 1e-9
    # both screened mixtures trained: the next proposals are the inner searcher's (not merged mixtures)
    done = _ctx([(p.mixture.as_array(SPACE.domains), 2.0) for p in first])
    later = s.suggest(done, 3)
    assert len(later) == 3
    assert all(np.abs(best - p.mixture.as_array(SPACE.domains)).sum(1).min() > 1e-6 for p in later)


def test_without_merged_scores_it_is_the_inner_searcher():
    s = get_searcher("merge_screen", {"searcher": "random"})
    inner = get_searcher("random")
    ctx = _ctx([], merged=())
    assert [p.mixture for p in s.suggest(ctx, 3)] == [p.mixture for p in inner.suggest(ctx, 3)]


def test_recommends_through_the_inner_searcher_by_default():
    trials = [(np.array([0.2, 0.3, 0.5]), 2.5), (np.array([0.6, 0.2, 0.2]), 2.1), (np.array([0.1, 0.8, 0.1]), 2.9)]
    ctx = _ctx(trials)
    rec = get_searcher("merge_screen", {"searcher": "random"}).recommend(ctx)
    inner = get_searcher("random").recommend(ctx)
    assert rec.info["via"] == "merge_screen" and rec.mixture == inner.mixture and rec.info.get("source") != "merged"


def test_merged_and_trained_recommendations():
    trials = [(np.array([0.2, 0.3, 0.5]), 2.5), (np.array([0.6, 0.2, 0.2]), 2.1)]
    ctx = _ctx(trials)
    rec = get_searcher("merge_screen", {"searcher": "random", "recommend_from": "merged", "top_k": 4}).recommend(ctx)
    X, y = ctx.merged_xy()
    top = np.argsort(y, kind="stable")[:4]
    assert rec.info["source"] == "merged" and rec.info["top_k"] == 4 and rec.info["n_merged"] == 30
    assert np.allclose(rec.mixture.as_array(SPACE.domains), SPACE.project(X[top].mean(0)))
    assert rec.predicted == pytest.approx(float(np.mean(y[top])))
    best = get_searcher("merge_screen", {"searcher": "random", "recommend_from": "trained"}).recommend(ctx)
    assert np.allclose(best.mixture.as_array(SPACE.domains), [0.6, 0.2, 0.2]) and best.predicted == 2.1


@pytest.mark.parametrize("opts, needle", [({"recommend_from": "best"}, "recommend_from"),
                                          ({"train_top": -1}, "train_top"), ({"min_distance": 2.5}, "min_distance")])
def test_bad_options_name_themselves(opts, needle):
    with pytest.raises(ConfigError, match=needle):
        get_searcher("merge_screen", {"searcher": "random", **opts})


def test_options_are_a_frozen_dataclass():
    s = get_searcher("merge_screen", {"searcher": "random"})
    assert dataclasses.is_dataclass(s) and s.recommend_from == "inner"
