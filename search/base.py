"""The searcher protocol: what a study hands a searcher, and what a searcher hands back.

A searcher is stateless between calls: everything it knows comes from the
:class:`SearchContext` (the space, every trial so far, the study seed), so any process can
resume a study by rebuilding the context from the store of record (Optuna's habit).
"""

from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from mixopt.core.mixture import Mixture, MixtureSpace
from mixopt.core.trial import TrialState


@dataclass(frozen=True)
class Observation:
    """One trial as a searcher sees it.

    ``value`` is the objective to minimize; it is None unless ``state`` is COMPLETE, and a
    non-finite value (nan/inf) counts as a failure. ``state`` is a :class:`TrialState` (a plain
    string such as ``"COMPLETE"`` is converted); a searcher never sees WAITING: an enqueued trial
    not yet handed out is PENDING to it.
    """

    trial_id: int
    mixture: Mixture
    state: TrialState
    value: float | None
    rung: int | None = None  # index into SearchContext.rungs; None = the study's proxy spec (the target)
    losses: Mapping[str, float] | None = None  # per-domain validation losses of a COMPLETE trial

    def __post_init__(self) -> None:
        state = TrialState(self.state)
        object.__setattr__(self, "state", TrialState.PENDING if state is TrialState.WAITING else state)

    @property
    def fidelity(self) -> int | None:
        """Deprecated name of :attr:`rung`."""
        warnings.warn("Observation.fidelity is now Observation.rung", DeprecationWarning, stacklevel=2)
        return self.rung

    @property
    def is_finite(self) -> bool:
        """True for a COMPLETE trial with a finite value: the only rows surrogates may fit."""
        return (self.state is TrialState.COMPLETE and self.value is not None
                and math.isfinite(float(self.value)))


@dataclass(frozen=True)
class Rung:
    """One rung of a study's scale ladder (config ``ladder``): a proxy spec (dict) and its cost per trial.

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
    it at (``rung``: an index into ``SearchContext.rungs``; None = the study's proxy spec).
    Only multi-rung searchers (``mfbo``) set ``rung``."""

    mixture: Mixture
    rung: int | None = None

    @property
    def fidelity(self) -> int | None:
        """Deprecated name of :attr:`rung`."""
        warnings.warn("Proposal.fidelity is now Proposal.rung", DeprecationWarning, stacklevel=2)
        return self.rung

    @staticmethod
    def from_array(X: np.ndarray, domains: Sequence[str], rung: int | None = None) -> list[Proposal]:
        """One proposal per row of X (n, k) aligned to ``domains``."""
        return [Proposal(Mixture.from_array(x, tuple(domains)), rung) for x in np.asarray(X, dtype=float)]


@dataclass(frozen=True)
class SearchContext:
    """Everything a searcher may read: the space, every trial so far (trial-id order), the seed."""

    space: MixtureSpace
    observations: tuple[Observation, ...] = ()
    seed: int = 0
    rungs: tuple[Rung, ...] = ()  # the study's scale ladder, cheapest first; last = target
    objective_weights: Mapping[str, float] = field(default_factory=dict)  # value = sum_d w_d * loss_d
    merged: tuple[Observation, ...] = ()  # mixtures scored by merging experts (never trials; see merged_xy)
    merged_cost: float | None = None  # what one merged score costs, in the unit of the rungs' costs

    @property
    def fidelities(self) -> tuple[Rung, ...]:
        """Deprecated name of :attr:`rungs`."""
        warnings.warn("SearchContext.fidelities is now SearchContext.rungs", DeprecationWarning, stacklevel=2)
        return self.rungs

    @property
    def target_fidelity(self) -> int | None:
        """Deprecated name of :attr:`target_rung`."""
        warnings.warn("SearchContext.target_fidelity is now SearchContext.target_rung", DeprecationWarning,
                      stacklevel=2)
        return self.target_rung

    @property
    def target_rung(self) -> int | None:
        """Index of the target rung (the last one), or None for a single-scale study."""
        return len(self.rungs) - 1 if self.rungs else None

    def _at_target(self, o: Observation) -> bool:
        return o.rung is None or o.rung == self.target_rung

    def completed_xy(self, rung: int | None | str = "target") -> tuple[np.ndarray, np.ndarray]:
        """Finite completed trials: X (n, k) aligned to ``space.domains``, y (n,).

        By default only trials at the target rung (single-rung searchers never mix scales);
        ``rung=i`` selects rung i, ``rung=None`` every rung.
        """
        done = [o for o in self.observations if o.is_finite and (
            rung is None or (self._at_target(o) if rung == "target" else o.rung == rung))]
        k = self.space.dim
        X = np.array([o.mixture.as_array(self.space.domains) for o in done], dtype=float).reshape(-1, k)
        y = np.array([float(o.value) for o in done], dtype=float)  # type: ignore[arg-type]
        return X, y

    def completed_losses(self, domains: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
        """Target-rung finite trials that report a finite loss for every one of ``domains``:
        X (n, k) and losses (n, len(domains)); None if any finite trial lacks one of them."""
        done = [o for o in self.observations if o.is_finite and self._at_target(o)]
        rows = []
        for o in done:
            if o.losses is None or any(not math.isfinite(float(o.losses.get(d, math.nan))) for d in domains):
                return None
            rows.append([float(o.losses[d]) for d in domains])
        X = np.array([o.mixture.as_array(self.space.domains) for o in done], dtype=float).reshape(-1, self.space.dim)
        return X, np.array(rows, dtype=float).reshape(-1, len(domains))

    def merged_xy(self) -> tuple[np.ndarray, np.ndarray]:
        """Mixtures scored by merging the study's experts (model-merging proxies) with a finite merged
        objective: X (m, k) aligned to ``space.domains``, y (m,). Never part of :meth:`completed_xy`."""
        done = [o for o in self.merged if o.is_finite]
        X = np.array([o.mixture.as_array(self.space.domains) for o in done], dtype=float).reshape(-1, self.space.dim)
        return X, np.array([float(o.value) for o in done], dtype=float)  # type: ignore[arg-type]

    def pending_x(self) -> np.ndarray:
        """Mixtures of PENDING/RUNNING trials, (m, k) aligned to ``space.domains``."""
        rows = [o.mixture.as_array(self.space.domains) for o in self.observations
                if o.state in (TrialState.PENDING, TrialState.RUNNING)]
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


#: Deprecated name of :class:`Rung` (the ladder's entries were "fidelities" before they were "rungs").
Fidelity = Rung
