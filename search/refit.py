"""When a searcher refits its model's parameters, and the per-process cache that makes it cheap.

Searchers are stateless between calls, so "reuse the last fit" must not change results: a
model's fitted parameters for n trials are a deterministic function of the trials (in trial
order), the study seed and the searcher's options. The schedule below makes that cheap:

* full fits happen only at the row counts of :func:`refit_points` (every n up to
  ``EVERY_BELOW``, then gaps growing by ``GROWTH - 1`` of the count, at most ``MAX_GAP`` rows);
  between two points the parameters of the last point ``p <= n`` are reused (the GP's posterior,
  a mixing law's local refinement, are still computed on all n rows);
* a fit at a point warm-starts from the previous point's parameters (:func:`warm_start_from`)
  when both lie in the same octave ``[2^j, 2^(j+1))``, except at every ``CHAIN``-th point of an
  octave, and starts from fixed initial values at those and at each octave's first point: a
  process without the cache recomputes at most ``CHAIN`` fits and gets the same numbers.

:class:`FitCache` (an LRU per process, keyed by configuration, seed, row count and a hash of the
rows) only saves time; :func:`clear_caches` empties every cache.

Example:
    >>> refit_points(30)
    [2, 3, 4, 5, 6, 7, 8, 10, 13, 17, 22, 28]
    >>> last_refit_point(27), same_octave(17, 22), same_octave(28, 35), warm_start_from(22)
    (22, True, False, 17)
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Hashable

import numpy as np

EVERY_BELOW = 8
GROWTH = 1.25
MAX_GAP = 32
CHAIN = 4


def refit_points(n: int) -> list[int]:
    """Row counts <= n at which parameters are fitted: 2..EVERY_BELOW, then each point plus
    ceil((GROWTH - 1) * point) rows, at most MAX_GAP: 8, 10, 13, 17, 22, 28, 35, 44, 55, 69, ..."""
    pts = list(range(2, min(n, EVERY_BELOW) + 1))
    p = EVERY_BELOW
    while True:
        p += min(max(1, math.ceil((GROWTH - 1.0) * p)), MAX_GAP)
        if p > n:
            return pts
        pts.append(p)


def last_refit_point(n: int) -> int:
    """The last schedule point <= n (n itself below 2)."""
    pts = refit_points(n)
    return pts[-1] if pts else n


def previous_refit_point(p: int) -> int | None:
    """The schedule point before p, or None."""
    pts = refit_points(p - 1)
    return pts[-1] if pts else None


def warm_start_from(p: int) -> int | None:
    """The schedule point whose fit the fit at point p starts from, or None (fixed initial values):
    the previous point, when in p's octave and p is not a multiple-of-CHAIN point of the octave."""
    pts = refit_points(p)
    if not pts or pts[-1] != p or len(pts) < 2 or not same_octave(pts[-2], p):
        return None
    pos = sum(1 for q in pts if same_octave(q, p)) - 1          # p's index within its octave
    return None if pos % CHAIN == 0 else pts[-2]


def same_octave(a: int, b: int) -> bool:
    """True when a and b lie in one ``[2^j, 2^(j+1))``: a fit at b may warm-start from a's."""
    return int(a).bit_length() == int(b).bit_length()


def digest(*arrays: np.ndarray) -> str:
    """A 128-bit hash of the arrays' bytes (shape and dtype included)."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(repr((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


class FitCache:
    """A small LRU of fitted parameters; ``stats`` counts hits, misses and fits."""

    _all: list[FitCache] = []

    def __init__(self, size: int = 256) -> None:
        self.size = int(size)
        self._d: OrderedDict[Hashable, object] = OrderedDict()
        self.stats = {"hits": 0, "fits": 0, "drift_refits": 0}
        FitCache._all.append(self)

    def get(self, key: Hashable) -> object | None:
        v = self._d.get(key)
        if v is not None:
            self._d.move_to_end(key)
            self.stats["hits"] += 1
        return v

    def put(self, key: Hashable, value: object) -> object:
        self._d[key] = value
        while len(self._d) > self.size:
            self._d.popitem(last=False)
        return value

    def clear(self) -> None:
        self._d.clear()

    def __len__(self) -> int:
        return len(self._d)


def clear_caches() -> None:
    """Empty every :class:`FitCache` (results do not change; the next fits take longer)."""
    for c in FitCache._all:
        c.clear()
