"""Wrappers: Hybrid schedule, ConcurrencyLimit, Repeat (nanmean of seed repeats)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mixopt.core.errors import ConfigError
from mixopt.core.mixture import Mixture, MixtureSpace
from mixopt.search import Observation, SearchContext, get_searcher
from mixopt.search.dirichlet import DirichletSearcher, sample
from mixopt.search.pool import select_from_pool
from mixopt.search.regmix import RegMixSearcher
from mixopt.search.wrappers import ConcurrencyLimit, Hybrid, Repeat

DOMAINS = ("a", "b", "c")
SPACE = MixtureSpace(DOMAINS, (0.0, 0.0, 0.1), (1.0, 0.7, 1.0))
LIN = {"surrogate": "linear", "n_candidates": 300, "top_k": 10}


def _mix(proposals) -> list:
    """The mixtures of a searcher's proposals."""
    return [p.mixture for p in proposals]


def obs(i, x, state="COMPLETE", value=1.0):
    return Observation(i, Mixture.from_array(np.asarray(x, float), DOMAINS), state,
                       value if state == "COMPLETE" else None)


def ctx_of(items, seed=0) -> SearchContext:
    return SearchContext(SPACE, tuple(obs(i, *it) for i, it in enumerate(items)), seed)


def hist(n):
    X = sample(SPACE, n, np.random.default_rng(0))
    return [(x, "COMPLETE", float(x @ [1.0, 2.0, 3.0])) for x in X]


def test_hybrid_switches_after_n_init():
    h = Hybrid(DirichletSearcher(), RegMixSearcher(**LIN), 6)
    ctx = ctx_of(hist(3))
    rnd = _mix(DirichletSearcher().suggest(ctx, 3))
    assert _mix(h.suggest(ctx, 3)) == rnd                                  # still the initial design
    both = _mix(h.suggest(ctx, 5))                                         # 3 random, then regmix
    assert both[:3] == rnd and len(both) == 5
    ctx10 = ctx_of(hist(10))
    assert _mix(h.suggest(ctx10, 2)) == _mix(RegMixSearcher(**LIN).suggest(ctx10, 2))
    assert h.recommend(ctx10) == RegMixSearcher(**LIN).recommend(ctx10)


def test_hybrid_by_name_and_errors():
    h = get_searcher("hybrid", {"init": "random", "main": "regmix", "n_init": 4, "main_options": LIN})
    assert isinstance(h.main, RegMixSearcher) and h.main.surrogate == "linear" and h.n_init == 4
    with pytest.raises(ConfigError, match="unknown searcher"):
        get_searcher("hybrid", {"main": "nope"})
    with pytest.raises(ConfigError, match="n_init"):
        get_searcher("hybrid", {"n_init": -1})
    with pytest.raises(ConfigError, match="top_k"):
        get_searcher("hybrid", {"main_options": {"top_k": 0}})


def test_hybrid_select_uses_init_rows_first():
    pool = sample(SPACE, 30, np.random.default_rng(4))
    h = Hybrid("random", "regmix", 2, main_options=LIN)
    ctx = ctx_of(hist(1))
    idx = select_from_pool(h, ctx, pool, 3)
    assert len(set(idx)) == 3
    assert idx[:1] == select_from_pool(DirichletSearcher(), ctx, pool, 1)


def test_concurrency_limit():
    c = ConcurrencyLimit(DirichletSearcher(), max_pending=3)
    items = hist(4) + [(x, "PENDING") for x in sample(SPACE, 2, np.random.default_rng(9))]
    ctx = ctx_of(items)
    assert len(_mix(c.suggest(ctx, 5))) == 1
    assert _mix(c.suggest(ctx, 5)) == _mix(DirichletSearcher().suggest(ctx, 1))
    full = ctx_of(items + [(sample(SPACE, 1, np.random.default_rng(8))[0], "RUNNING")])
    assert _mix(c.suggest(full, 4)) == [] and select_from_pool(c, full, sample(SPACE, 5, np.random.default_rng(1)), 2) == []
    assert len(_mix(c.suggest(ctx_of(hist(4)), 2))) == 2
    assert get_searcher("concurrency_limit", {"searcher": "regmix", "options": LIN, "max_pending": 2}).max_pending == 2
    with pytest.raises(ConfigError, match="max_pending"):
        ConcurrencyLimit(DirichletSearcher(), 0)


def test_repeat_proposes_copies_and_tops_up():
    r = Repeat(DirichletSearcher(), repeats=3)
    ctx = ctx_of(hist(2))                                            # warm-start mixtures: 1 trial each
    assert _mix(Repeat(DirichletSearcher(), 3, top_up=False).suggest(ctx, 4))[:3] == [_mix(DirichletSearcher().suggest(
        Repeat(DirichletSearcher(), 3).collapse(ctx), 2))[0]] * 3
    first = _mix(r.suggest(ctx, 4))                                        # top-ups first: 2 + 2 copies of hist[0]/[1]
    assert first == [Mixture.from_array(hist(2)[0][0], DOMAINS)] * 2 + [Mixture.from_array(hist(2)[1][0], DOMAINS)] * 2
    done = [(x, "COMPLETE", 1.0) for x, *_ in hist(2) for _ in range(3)]
    new = _mix(r.suggest(ctx_of(done), 5))
    assert new[0] == new[1] == new[2] and new[3] == new[4] and new[0] != new[3]
    m = new[0].as_array(DOMAINS)                                     # one copy run: top up the other two
    assert _mix(r.suggest(ctx_of(done + [(m, "COMPLETE", 1.0)]), 2)) == [new[0]] * 2


def test_repeat_collapses_with_nanmean():
    x, y = sample(SPACE, 2, np.random.default_rng(2))
    ctx = ctx_of([(x, "COMPLETE", 1.0), (x, "COMPLETE", math.nan), (x, "COMPLETE", 3.0), (x, "FAILED"),
                  (y, "FAILED"), (y, "PENDING")])
    col = Repeat(DirichletSearcher(), 3).collapse(ctx)
    assert [(o.state, o.value) for o in col.observations] == [("COMPLETE", 2.0), ("PENDING", None)]
    ctx2 = ctx_of([(y, "FAILED"), (y, "COMPLETE", math.inf)])
    assert [o.state for o in Repeat(DirichletSearcher(), 2).collapse(ctx2).observations] == ["FAILED"]
    rec = Repeat("random", 3).recommend(ctx)
    assert rec.predicted == 2.0


def test_repeat_recommend_uses_means():
    x, y = sample(SPACE, 2, np.random.default_rng(3))
    ctx = ctx_of([(x, "COMPLETE", 0.5), (x, "COMPLETE", 2.5), (y, "COMPLETE", 1.0), (y, "COMPLETE", 1.2)])
    assert DirichletSearcher().recommend(ctx).mixture.as_array(DOMAINS) == pytest.approx(x)
    assert Repeat(DirichletSearcher(), 2).recommend(ctx).mixture.as_array(DOMAINS) == pytest.approx(y)
