"""RegMix's Dirichlet sampling of mixtures, and the ``random`` searcher built on it.

Scheme (Liu et al. 2024, "RegMix", sail-sg/regmix ``synthesize_mixture.py``): the
concentration is ``alpha = strength * q`` where ``q = prior**0.5`` renormalized (prior = token
shares, tempered so small domains are not starved), and ``strength`` is drawn per sample from
15 log-spaced values in [0.1, 5] (small strength: sparse, peaked mixtures; large: near the
prior). Draws outside the space (caps, incl. the repetition cap) are rejected. Floors are met by
construction: a draw ``d`` maps to ``lower + (1 - sum(lower)) * d``, which is RegMix's scheme
exactly when all floors are 0. Rows still missing after ``max_tries`` rounds are filled with
``space.project(draw)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mixopt.core.errors import ConfigError
from mixopt.core.mixture import MixtureSpace
from mixopt.search.base import Proposal, Recommendation, SearchContext, best_completed

REGMIX_STRENGTHS: tuple[float, ...] = tuple(np.logspace(np.log10(0.1), np.log10(5.0), 15).tolist())
TEMPERATURE = 0.5


def concentration(space: MixtureSpace, temperature: float = TEMPERATURE) -> np.ndarray:
    """Base concentration ``q = prior**temperature / sum``, shape (k,)."""
    q = np.clip(space.prior_array(), 0.0, None) ** temperature
    return q / q.sum()


def sample(space: MixtureSpace, n: int, rng: np.random.Generator,
           strengths: Sequence[float] = REGMIX_STRENGTHS, max_tries: int = 20,
           oversample: float = 2.0) -> np.ndarray:
    """Draw ``n`` mixtures inside ``space``, (n, k) aligned to ``space.domains``.

    Vectorized: each round draws ``oversample * missing`` Dirichlet rows at once (Gamma
    variates, one strength per row), keeps those inside the caps, and repeats up to
    ``max_tries`` rounds; the rest are projected draws.

    Example:
        >>> sp = MixtureSpace(("a", "b", "c"), (0, 0, 0), (1, 1, 0.2))
        >>> X = sample(sp, 4, np.random.default_rng(0))
        >>> X.shape, bool(np.all(X[:, 2] <= 0.2 + 1e-9))
        ((4, 3), True)
    """
    k = space.dim
    if n <= 0:
        return np.zeros((0, k))
    lo, hi = space.lower_array(), space.upper_array()
    free = max(1.0 - lo.sum(), 0.0)
    q = concentration(space)
    s = np.asarray(strengths, dtype=float)
    kept: list[np.ndarray] = []
    have, last = 0, np.zeros((0, k))
    for _ in range(max(int(max_tries), 1)):
        m = max(int(math.ceil((n - have) * oversample)), 16)
        alpha = s[rng.integers(len(s), size=m)][:, None] * q[None, :]   # (m, k)
        g = rng.standard_gamma(alpha)                                    # (m, k)
        tot = g.sum(axis=1, keepdims=True)
        ok_rows = tot[:, 0] > 0
        d = np.where(tot > 0, g / np.where(tot > 0, tot, 1.0), 0.0)
        x = lo[None, :] + free * d
        inside = ok_rows & np.all(x <= hi[None, :] + 1e-12, axis=1)
        last = x[ok_rows]
        kept.append(x[inside])
        have += int(inside.sum())
        if have >= n:
            break
    X = np.concatenate(kept, axis=0)[:n] if kept else np.zeros((0, k))
    if len(X) < n:  # caps too tight for rejection sampling: project the last draws
        extra = last if len(last) else np.tile(q, (1, 1))
        fill = [space.project(extra[i % len(extra)]) for i in range(n - len(X))]
        X = np.concatenate([X, np.array(fill).reshape(-1, k)], axis=0)
    return X / X.sum(axis=1, keepdims=True)


def validate_sampling_options(name: str, strengths: Sequence[float], max_tries: int) -> None:
    """ConfigError unless strengths are positive finite numbers and max_tries >= 1."""
    try:
        s = [float(v) for v in strengths]
    except (TypeError, ValueError):
        raise ConfigError(f"search.options.strengths: {strengths!r} must be a list of positive "
                          f"numbers (searcher {name!r})") from None
    if not s or any(not math.isfinite(v) or v <= 0 for v in s):
        raise ConfigError(f"search.options.strengths: {list(strengths)!r} must be a non-empty "
                          f"list of positive finite numbers (searcher {name!r})")
    if isinstance(max_tries, bool) or not isinstance(max_tries, int) or max_tries < 1:
        raise ConfigError(f"search.options.max_tries: {max_tries!r} must be an integer >= 1 "
                          f"(searcher {name!r})")


@dataclass(frozen=True)
class DirichletSearcher:
    """``random``/``dirichlet``: independent RegMix Dirichlet draws; recommends the best trial."""

    name: str = "random"
    strengths: tuple[float, ...] = REGMIX_STRENGTHS
    max_tries: int = 20

    def __post_init__(self) -> None:
        validate_sampling_options(self.name, self.strengths, self.max_tries)
        object.__setattr__(self, "strengths", tuple(float(v) for v in self.strengths))

    def suggest(self, ctx: SearchContext, n: int) -> list[Proposal]:
        X = sample(ctx.space, n, ctx.rng(f"{self.name}.suggest"), self.strengths, self.max_tries)
        return Proposal.from_array(X, ctx.space.domains)

    def recommend(self, ctx: SearchContext) -> Recommendation:
        return best_completed(ctx, self.name)

    def select(self, ctx: SearchContext, pool: np.ndarray, n: int) -> list[int]:
        """n seeded random rows of ``pool`` (m, k) not equal to an earlier trial."""
        from mixopt.search.pool import random_rows

        return random_rows(ctx, pool, n, f"{self.name}.select")
