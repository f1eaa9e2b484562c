"""The searcher protocol: what a study hands a searcher, and what a searcher hands back.

A searcher is stateless between calls: everything it knows comes from the
:class:`SearchContext` (the space, every trial so far, the study seed), so any process can
resume a study by rebuilding the context from the store of record (Optuna's habit).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from mixopt.core.mixture import Mixture, MixtureSpace

STATES = ("COMPLETE", "FAILED", "PENDING", "RUNNING")


@dataclass(frozen=True)
class Observation:
    """One trial as a searcher sees it.

    ``value`` is the objective to minimize; it is None unless ``state == "COMPLETE"``, and a
    non-finite value (nan/inf) counts as a failure.
    """

    trial_id: int
    mixture: Mixture
    state: str
    value: float | None
    fidelity: int | None = None  # index into SearchContext.fidelities; None = the target fidelity
    losses: Mapping[str, float] | None = None  # per-domain validation losses of a COMPLETE trial

    @property
    def is_finite(self) -> bool:
        """True for a COMPLETE trial with a finite value: the only rows surrogates may fit."""
        return (self.state == "COMPLETE" and self.value is not None
                and math.isfinite(float(self.value)))


@dataclass(frozen=True)
class Fidelity:
    """One rung of a study's scale ladder: a proxy spec (dict) and its cost per trial.

    ``cost`` is the measured mean in-trial training seconds at this rung when trials have
    finished there, else the FLOPs estimate (flops/token x tokens) scaled to seconds by the
    study's measured FLOPs/s, else plain FLOPs; only ratios between rungs matter.
    """

    index: int
    spec: dict
    cost: float


@dataclass(frozen=True)
class Proposal:
    """What ``Searcher.suggest`` returns: a mixture, and the rung of the scale ladder to train
    it at (``fidelity``: an index into ``SearchContext.fidelities``; None = the study's proxy
    spec). Only multi-fidelity searchers set ``fidelity``."""

    mixture: Mixture
    fidelity: int | None = None

    @staticmethod
    def from_array(X: np.ndarray, domains: Sequence[str], fidelity: int | None = None) -> list[Proposal]:
        """One proposal per row of X (n, k) aligned to ``domains``."""
        return [Proposal(Mixture.from_array(x, tuple(domains)), fidelity) for x in np.asarray(X, dtype=float)]


@dataclass(frozen=True)
class SearchContext:
    """Everything a searcher may read: the space, every trial so far (trial-id order), the seed."""

    space: MixtureSpace
    observations: tuple[Observation, ...] = ()
    seed: int = 0
    fidelities: tuple[Fidelity, ...] = ()  # the study's scale ladder, cheapest first; last = target
    objective_weights: Mapping[str, float] = field(default_factory=dict)  # value = sum_d w_d * loss_d

    @property
    def target_fidelity(self) -> int | None:
        """Index of the target fidelity (the last rung), or None for a single-scale study."""
        return len(self.fidelities) - 1 if self.fidelities else None

    def _at_target(self, o: Observation) -> bool:
        return o.fidelity is None or o.fidelity == self.target_fidelity

    def completed_xy(self, fidelity: int | None | str = "target") -> tuple[np.ndarray, np.ndarray]:
        """Finite completed trials: X (n, k) aligned to ``space.domains``, y (n,).

        By default only trials at the target fidelity (single-fidelity searchers never mix
        scales); ``fidelity=i`` selects rung i, ``fidelity=None`` every rung.
        """
        done = [o for o in self.observations if o.is_finite and (
            fidelity is None or (self._at_target(o) if fidelity == "target" else o.fidelity == fidelity))]
        k = self.space.dim
        X = np.array([o.mixture.as_array(self.space.domains) for o in done], dtype=float).reshape(-1, k)
        y = np.array([float(o.value) for o in done], dtype=float)  # type: ignore[arg-type]
        return X, y

    def completed_losses(self, domains: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
        """Target-fidelity finite trials that report a finite loss for every one of ``domains``:
        X (n, k) and losses (n, len(domains)); None if any finite trial lacks one of them."""
        done = [o for o in self.observations if o.is_finite and self._at_target(o)]
        rows = []
        for o in done:
            if o.losses is None or any(not math.isfinite(float(o.losses.get(d, math.nan))) for d in domains):
                return None
            rows.append([float(o.losses[d]) for d in domains])
        X = np.array([o.mixture.as_array(self.space.domains) for o in done], dtype=float).reshape(-1, self.space.dim)
        return X, np.array(rows, dtype=float).reshape(-1, len(domains))

    def pending_x(self) -> np.ndarray:
        """Mixtures of PENDING/RUNNING trials, (m, k) aligned to ``space.domains``."""
        rows = [o.mixture.as_array(self.space.domains) for o in self.observations
                if o.state in ("PENDING", "RUNNING")]
        return np.array(rows, dtype=float).reshape(-1, self.space.dim)

    def all_x(self) -> np.ndarray:
        """Mixtures of every trial (any state), (t, k): what a new proposal should not repeat."""
        rows = [o.mixture.as_array(self.space.domains) for o in self.observations]
        return np.array(rows, dtype=float).reshape(-1, self.space.dim)

    def rng(self, salt: str) -> np.random.Generator:
        """A generator seeded from (seed, number of observations, salt).

        Same history and salt give the same stream in any process (restart-safe); a new
        observation or another salt gives an independent one. ``salt`` is hashed with CRC32,
        not Python's randomized ``hash``.
        """
        return np.random.default_rng(
            [int(self.seed) & 0xFFFFFFFF, len(self.observations), zlib.crc32(salt.encode())])


@dataclass(frozen=True)
class Recommendation:
    """The mixture a searcher recommends for the target run, with its predicted objective."""

    mixture: Mixture
    predicted: float | None
    std: float | None = None
    info: dict = field(default_factory=dict)


@runtime_checkable
class Searcher(Protocol):
    """``suggest(ctx, n)`` returns up to n :class:`Proposal` inside ``ctx.space`` (fewer when
    it holds back, e.g. a concurrency limit); ``recommend(ctx)`` one :class:`Recommendation`."""

    name: str

    def suggest(self, ctx: SearchContext, n: int) -> list[Proposal]: ...

    def recommend(self, ctx: SearchContext) -> Recommendation: ...


def best_completed(ctx: SearchContext, name: str) -> Recommendation:
    """The best finite completed trial (its value as the prediction); the prior if none."""
    best = None
    for o in ctx.observations:
        if o.is_finite and (best is None or float(o.value) < float(best.value)):  # type: ignore[arg-type]
            best = o
    if best is None:
        p = ctx.space.project(ctx.space.prior_array())
        return Recommendation(Mixture.from_array(p, ctx.space.domains), None,
                              info={"searcher": name, "source": "prior", "n_fit": 0})
    return Recommendation(best.mixture, float(best.value),  # type: ignore[arg-type]
                          info={"searcher": name, "source": "best_trial", "trial_id": best.trial_id})
