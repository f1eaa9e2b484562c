"""The typed worker boundary: what a worker is asked to train, and what it reports back.

The run loop builds a :class:`TrialRequest` per trial; the worker
(:func:`mixopt.proxies.pack_train.run_one`, ``run_pack`` for a list of them; the reference
:func:`mixopt.proxies.train.run_trial` takes the same) trains and returns a :class:`TrialResult`,
or, for a pack member that failed on its own, a :class:`TrialFailure`. These objects travel as they
are from the engine to the executor; only where they cross a process boundary that should not need
mixopt's classes (a Ray task, the HTTP API) do they become plain data, with :meth:`to_dict` on one
side and :meth:`TrialRequest.from_dict` / :func:`outcome_from_dict` on the other.
:meth:`mixopt.study.Study.tell` takes a :class:`TrialResult` (or its dict).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mixopt.core.errors import MixtureError, TrialError, UserError
from mixopt.core.experts import ExpertsSpec
from mixopt.core.mixture import Mixture
from mixopt.core.spec import ProxySpec

DEVICES = ("cpu", "cuda", "auto")
#: why a trial failed: a bad mixture, data it cannot train on, divergence, any other error in the trial,
#: a worker or node lost after its retries
FAILURE_KINDS = ("mixture", "data", "diverged", "error", "system")


@dataclass(frozen=True)
class Branch:
    """Where a branch trial starts: the seed of an expert set (``merge.branch``).

    The trial loads the seed (``<folder>/seed.safetensors``, checked against ``experts``) and trains
    on its own mixture for the rest of the schedule: steps ``experts.seed_steps`` to ``spec.steps``
    of the same learning-rate schedule, fresh AdamW state, as the experts do, with batches of its own
    stream (:meth:`sampler_seed`), not the seed's.

    Attributes:
        experts: the set whose seed it is (its ``spec`` must be the trial's proxy).
        folder: the set's folder on the worker's machine.
    """

    experts: ExpertsSpec
    folder: str

    def sampler_seed(self, spec_seed: int) -> int:
        """The batch stream of a branch: the seed drew its batches with ``spec_seed`` and expert i with
        ``spec_seed + 1 + i``; a branch with the next one (the same stream would hand a mixture near the
        base the windows the seed trained on at the same steps, again)."""
        return spec_seed + 1 + len(self.experts.domains)

    def to_dict(self) -> dict[str, Any]:
        return {"experts": self.experts.to_dict(), "dir": self.folder}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Branch:
        return cls(ExpertsSpec.from_dict(d["experts"]), str(d["dir"]))


@dataclass(frozen=True)
class TrialRequest:
    """One proxy to train.

    Attributes:
        trial_id: the study's trial id (for messages).
        mixture: the mixture over the corpus's domains.
        spec: the proxy to train.
        corpus_dir: the prepared corpus folder (``mixopt.data.Corpus.open``).
        eval_domains: domains to evaluate on (default: every corpus domain).
        num_threads: torch CPU threads for this worker.
        device: "cpu", "cuda" or "auto" (CUDA when present).
        branch: continue this seed instead of training from scratch (None: from scratch).
    """

    trial_id: int
    mixture: Mixture
    spec: ProxySpec
    corpus_dir: str
    eval_domains: tuple[str, ...] = ()
    num_threads: int = 1
    device: str = "cpu"
    branch: Branch | None = None

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"TrialRequest.device: {self.device!r}; allowed: {', '.join(DEVICES)}")
        if not isinstance(self.mixture, Mixture):
            object.__setattr__(self, "mixture", Mixture(self.mixture, where=f"trial {self.trial_id} mixture"))
        if not isinstance(self.spec, ProxySpec):
            object.__setattr__(self, "spec", ProxySpec.from_dict(dict(self.spec)))
        object.__setattr__(self, "eval_domains", tuple(self.eval_domains))
        if self.branch is not None and not isinstance(self.branch, Branch):
            object.__setattr__(self, "branch", Branch.from_dict(dict(self.branch)))
        if self.branch is not None and self.branch.experts.spec.to_dict() != self.spec.to_dict():
            raise ValueError(f"TrialRequest.branch: trial {self.trial_id}'s proxy differs from the seed's "
                             f"({self.branch.experts.spec.preset}); a branch continues the seed's own schedule")
        if self.branch is not None and self.spec.online:
            raise ValueError(f"TrialRequest.branch: trial {self.trial_id} mixes online ({self.spec.online!r}); "
                             "a branch continues the seed on a fixed mixture")

    def to_dict(self) -> dict[str, Any]:
        """Plain data (what a Ray task carries)."""
        d = {"trial_id": self.trial_id, "mixture": self.mixture.to_dict(), "spec": self.spec.to_dict(),
             "corpus_dir": self.corpus_dir, "eval_domains": list(self.eval_domains),
             "num_threads": self.num_threads, "device": self.device}
        return d | ({"branch": self.branch.to_dict()} if self.branch is not None else {})

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrialRequest:
        """The inverse of :meth:`to_dict`.

        Raises:
            MixtureError: the mixture is not one (negative, not summing to 1, ...).
        """
        return cls(int(d["trial_id"]) if d.get("trial_id") is not None else -1, d["mixture"], d["spec"],
                   str(d["corpus_dir"]), tuple(d.get("eval_domains") or ()), int(d.get("num_threads", 1)),
                   str(d.get("device", "cpu")), d.get("branch"))

    @classmethod
    def of(cls, r: TrialRequest | Mapping[str, Any]) -> TrialRequest:
        """``r`` itself, or parsed from its dict."""
        return r if isinstance(r, TrialRequest) else cls.from_dict(r)


@dataclass(frozen=True)
class TrialResult:
    """What a trained proxy reports.

    Attributes:
        losses: final validation loss per evaluated domain (nats/token).
        history: one entry per evaluation: ``{"step", "tokens", "losses", "train_loss", ...}``.
        metrics: every other number (tokens, steps, seconds, train_seconds, tokens_per_s,
            flops_per_token, params, ..., MoE routing statistics).
        trial_id: the request's trial id, when known.
        device: where it trained ("cpu", "cuda"; "" when not reported).
    """

    losses: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    trial_id: int | None = None
    device: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The flat wire form: ``losses``, ``history``, ``trial_id``, ``device`` and each metric at top level."""
        return {**self.metrics, "trial_id": self.trial_id, "losses": dict(self.losses), "history": list(self.history),
                "device": self.device}

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
                return cls({str(k): float(v) for k, v in d.items()})
            except (TypeError, ValueError):
                raise UserError("tell: result must map domain -> loss, or hold 'losses'") from None
        if not isinstance(d["losses"], Mapping):
            raise UserError("tell: result['losses'] must map domain -> loss")
        try:
            losses = {str(k): float(v) for k, v in d["losses"].items()}
        except (TypeError, ValueError):
            raise UserError("tell: result['losses'] must map domain -> a number") from None
        metrics = {k: float(v) for k, v in d.items()
                   if k not in ("losses", "history", "trial_id", "device") and isinstance(v, (int, float))
                   and not isinstance(v, bool)}
        tid = d.get("trial_id")
        return cls(losses, list(d.get("history") or []), metrics, int(tid) if isinstance(tid, int) else None,
                   str(d.get("device") or ""))


@dataclass(frozen=True)
class TrialFailure:
    """A trial that did not produce a result: why (``kind``, one of :data:`FAILURE_KINDS`) and the reason
    recorded with the FAILED trial."""

    trial_id: int | None
    kind: str
    reason: str

    def __post_init__(self) -> None:
        if self.kind not in FAILURE_KINDS:
            raise ValueError(f"TrialFailure.kind: {self.kind!r}; allowed: {', '.join(FAILURE_KINDS)}")

    @classmethod
    def from_exception(cls, e: BaseException, trial_id: int | None = None) -> TrialFailure:
        """The failure an exception raised by a trial stands for (its first line as the reason)."""
        kind = getattr(e, "kind", None)
        if kind not in FAILURE_KINDS:
            kind = "mixture" if isinstance(e, MixtureError) else "error"
        lines = str(e).strip().splitlines()
        return cls(trial_id, kind, f"{type(e).__name__}: {lines[0] if lines else ''}".strip())

    def to_dict(self) -> dict[str, Any]:
        return {"trial_id": self.trial_id, "error": self.reason, "kind": self.kind}

    def to_exception(self) -> MixtureError | TrialError:
        """What a single trial raises for this failure (``run_one``): MixtureError for a bad mixture,
        else a TrialError carrying the kind."""
        if self.kind == "mixture":
            return MixtureError(self.reason)
        return TrialError(self.reason, kind=self.kind)


Outcome = TrialResult | TrialFailure


def outcome_from_dict(d: Mapping[str, Any], trial_id: int | None = None) -> Outcome:
    """A worker's dict (``TrialResult.to_dict()`` or ``TrialFailure.to_dict()``) back as the object."""
    if isinstance(d, Mapping) and d.get("error"):
        kind = d.get("kind") if d.get("kind") in FAILURE_KINDS else "error"
        return TrialFailure(d.get("trial_id", trial_id), kind, str(d["error"]))
    if not isinstance(d, Mapping):
        return TrialFailure(trial_id, "error", f"the trial function returned {type(d).__name__}, not a result")
    r = TrialResult.from_dict(d)
    return r if r.trial_id is not None or trial_id is None else TrialResult(r.losses, r.history, r.metrics,
                                                                              trial_id, r.device)


def to_outcome(x: Any, trial_id: int | None = None) -> Outcome:
    """A trial function's return value (an outcome, or its dict) as an outcome."""
    return x if isinstance(x, (TrialResult, TrialFailure)) else outcome_from_dict(x, trial_id)
