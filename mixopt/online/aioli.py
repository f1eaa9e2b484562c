"""Aioli (Chen et al. 2024, arXiv 2411.05735): estimate the mixing law during training, mix by it.

Training is cut into rounds of ``update_steps`` steps (after ``prior_steps`` steps on the start
mixture, the "restricted" setting). Each round starts with LearnParams (Algorithm 2): with the k
smoothed one-hot mixtures ``w_j = one_hot_factor`` on domain j and ``(1 - one_hot_factor)/(k-1)``
elsewhere, visited ``lp_rounds`` times each in a seeded random order, train ``lp_steps`` steps on
each, evaluating every domain before the first and after each visit. The loss drops give
``G[i, j]`` = mean drop of domain i's loss over the visits of w_j, and the linear dynamic mixing
law ``drop_i = A_i . w`` gives ``A = G W^-1`` (W's rows are the w_j; ``diagonal``: keep
``G_jj / one_hot_factor`` only). With ``normalize_a`` A is shifted to be >= 0 and scaled to sum
1; with ``ema`` it is smoothed across rounds (``A_ema = (1-ema) A + ema A_ema``). The update is
exponentiated gradient on the column sums (what training on j buys all domains):

    p_j  proportional to  base_j * exp(eta * sum_i A_ij)

where base is the anchor (the start mixture, the paper's p^0; "uniform": the reference code) for
the first round or with ``ema``, and the previous p otherwise. The rest of the round trains on p.
The update is multiplicative: with ``anchor: start`` a domain the start gives 0 stays at 0 in p
(LearnParams still probes it); use ``anchor: uniform`` or a start with every weight > 0 to let it in.

Per round: ``k * lp_rounds * lp_steps`` LearnParams steps and ``k * lp_rounds + 1`` evaluations.
Defaults: the reference repository's published command (HazyResearch/aioli README,
``scripts/arxiv_stackexchange/aioli/run.sh``): eta 0.2, lp_rounds 4, lp_steps 4, update_steps 250,
one_hot_factor 0.625, ema 0.1, normalize_a on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mixopt.core.errors import OnlineMixerError
from mixopt.online.base import OnlineMixer, check_range, matrix, plain, vector


@dataclass(frozen=True)
class AioliOptions:
    """Aioli's options (the reference code's flag in brackets)."""

    eta: float = 0.2  # exponentiated-gradient step size [--eta]
    lp_rounds: int = 4  # sweeps over the k one-hot mixtures per LearnParams [--lp_rounds]
    lp_steps: int = 4  # steps trained per one-hot visit [--lp_steps]
    update_steps: int = 250  # round length, LearnParams included [--update_steps]
    one_hot_factor: float = 0.625  # weight of the probed domain in its smoothed one-hot [--one_hot_factor]
    ema: float | None = 0.1  # smoothing of A across rounds; None: cumulative update [--ema]
    normalize_a: bool = True  # shift A to >= 0 and scale to sum 1 [--aioli_normalize_A]
    diagonal: bool = False  # keep only A's diagonal [--aioli_diagonal]
    prior_steps: int = 0  # restricted start: steps on the start mixture before the first round [--prior_steps]
    anchor: str = "start"  # base of the update: "start" (the paper's p^0) or "uniform" (the reference code)
    seed: int = 0  # order of the one-hot visits


class AioliMixer(OnlineMixer):
    """Aioli as an online mixer; see the module docstring for the algorithm and its defaults."""

    name = "aioli"
    Options = AioliOptions

    def _check_options(self) -> None:
        o, k, w = self.options, len(self.domains), self.name
        check_range(math.isfinite(o.eta) and o.eta > 0, f"{w}.eta", o.eta, "a finite number > 0")
        for key in ("lp_rounds", "lp_steps", "update_steps"):
            check_range(getattr(o, key) >= 1, f"{w}.{key}", getattr(o, key), "an integer >= 1")
        check_range(1.0 / k < o.one_hot_factor <= 1.0, f"{w}.one_hot_factor", o.one_hot_factor,
                    f"a number in (1/k, 1] = ({1.0 / k:.4g}, 1] for {k} domains")
        check_range(o.ema is None or 0.0 <= o.ema < 1.0, f"{w}.ema", o.ema, "null or a number in [0, 1)")
        check_range(o.prior_steps >= 0, f"{w}.prior_steps", o.prior_steps, "an integer >= 0")
        check_range(o.anchor in ("start", "uniform"), f"{w}.anchor", o.anchor, "one of start, uniform")
        check_range(isinstance(o.seed, int) and not isinstance(o.seed, bool) and o.seed >= 0, f"{w}.seed", o.seed,
                    "an integer >= 0")
        lp = k * o.lp_rounds * o.lp_steps
        if lp >= o.update_steps:
            raise OnlineMixerError(
                f"{w}.update_steps: {o.update_steps} leaves no step to mix on after LearnParams's "
                f"k*lp_rounds*lp_steps = {k}*{o.lp_rounds}*{o.lp_steps} = {lp} steps; raise update_steps above {lp} "
                "or lower lp_rounds / lp_steps")

    def _init_state(self) -> None:
        k = len(self.domains)
        self._lp_len = k * self.options.lp_rounds * self.options.lp_steps
        self._p = self.start.copy()  # the method's mixture p^t
        self._prev: np.ndarray | None = None  # losses at the last evaluation of this round's LearnParams
        self._grad: np.ndarray | None = None  # (k, k) summed loss drops G, column j = visits of w_j
        self._ema: np.ndarray | None = None  # (k, k) smoothed A
        self._a: np.ndarray | None = None  # (k, k) the last round's A (after normalization)
        self._last_eval = -1
        self._order_cache: tuple[int, np.ndarray] = (-1, np.zeros(0, dtype=int))
        o = self.options
        self._probes = np.full((k, k), (1.0 - o.one_hot_factor) / (k - 1))  # row j: smoothed one-hot w_j
        np.fill_diagonal(self._probes, o.one_hot_factor)

    # ----- schedule ---------------------------------------------------------------------------

    def locate(self, t: int) -> tuple[int, int] | None:
        """(round, offset in the round) of step t; None during the prior steps."""
        o = self.options
        if t < o.prior_steps:
            return None
        return divmod(t - o.prior_steps, o.update_steps)

    def order(self, r: int) -> np.ndarray:
        """Round r's LearnParams visits: ``lp_rounds`` seeded permutations of the k domains, concatenated."""
        if self._order_cache[0] != r:
            rng = np.random.default_rng([self.options.seed, r])
            k = len(self.domains)
            self._order_cache = (r, np.concatenate([rng.permutation(k) for _ in range(self.options.lp_rounds)]))
        return self._order_cache[1]

    def _is_eval_point(self, offset: int) -> bool:
        return offset <= self._lp_len and offset % self.options.lp_steps == 0

    def _eval_due(self) -> bool:
        loc = self.locate(self._step)
        return loc is not None and self._is_eval_point(loc[1]) and self._last_eval != self._step

    def _now(self) -> tuple[str, np.ndarray, None, np.ndarray, bool, bool, int | None]:
        t, o = self._step, self.options
        loc = self.locate(t)
        if loc is None:
            return "prior", self._p, None, self._p, False, False, o.prior_steps
        r, off = loc
        due = self._is_eval_point(off) and self._last_eval != t
        if off < self._lp_len:
            visit = off // o.lp_steps
            phase, mix, until = "learn", self._probes[self.order(r)[visit]], t - off + (visit + 1) * o.lp_steps
        else:
            phase, mix, until = "mix", self._p, t - off + o.update_steps
        return phase, mix, None, self._p, due, False, t if due else until

    # ----- updates ----------------------------------------------------------------------------

    def _prepare_eval(self, losses: np.ndarray) -> dict[str, Any]:
        r, off = self.locate(self._step)
        if off == 0:
            k = len(self.domains)
            return {"_prev": losses.copy(), "_grad": np.zeros((k, k)), "_last_eval": self._step}
        if self._grad is None or self._prev is None:
            raise OnlineMixerError(f"{self.name}: the state holds no losses from the start of round {r}'s LearnParams")
        j = self.order(r)[off // self.options.lp_steps - 1]
        grad = self._grad.copy()
        grad[:, j] += self._prev - losses
        new: dict[str, Any] = {"_prev": losses.copy(), "_grad": grad, "_last_eval": self._step}
        if off == self._lp_len:
            new.update(self._update(grad, r))
        return new

    def estimate(self, grad: np.ndarray) -> np.ndarray:
        """A from the summed loss drops G (k, k): mean over visits, unsmoothed by W, normalized."""
        o = self.options
        g = grad / o.lp_rounds
        if o.diagonal:
            a = np.diag(np.diag(g) / o.one_hot_factor)
        elif o.one_hot_factor != 1.0:
            a = np.linalg.solve(self._probes, g.T).T  # A[i] = W^-1 G[i]: drop_i(w_j) = A_i . w_j
        else:
            a = g
        if o.normalize_a:
            lo = a.min()
            if lo < 0:
                a = a - lo
            s = a.sum()
            a = a / s if s > 0 else np.zeros_like(a)
        return a

    def _update(self, grad: np.ndarray, r: int) -> dict[str, Any]:
        o = self.options
        a = self.estimate(grad)
        anchor = self.start if o.anchor == "start" else np.full(len(self.domains), 1.0 / len(self.domains))
        if o.ema is not None:
            ema = a if (r == 0 or self._ema is None) else (1.0 - o.ema) * a + o.ema * self._ema
            gain, base = ema.sum(axis=0), anchor
        else:
            ema, gain, base = None, a.sum(axis=0), (anchor if r == 0 else self._p)
        z = o.eta * (gain - gain.max())
        p = base * np.exp(z)
        return {"_p": p / p.sum(), "_a": a, "_ema": ema, "_updates": self._updates + 1}

    # ----- state ------------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        return {"p": plain(self._p), "prev": plain(self._prev), "grad": plain(self._grad), "ema": plain(self._ema),
                "a": plain(self._a), "last_eval": self._last_eval}

    def _parse_state(self, d: Mapping[str, Any], where: str) -> dict[str, Any]:
        k = len(self.domains)
        last = d.get("last_eval")
        if not isinstance(last, int) or isinstance(last, bool) or last < -1:
            raise OnlineMixerError(f"{where}.last_eval: must be an integer >= -1, got {last!r}")
        p = vector(d.get("p"), f"{where}.p", k)
        if np.any(p < 0) or abs(p.sum() - 1.0) > 1e-6:
            raise OnlineMixerError(f"{where}.p: must be >= 0 and sum to 1")
        prev = None if d.get("prev") is None else vector(d.get("prev"), f"{where}.prev", k)
        return {"_p": p, "_prev": prev, "_grad": matrix(d.get("grad"), f"{where}.grad", k),
                "_ema": matrix(d.get("ema"), f"{where}.ema", k), "_a": matrix(d.get("a"), f"{where}.a", k),
                "_last_eval": last}

    def _extra_summary(self) -> dict[str, Any]:
        return {"a": plain(self._a)}
