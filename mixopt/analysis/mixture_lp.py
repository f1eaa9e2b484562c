"""The linear program of data mixture inference (Hayase et al., arXiv 2407.16607), solved lazily with HiGHS.

A BPE trainer merged, before merge k, the most frequent pair ``m_k``. With ``alpha`` the domains'
shares of the training pairs and ``c_k(p)`` (n,) a pair's counts in the domain samples before merge
k, each normalized by the sample's initial pair count, the paper's program is

    minimize  sum_k v_k + sum_p v_p
    s.t.      alpha . c_k(m_k) + v_k + v_p >= alpha . c_k(p)   for every merge k and pair p,
              alpha >= 0, sum(alpha) = 1, v >= 0,

with ``v_k`` excusing a merge its sample under-counts and ``v_p`` a pair its sample over-counts.
On a few MB of text there are ~10^6 violated (k, p) pairs at T = 3000, so rows are aggregated
exactly: a pair's count is constant between the merges that change it (a *segment* of
:class:`Counts`), so its rows over a segment [a, b) are ``v_p + min_{a<=k<b} u_k >= alpha . c_seg``
with ``u_k = alpha . c_k(m_k) + v_k``. A segment tree over the merges carries the range minima
(``z_node <= z_child``, leaves ``z_k <= u_k``), and one row ``v_p + z_node >= alpha . c_seg`` covers
every merge below the node: the same feasible set and optimum as the paper's program.

Rows are added lazily, as in the paper: a pass under the current solution finds every segment
whose pair beats some merge of it (range minima by a sparse table), adds the row of the tree
node that holds its worst merge, and HiGHS (``scipy.optimize.linprog``) solves again, until a pass
finds no violation: the solution is then optimal for the full program.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog

from mixopt.analysis.bpe_replay import Replay

TOL = 1e-6  # violations below this are ignored (counts are scaled so a median merge counts ~1)


@dataclass(frozen=True)
class Counts:
    """Pair counts of one weighting of the words (the samples, or a bootstrap resample), normalized.

    Each domain's counts are divided by its initial pair count ``P`` and all by one scale that
    makes the median merge's count about 1 (HiGHS' tolerances are absolute). Segments: a pair's
    count is constant on states ``[seg_a, seg_b)``; ``seg (S, n)`` its counts there, ``seg_pair (S,)``.
    ``chosen (T, n)``: each merge's pair's counts before it; ``live (T,)``: whether it occurs at all.
    """

    seg: np.ndarray
    seg_pair: np.ndarray
    seg_a: np.ndarray
    seg_b: np.ndarray
    chosen: np.ndarray
    live: np.ndarray
    P: np.ndarray

    @classmethod
    def build(cls, rp: Replay, word_counts: np.ndarray) -> Counts:
        """Counts from the replay and ``word_counts (words, n)``."""
        T = rp.merges
        raw = rp.group_counts(word_counts)  # (G, n), whole numbers: the running sums below stay exact
        P = raw[: rp.state_ptr[1]].sum(axis=0)
        states = np.repeat(np.arange(T), np.diff(rp.state_ptr))
        order = np.lexsort((states, rp.group_pair))
        pair, a = rp.group_pair[order], states[order]
        cum = np.cumsum(raw[order], axis=0)
        first = np.searchsorted(pair, pair)  # first row of each row's pair
        cum -= np.where((first > 0)[:, None], cum[np.maximum(first - 1, 0)], 0.0)
        last = np.append(pair[1:] != pair[:-1], True)
        b = np.where(last, T, np.append(a[1:], T))
        # each merge's pair: its segment holding state k
        chosen = np.zeros((T, len(P)))
        ok = rp.chosen >= 0
        ks = np.flatnonzero(ok)
        key = pair * (T + 1) + a
        rows = np.searchsorted(key, rp.chosen[ks] * (T + 1) + ks, side="right") - 1
        hit = (rows >= 0) & (pair[np.maximum(rows, 0)] == rp.chosen[ks])
        chosen[ks[hit]] = cum[rows[hit]]
        live = chosen.sum(axis=1) > 0
        norm = 1.0 / np.where(P > 0, P, 1.0)
        typical = np.median((chosen[live] * norm).mean(axis=1)) if live.any() else 1.0
        factor = norm / (typical if typical > 0 else 1.0)
        return cls(cum * factor, pair, a, b, chosen * factor, live, P)


class _Tree:
    """A segment tree over merges 0..T-1: node (level j, index i) covers [i 2^j, (i+1) 2^j) ∩ [0, T)."""

    def __init__(self, T: int) -> None:
        self.T = T
        self.levels = max(1, int(np.ceil(np.log2(max(T, 1))))) + 1
        sizes = [-(-T // 2 ** j) for j in range(self.levels)]
        self.offset = np.concatenate([[0], np.cumsum(sizes)])
        self.nodes = int(self.offset[-1])
        parents, children = [], []
        for j in range(1, self.levels):
            for i in range(sizes[j]):
                for c in (2 * i, 2 * i + 1):
                    if c < sizes[j - 1]:
                        parents.append(self.offset[j] + i)
                        children.append(self.offset[j - 1] + c)
        self.edges = (np.array(parents, dtype=np.int64), np.array(children, dtype=np.int64))

    def node_at(self, k: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The largest node holding merge ``k`` inside ``[a, b)`` (vectorized)."""
        node = self.offset[0] + k
        for j in range(1, self.levels):
            lo = (k >> j) << j
            fits = (lo >= a) & (np.minimum(lo + (1 << j), self.T) <= b)
            node = np.where(fits, self.offset[j] + (k >> j), node)
        return node


def _range_min(u: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(min, argmin) of ``u`` over each ``[a, b)`` (b > a), by a sparse table."""
    table, arg = [u], [np.arange(len(u))]
    j = 1
    while (1 << j) <= len(u):
        prev, parg, h = table[-1], arg[-1], 1 << (j - 1)
        take = prev[h:] < prev[:-h]
        table.append(np.where(take, prev[h:], prev[:-h]))
        arg.append(np.where(take, parg[h:], parg[:-h]))
        j += 1
    lev = np.floor(np.log2(b - a)).astype(np.int64)
    out, idx = np.empty(len(a)), np.empty(len(a), dtype=np.int64)
    for j in np.unique(lev):
        s = lev == j
        x, y = a[s], b[s] - (1 << j)
        left, right = table[j][x], table[j][y]
        take = right < left
        out[s] = np.where(take, right, left)
        idx[s] = np.where(take, arg[j][y], arg[j][x])
    return out, idx


@dataclass
class Solution:
    alpha: np.ndarray  # (n,) pair shares
    v_merge: np.ndarray  # (T,)
    v_pair: np.ndarray  # (K,) zero for pairs without a row
    objective: float
    status: str


class Program:
    """The LP with the tree's rows fixed and pair rows ``(segment, node)`` added lazily.

    Columns: alpha (n), v_k (T), z (tree nodes), v_p (pairs with a row). Rows: the tree's
    ``z_parent <= z_child``, the leaves' ``z_k <= u_k`` (live merges), then the pair rows.
    """

    def __init__(self, counts: Counts, pairs: int) -> None:
        self.c, self.K = counts, pairs
        self.tree = _Tree(counts.chosen.shape[0])
        self.rows: dict[tuple[int, int], None] = {}  # (segment, node), in order added
        self.added = 0

    def add(self, seg: np.ndarray, node: np.ndarray) -> int:
        """Add rows (segment, node) not present yet; returns how many were new."""
        before = len(self.rows)
        self.rows.update(dict.fromkeys(zip(seg.tolist(), node.tolist())))
        self.added += len(self.rows) - before
        return len(self.rows) - before

    def _fixed(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """(rows, cols, values, number of rows) of the tree and leaf rows."""
        c, tree = self.c, self.tree
        T, n = c.chosen.shape
        zc = n + T
        par, chi = tree.edges
        r = np.arange(len(par))
        live = np.flatnonzero(c.live)
        r2 = len(par) + np.arange(len(live))
        rows = np.concatenate([r, r, np.repeat(r2, n), r2, r2])
        cols = np.concatenate([zc + par, zc + chi, np.tile(np.arange(n), len(live)), n + live,
                               zc + tree.offset[0] + live])
        vals = np.concatenate([np.ones(len(r)), -np.ones(len(r)), -c.chosen[live].ravel(), -np.ones(len(live)),
                               np.ones(len(live))])
        return rows, cols, vals, len(par) + len(live)

    def solve(self, drop: bool = False) -> Solution:
        """Solve with HiGHS; ``drop`` then forgets the pair rows that do not bind (zero dual), which a
        later pass adds back if they are violated again. RuntimeError if HiGHS fails (the program is
        always feasible and bounded)."""
        c, tree = self.c, self.tree
        T, n = c.chosen.shape
        keys = np.array(list(self.rows), dtype=np.int64).reshape(-1, 2)
        seg, node = keys[:, 0], keys[:, 1]
        pairs, pcol = np.unique(c.seg_pair[seg], return_inverse=True)
        r0, c0, v0, m0 = self._fixed()
        pc = n + T + tree.nodes  # first v_p column
        r = m0 + np.arange(len(seg))  # alpha.c_seg - v_p - z_node <= 0
        A = sp.csr_matrix((np.concatenate([v0, c.seg[seg].ravel(), -np.ones(len(seg)), -np.ones(len(seg))]),
                           (np.concatenate([r0, np.repeat(r, n), r, r]),
                            np.concatenate([c0, np.tile(np.arange(n), len(seg)), pc + pcol, n + T + node]))),
                          shape=(m0 + len(seg), pc + len(pairs)))
        cost = np.concatenate([np.zeros(n), np.ones(T), np.zeros(tree.nodes), np.ones(len(pairs))])
        eq = np.zeros((1, A.shape[1]))
        eq[0, :n] = 1.0
        bounds = [(0, 1)] * n + [(0, None)] * T + [(None, None)] * tree.nodes + [(0, None)] * len(pairs)
        res = linprog(cost, A_ub=A, b_ub=np.zeros(A.shape[0]), A_eq=eq, b_eq=[1.0], bounds=bounds, method="highs")
        if res.status != 0:
            raise RuntimeError(f"HiGHS failed on the mixture program: {res.message}")
        if drop:
            idle = (np.abs(res.ineqlin.marginals[m0:]) <= 1e-12) & (res.ineqlin.residual[m0:] > TOL)
            for key in map(tuple, keys[idle].tolist()):
                del self.rows[key]
        x = res.x
        v_pair = np.zeros(self.K)
        v_pair[pairs] = x[pc:]
        return Solution(np.clip(x[:n], 0, None), x[n:n + T].copy(), v_pair, float(res.fun), res.message)


def violations(prog: Program, sol: Solution) -> tuple[np.ndarray, np.ndarray]:
    """Segments whose pair beats a merge of theirs under ``sol`` beyond the slack, and the tree node
    holding each one's worst merge: (segments, nodes)."""
    c = prog.c
    u = np.where(c.live, c.chosen @ sol.alpha + sol.v_merge, np.inf)
    val = c.seg @ sol.alpha - sol.v_pair[c.seg_pair]
    cand = np.flatnonzero(val > TOL)
    cand = cand[c.seg_b[cand] > c.seg_a[cand]]
    low, at = _range_min(u, c.seg_a[cand], c.seg_b[cand])
    bad = val[cand] - low > TOL
    seg, k = cand[bad], at[bad]
    return seg, prog.tree.node_at(k, c.seg_a[seg], c.seg_b[seg])


def solve(counts: Counts, pairs: int, warm: Program | None = None, drop_rounds: int = 20, stable_rounds: int = 3,
          stable_tol: float = 1e-7, max_rounds: int = 500) -> tuple[Solution, Program, int]:
    """Add violated rows and re-solve until none is left: (solution, program, rounds).

    Solves forget the rows that do not bind, which keeps the program near the size of its
    optimum's support, until the objective stops rising or ``drop_rounds`` have passed; later
    rounds only add rows. Near the optimum the program is degenerate: rounds can go on moving
    slack between merges and pairs with the shares and the objective unchanged, so the loop also
    ends when both stay put (shares within ``stable_tol``, objective within 1e-9 relative, or
    within ``stable_tol`` too when that is looser) for ``stable_rounds`` rounds; ``status`` says
    which ending it was. ``warm``: a program on another
    weighting of the same replay whose rows start this one.
    """
    prog = Program(counts, pairs)
    if warm is not None:
        keys = np.array(list(warm.rows), dtype=np.int64).reshape(-1, 2)
        prog.add(keys[:, 0], keys[:, 1])
    sol = prog.solve()
    dropping, stable = True, 0
    for rounds in range(1, max_rounds + 1):
        seg, node = violations(prog, sol)
        if prog.add(seg, node) == 0:
            sol.status = f"optimal, no constraint violated ({sol.status})"
            return sol, prog, rounds
        before = sol
        sol = prog.solve(drop=dropping)
        # stop dropping once the objective stalls: near the optimum, dropped rows come back among degenerate vertices
        dropping = dropping and rounds < drop_rounds and sol.objective > before.objective * (1 + 1e-7) + TOL
        same = (np.abs(sol.alpha - before.alpha).max() <= stable_tol
                and abs(sol.objective - before.objective) <= max(1e-9, stable_tol) * max(1.0, abs(before.objective)))
        stable = stable + 1 if same and (not dropping or stable_tol > 1e-7) else 0
        if stable >= stable_rounds:
            sol.status = (f"converged, shares and objective unchanged for {stable_rounds} rounds while "
                          f"{len(seg)} rows were still being added ({sol.status})")
            return sol, prog, rounds
    sol.status += f" (stopped after {max_rounds} rounds)"
    return sol, prog, max_rounds
