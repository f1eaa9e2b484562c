"""Cross-cutting searcher behaviour as wrappers (Ray Tune's habit), not flags in every searcher.

* :class:`Hybrid` — an initial design from one searcher, then another (random -> model-based).
* :class:`ConcurrencyLimit` — at most ``max_pending`` trials pending at once.
* :class:`Repeat` — every mixture run ``repeats`` times (seeds); the wrapped searcher sees one
  observation per mixture, the ``nanmean`` of its finite repeats.

Each wrapper is a searcher itself and is stateless (reads everything from the context). Build
them from Python with searcher objects, or by name from a config with searcher names plus
options:

    >>> from mixopt.search import get_searcher
    >>> s = get_searcher("hybrid", {"init": "random", "main": "regmix", "n_init": 8,
    ...                             "main_options": {"surrogate": "linear"}})
    >>> s.main.surrogate
    'linear'
    >>> get_searcher("concurrency_limit", {"searcher": "random", "max_pending": 2}).max_pending
    2
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mixopt.core.errors import ConfigError
from mixopt.core.mixture import Mixture
from mixopt.search.base import Observation, Proposal, Recommendation, SearchContext, Searcher
from mixopt.search.pool import select_from_pool


def _build(owner: str, key: str, s: Any, options: dict) -> Searcher:
    """A searcher object as is, or a registered name built with ``options``."""
    if isinstance(s, str):
        from mixopt.search import get_searcher

        return get_searcher(s, dict(options or {}))
    if not (hasattr(s, "suggest") and hasattr(s, "recommend")):
        raise ConfigError(f"search.options.{key}: {s!r} is not a searcher or searcher name ({owner})")
    if options:
        raise ConfigError(f"search.options.{key}_options: only with a searcher name, not an object ({owner})")
    return s


def _positive_int(owner: str, key: str, v: object, low: int) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
        raise ConfigError(f"search.options.{key}: {v!r} must be an integer >= {low} ({owner})")


def with_pending(ctx: SearchContext, proposals: list[Proposal]) -> SearchContext:
    """``ctx`` plus a PENDING observation per proposal (new trial ids after the last)."""
    start = max((o.trial_id for o in ctx.observations), default=-1) + 1
    extra = tuple(Observation(start + i, p.mixture, "PENDING", None, p.rung)
                  for i, p in enumerate(proposals))
    return dataclasses.replace(ctx, observations=ctx.observations + extra)  # keeps rungs and objective weights


@dataclass(frozen=True)
class Hybrid:
    """``init`` until ``n_init`` trials exist (any state), then ``main``; ``recommend`` is main's.

    ``init``/``main`` are searcher objects, or names built with ``init_options``/``main_options``.
    A batch that straddles the switch gets main's proposals with init's counted as pending.
    """

    init: Any = "random"
    main: Any = "regmix"
    n_init: int = 8
    init_options: dict = field(default_factory=dict)
    main_options: dict = field(default_factory=dict)
    name: str = "hybrid"

    def __post_init__(self) -> None:
        _positive_int(self.name, "n_init", self.n_init, 0)
        object.__setattr__(self, "init", _build(self.name, "init", self.init, self.init_options))
        object.__setattr__(self, "main", _build(self.name, "main", self.main, self.main_options))

    def _n_init_left(self, ctx: SearchContext) -> int:
        return max(int(self.n_init) - len(ctx.observations), 0)

    def suggest(self, ctx: SearchContext, n: int) -> list:
        if n <= 0:
            return []
        k = min(n, self._n_init_left(ctx))
        first = list(self.init.suggest(ctx, k)) if k else []
        if len(first) >= n:
            return first[:n]
        return first + list(self.main.suggest(with_pending(ctx, first), n - len(first)))

    def recommend(self, ctx: SearchContext) -> Recommendation:
        return self.main.recommend(ctx)

    def select(self, ctx: SearchContext, pool: np.ndarray, n: int) -> list[int]:
        k = min(n, self._n_init_left(ctx))
        first = select_from_pool(self.init, ctx, pool, k) if k else []
        if len(first) >= n:
            return first
        rows = [Proposal(Mixture.from_array(pool[i], ctx.space.domains)) for i in first]
        return first + [i for i in select_from_pool(self.main, with_pending(ctx, rows), pool, n - len(first))
                        if i not in first]


@dataclass(frozen=True)
class ConcurrencyLimit:
    """At most ``max_pending`` PENDING/RUNNING trials: ``suggest(ctx, n)`` returns
    ``min(n, max_pending - pending)`` proposals, possibly none."""

    searcher: Any = "random"
    max_pending: int = 1
    options: dict = field(default_factory=dict)
    name: str = "concurrency_limit"

    def __post_init__(self) -> None:
        _positive_int(self.name, "max_pending", self.max_pending, 1)
        object.__setattr__(self, "searcher", _build(self.name, "searcher", self.searcher, self.options))

    def _room(self, ctx: SearchContext, n: int) -> int:
        return max(0, min(int(n), int(self.max_pending) - len(ctx.pending_x())))

    def suggest(self, ctx: SearchContext, n: int) -> list:
        k = self._room(ctx, n)
        return list(self.searcher.suggest(ctx, k))[:k] if k else []

    def recommend(self, ctx: SearchContext) -> Recommendation:
        return self.searcher.recommend(ctx)

    def select(self, ctx: SearchContext, pool: np.ndarray, n: int) -> list[int]:
        k = self._room(ctx, n)
        return select_from_pool(self.searcher, ctx, pool, k) if k else []


def _key(m: Mixture, domains: tuple[str, ...]) -> tuple[float, ...]:
    return tuple(np.round(m.as_array(domains), 9).tolist())


@dataclass(frozen=True)
class Repeat:
    """Each mixture is run ``repeats`` times; the wrapped searcher sees one observation per
    mixture whose value is the ``nanmean`` of its finite repeats (non-finite ones count as nan).

    Stateless: with ``top_up`` (default), mixtures in the context with fewer than ``repeats``
    trials (any state) are proposed again first, oldest first, so ``ask(1)`` loops still get
    full repeat groups; note that this also repeats warm-start mixtures. With ``top_up=False``
    only the copies within one ``suggest`` call are made (ask in multiples of ``repeats``).
    """

    searcher: Any = "random"
    repeats: int = 3
    options: dict = field(default_factory=dict)
    top_up: bool = True
    name: str = "repeat"

    def __post_init__(self) -> None:
        _positive_int(self.name, "repeats", self.repeats, 1)
        object.__setattr__(self, "searcher", _build(self.name, "searcher", self.searcher, self.options))

    def collapse(self, ctx: SearchContext) -> SearchContext:
        """One observation per (mixture, rung): COMPLETE with the nanmean if any repeat has a
        finite value, else PENDING if one is still pending, else FAILED. Order of first trial."""
        groups: dict[tuple, list[Observation]] = {}
        for o in ctx.observations:
            groups.setdefault((_key(o.mixture, ctx.space.domains), o.rung), []).append(o)
        out = []
        for obs in groups.values():
            vals = [float(o.value) if o.is_finite else math.nan for o in obs if o.state == "COMPLETE"]
            first = obs[0]
            if any(math.isfinite(v) for v in vals):
                out.append(Observation(first.trial_id, first.mixture, "COMPLETE", float(np.nanmean(vals)),
                                       first.rung))
            elif any(o.state in ("PENDING", "RUNNING") for o in obs):
                out.append(Observation(first.trial_id, first.mixture, "PENDING", None, first.rung))
            else:
                out.append(Observation(first.trial_id, first.mixture, "FAILED", None, first.rung))
        return dataclasses.replace(ctx, observations=tuple(out))

    def _top_ups(self, ctx: SearchContext) -> list:
        counts: dict[tuple, list] = {}
        for o in ctx.observations:
            counts.setdefault((_key(o.mixture, ctx.space.domains), o.rung), []).append(o)
        out: list = []
        for obs in counts.values():
            o = obs[0]
            item = Proposal(o.mixture, o.rung)
            out += [item] * max(int(self.repeats) - len(obs), 0)
        return out

    def suggest(self, ctx: SearchContext, n: int) -> list:
        if n <= 0:
            return []
        out = self._top_ups(ctx)[:n] if self.top_up else []
        if len(out) < n:
            m = math.ceil((n - len(out)) / int(self.repeats))
            for p in self.searcher.suggest(self.collapse(ctx), m):
                out += [p] * int(self.repeats)
        return out[:n]

    def recommend(self, ctx: SearchContext) -> Recommendation:
        return self.searcher.recommend(self.collapse(ctx))

    def select(self, ctx: SearchContext, pool: np.ndarray, n: int) -> list[int]:
        """Pool rows are distinct runs, so there is nothing to repeat: the wrapped searcher's
        choice on the collapsed context."""
        return select_from_pool(self.searcher, self.collapse(ctx), pool, n)

