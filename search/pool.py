"""Pool selection: which rows of a fixed table of mixtures to evaluate next (``mixopt replay``).

A searcher may implement ``select(ctx, pool, n) -> list[int]``: pool is (m, k) aligned to
``ctx.space.domains``; it returns the indices of the next n rows to evaluate, best first,
skipping rows equal to a trial already in ``ctx``. :func:`select_from_pool` runs any searcher
that way: through its ``select`` when it has one, otherwise by snapping each of its
``suggest(ctx, n)`` proposals to the nearest not-yet-chosen row (Euclidean on the weights).

Example:
    >>> from mixopt.core.mixture import MixtureSpace
    >>> from mixopt.search import SearchContext, get_searcher
    >>> sp = MixtureSpace(("a", "b"), (0, 0), (1, 1))
    >>> pool = np.array([[0.1, 0.9], [0.5, 0.5], [0.9, 0.1]])
    >>> sorted(select_from_pool(get_searcher("random"), SearchContext(sp, (), 0), pool, 2))
    [0, 2]
"""

from __future__ import annotations

import numpy as np

from mixopt.core.mixture import MixtureSpace
from mixopt.search.base import SearchContext, Searcher

MATCH_TOL = 1e-9


def project_rows(space: MixtureSpace, P: np.ndarray) -> np.ndarray:
    """``space.project`` applied to each row of P (n, k) (the space projects one vector). (n, k)."""
    P = np.asarray(P, dtype=float).reshape(-1, space.dim)
    return np.array([space.project(p) for p in P]).reshape(-1, space.dim)


def fresh_rows(ctx: SearchContext, pool: np.ndarray, tol: float = MATCH_TOL) -> np.ndarray:
    """Indices of pool rows (m, k) not equal (max abs difference <= tol) to any trial in ctx."""
    pool = np.asarray(pool, dtype=float)
    seen = ctx.all_x()
    if len(seen) == 0 or len(pool) == 0:
        return np.arange(len(pool))
    dup = np.zeros(len(pool), dtype=bool)
    for s in seen:                                  # (t,) loop keeps memory at O(m k)
        dup |= np.abs(pool - s[None, :]).max(axis=1) <= tol
    return np.flatnonzero(~dup)


def random_rows(ctx: SearchContext, pool: np.ndarray, n: int, salt: str) -> list[int]:
    """n seeded random fresh rows of pool (fewer if fewer are fresh)."""
    idx = fresh_rows(ctx, pool)
    return ctx.rng(salt).permutation(idx)[:n].tolist()


def snap(proposals: np.ndarray, pool: np.ndarray, allowed: np.ndarray) -> list[int]:
    """Each proposal (s, k) to the nearest allowed row of pool (Euclidean), each row used once."""
    free = np.zeros(len(pool), dtype=bool)
    free[allowed] = True
    out: list[int] = []
    for x in np.asarray(proposals, dtype=float).reshape(-1, pool.shape[1]):
        if not free.any():
            break
        d = np.where(free, ((pool - x[None, :]) ** 2).sum(axis=1), np.inf)
        j = int(np.argmin(d))
        out.append(j)
        free[j] = False
    return out


def select_from_pool(searcher: Searcher, ctx: SearchContext, pool: np.ndarray, n: int) -> list[int]:
    """Indices of the next ``n`` rows of ``pool`` (m, k) for ``searcher`` to evaluate.

    Uses ``searcher.select`` when present, else snaps ``searcher.suggest(ctx, n)`` to the
    nearest fresh rows. The result is distinct indices of fresh rows, as many as the searcher
    answered (at most n; fewer only if fewer rows are fresh or the searcher holds back, as a
    concurrency limit does); invalid or repeated indices are replaced by seeded random fresh rows.
    """
    pool = np.asarray(pool, dtype=float)
    if pool.ndim != 2 or pool.shape[1] != ctx.space.dim:
        raise ValueError(f"select_from_pool: pool must be (m, {ctx.space.dim}), got {pool.shape}")
    if n <= 0:
        return []
    fresh = fresh_rows(ctx, pool)
    n = min(n, len(fresh))
    if hasattr(searcher, "select"):
        raw = searcher.select(ctx, pool, n)
    else:
        props = searcher.suggest(ctx, n)
        X = np.array([p.mixture.as_array(ctx.space.domains)
                      for p in props]).reshape(-1, ctx.space.dim)
        raw = snap(X, pool, fresh)
    want = min(n, len(raw))                         # fewer on purpose (a concurrency limit): fine
    ok = set(fresh.tolist())
    out: list[int] = []
    for i in raw:
        i = int(i)
        if i in ok and i not in out:
            out.append(i)
    if len(out) < want:                             # top up invalid or repeated indices
        rest = [int(i) for i in ctx.rng("pool.topup").permutation(fresh) if int(i) not in out]
        out += rest[: want - len(out)]
    return out[:want]


def untried_rows(pool: np.ndarray, taken: np.ndarray, n: int) -> np.ndarray:
    """Row indices of ``pool`` not equal (within 1e-9) to a row of ``taken``; all rows if
    fewer than n would remain."""
    if len(taken) == 0:
        return np.arange(len(pool))
    d = np.abs(pool[:, None, :] - taken[None, :, :]).sum(-1).min(axis=1)    # (m,)
    fresh = np.flatnonzero(d > 1e-9)
    return fresh if len(fresh) >= n else np.arange(len(pool))


def spread(cands: np.ndarray, taken: np.ndarray, n: int, min_distance: float) -> np.ndarray:
    """Greedily take ``n`` rows of ``cands`` (best first) at L1 distance >= min_distance from
    ``taken`` and from each other, halving the distance while too few qualify. (n, k)."""
    k = cands.shape[1]
    chosen: list[np.ndarray] = []
    used = np.zeros(len(cands), dtype=bool)
    d = float(min_distance)
    while len(chosen) < n:
        ref = np.vstack([taken.reshape(-1, k)] + [c[None, :] for c in chosen])
        for i in np.flatnonzero(~used):
            if len(ref) == 0 or np.abs(ref - cands[i]).sum(axis=1).min() >= d:
                chosen.append(cands[i])
                used[i] = True
                ref = np.vstack([ref, cands[i][None, :]])
                if len(chosen) == n:
                    break
        if d == 0.0 and len(chosen) < n:   # fewer candidates than n: repeat the best ones
            chosen += [cands[j % len(cands)] for j in range(n - len(chosen))]
        d = 0.0 if d < 1e-6 else d / 2
    return np.array(chosen[:n]).reshape(-1, k)
