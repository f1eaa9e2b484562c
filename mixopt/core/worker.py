"""The typed worker boundary: what a worker is asked to train, and what it reports back.

The run loop builds a :class:`TrialRequest` per trial; an executor ships it to a worker as a
plain dict (:meth:`TrialRequest.to_dict`, so Ray needs no mixopt classes to pickle); the worker
(:func:`mixopt.proxies.pack_train.run_one`, or ``run_pack`` for a list of them; the reference
:func:`mixopt.proxies.train.run_trial` takes the same) parses it with :meth:`TrialRequest.from_dict`, trains,
and returns :meth:`TrialResult.to_dict`; :meth:`mixopt.study.Study.tell` reads that back with
:meth:`TrialResult.from_dict`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from mixopt.core.errors import UserError

DEVICES = ("cpu", "cuda", "auto")


@dataclass(frozen=True)
class TrialRequest:
    """One proxy to train.

    Attributes:
        trial_id: the study's trial id (for messages).
        mixture: {domain: weight}, summing to 1, over the corpus's domains.
        spec: ``ProxySpec.to_dict()`` of the proxy to train.
        corpus_dir: the prepared corpus folder (``mixopt.data.Corpus.open``).
        eval_domains: domains to evaluate on (default: every corpus domain).
        num_threads: torch CPU threads for this worker.
        device: "cpu", "cuda" or "auto" (CUDA when present).
    """

    trial_id: int
    mixture: dict[str, float]
    spec: dict[str, Any]
    corpus_dir: str
    eval_domains: tuple[str, ...] = ()
    num_threads: int = 1
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"TrialRequest.device: {self.device!r}; allowed: {', '.join(DEVICES)}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["eval_domains"] = list(self.eval_domains)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrialRequest:
        return cls(int(d["trial_id"]) if d.get("trial_id") is not None else -1, dict(d["mixture"]), dict(d["spec"]),
                   str(d["corpus_dir"]), tuple(d.get("eval_domains") or ()), int(d.get("num_threads", 1)),
                   str(d.get("device", "cpu")))


@dataclass(frozen=True)
class TrialResult:
    """What a trained proxy reports.

    Attributes:
        losses: final validation loss per evaluated domain (nats/token).
        history: one entry per evaluation: ``{"step", "tokens", "losses", "train_loss", ...}``.
        metrics: every other number (tokens, steps, seconds, train_seconds, tokens_per_s,
            flops_per_token, params, ..., MoE routing statistics).
        trial_id: the request's trial id, when known.
    """

    losses: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    trial_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The flat wire form: ``losses``, ``history``, ``trial_id`` and each metric at top level."""
        return {**self.metrics, "trial_id": self.trial_id, "losses": dict(self.losses), "history": list(self.history)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrialResult:
        """Read a result: the wire form above, or a plain ``{domain: loss}`` mapping.

        Raises:
            UserError: not a mapping, or a loss that is not a number.
        """
        if not isinstance(d, Mapping):
            raise UserError(f"tell: result must be a mapping or a number, got {type(d).__name__}")
        if "losses" not in d:
            try:
                return cls({str(k): _number(v) for k, v in d.items()})
            except (TypeError, ValueError):
                raise UserError("tell: result must map domain -> loss, or hold 'losses'") from None
        if not isinstance(d["losses"], Mapping):
            raise UserError("tell: result['losses'] must map domain -> loss")
        try:
            losses = {str(k): _number(v) for k, v in d["losses"].items()}
        except (TypeError, ValueError):
            raise UserError("tell: result['losses'] must map domain -> a number") from None
        metrics = {k: float(v) for k, v in d.items()
                   if k not in ("losses", "history", "trial_id") and isinstance(v, (int, float))
                   and not isinstance(v, bool)}
        tid = d.get("trial_id")
        return cls(losses, list(d.get("history") or []), metrics, int(tid) if isinstance(tid, int) else None)


def _number(v: Any) -> float:
    return float(v)
