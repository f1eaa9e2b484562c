"""Trial: one proposal (mixture + proxy spec) and what became of it."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field, replace
from typing import Any

from mixopt.core.mixture import Mixture
from mixopt.core.spec import ProxySpec


class TrialState(str, enum.Enum):
    WAITING = "WAITING"  # enqueued by the user, not yet handed out by ask()
    PENDING = "PENDING"  # handed out by ask(), not started
    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"
    FAILED = "FAILED"

    @property
    def finished(self) -> bool:
        return self in (TrialState.COMPLETE, TrialState.FAILED)


@dataclass(frozen=True)
class Trial:
    """One proxy run of a study.

    ``value`` is the objective (lower is better) of a COMPLETE trial; a trial whose metrics are
    not finite is FAILED with a reason, never given a made-up value. ``losses`` maps every
    evaluated domain to its final validation loss; ``metrics`` holds the rest (tokens/s, ...);
    ``history`` the per-evaluation losses with their step.
    """

    trial_id: int
    mixture: Mixture
    spec: ProxySpec | None = None
    state: TrialState = TrialState.PENDING
    value: float | None = None
    losses: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    searcher: str = ""
    phase: str = ""  # "init", "model", "enqueued", "warm_start"
    error: str | None = None
    run_id: str | None = None
    label: str = ""  # a name for an enqueued mixture ("uniform", "recommended", ...), else ""
    device: str = ""  # where a trained trial ran ("cpu", "cuda"), when reported

    def with_(self, **kw: Any) -> Trial:
        return replace(self, **kw)

    @property
    def ok(self) -> bool:
        return self.state is TrialState.COMPLETE and self.value is not None and math.isfinite(self.value)

    @property
    def tokens_seen(self) -> float:
        """Training tokens behind this trial's model, the D of a scaling-law fit: those it trained
        (``metrics["tokens"]``, else the spec's budget) and, for a branch of a seed
        (``metrics["branch_start_step"]``), the seed's steps before it. A trial without a spec: nan."""
        if self.spec is None:
            return math.nan
        seed = float(self.metrics.get("branch_start_step") or 0) * self.spec.batch_size * self.spec.seq_len
        return float(self.metrics.get("tokens") or self.spec.tokens - seed) + seed
