"""The online-mixer protocol: :class:`StepPlan` and the :class:`OnlineMixer` base class.

A mixer is a deterministic state machine over training steps (0, 1, 2, ...). ``mixer.step`` is
the next step to train. For that step, :meth:`OnlineMixer.plan` says what to do (a
:class:`StepPlan`: the mixture to sample, whether an evaluation is due first, whether the batch's
per-domain train losses must be reported, per-domain loss weights); :meth:`OnlineMixer.observe`
takes the reports: ``kind="eval"`` (per-domain validation losses, every domain, measured before
the step) and ``kind="train"`` (the step's batch losses, any subset of domains, possibly ``{}``),
which completes the step. Every report is checked in full before anything changes, so a bad
report raises :class:`~mixopt.core.errors.OnlineMixerError` and leaves the mixer as it was.

Everything that crosses the boundary is plain data (str, int, float, bool, lists, dicts):
:meth:`StepPlan.to_dict`, the reports, :meth:`OnlineMixer.state_dict`, so the same object can sit
in the engine, in a user's loop, or behind an HTTP endpoint.
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import numpy as np

from mixopt.core.errors import ConfigError, MixtureError, OnlineMixerError
from mixopt.core.loader import from_dict
from mixopt.core.mixture import Mixture

FORMAT = "mixopt.online/1"
KINDS = ("train", "eval")


@dataclass(frozen=True)
class StepPlan:
    """What to do at training step ``step`` (0-based; ``step`` steps are done already).

    - ``phase``: ``"prior"`` (a restricted start's fixed steps), ``"learn"`` (Aioli's LearnParams
      probes) or ``"mix"`` (training on the method's mixture).
    - ``mixture``: sample this step's examples by these weights (domain -> weight, sums to 1).
    - ``evaluate``: before training this step, measure per-domain validation losses (nats/token,
      every domain) and report them with ``observe(step, losses, kind="eval")``; then ask for the
      plan again: the mixture may change.
    - ``report``: after the step, ``observe(step, losses)`` must carry the batch's per-domain
      mean train losses (DoReMi). Otherwise ``observe(step, {})`` completes the step.
    - ``loss_weights``: per-domain multipliers of each example's loss; the step's loss is
      ``sum_x w[d(x)] l(x) / sum_x w[d(x)]`` (DoReMi's reweighted objective). None: plain mean.
    - ``domain_weights``: the method's own current mixture (Aioli's p^t, DoReMi's alpha_t), the
      trajectory to log; it differs from ``mixture`` during LearnParams and in DoReMi's
      reweight mode.
    - ``until``: the plan holds for every step in ``[step, until)`` as long as only ``observe(s, {})``
      comes in; ``None``: for the rest of training; ``== step``: report the evaluation first.
    """

    step: int
    phase: str
    mixture: dict[str, float]
    domain_weights: dict[str, float]
    evaluate: bool = False
    report: bool = False
    loss_weights: dict[str, float] | None = None
    until: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (dict(v) if isinstance(v := getattr(self, f.name), dict) else v) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StepPlan:
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


def as_number(v: Any) -> float | None:
    """``float(v)`` for numbers (int, float, numpy and 0-d tensor scalars); None for anything else."""
    if isinstance(v, (bool, str, bytes)):
        return None
    try:
        return float(v)
    except (TypeError, ValueError, RuntimeError):
        return None


def check_domains(domains: Any, where: str) -> tuple[str, ...]:
    if isinstance(domains, (str, bytes)) or not isinstance(domains, Sequence):
        raise OnlineMixerError(f"{where}: domains must be a list of names, got {domains!r}")
    out = tuple(domains)
    if len(out) < 2 or not all(isinstance(d, str) and d for d in out):
        raise OnlineMixerError(f"{where}: domains must be 2 or more non-empty names, got {list(out)!r}")
    if len(set(out)) != len(out):
        raise OnlineMixerError(f"{where}: duplicate domain names in {list(out)!r}")
    return out


def check_start(start: Any, domains: tuple[str, ...], where: str) -> np.ndarray:
    """The start mixture as a vector aligned with ``domains``; None or "uniform": 1/k each."""
    if start is None or (isinstance(start, str) and start == "uniform"):
        return np.full(len(domains), 1.0 / len(domains))
    if not isinstance(start, Mapping):
        raise OnlineMixerError(f"{where}.start: must be a mapping domain -> weight or 'uniform', got {start!r}")
    unknown = [str(d) for d in start if d not in domains]
    if unknown:
        raise OnlineMixerError(f"{where}.start: unknown domains {', '.join(unknown)}; allowed: {', '.join(domains)}")
    missing = [d for d in domains if d not in start]
    if missing:
        raise OnlineMixerError(f"{where}.start: no weight for {', '.join(missing)}; give every domain a weight (0 allowed)")
    try:
        m = Mixture(start, domains, f"{where}.start")
    except MixtureError as e:
        raise OnlineMixerError(str(e)) from None
    return np.array([m[d] for d in domains], dtype=float)


def vector(value: Any, where: str, k: int, allow_nan: bool = False) -> np.ndarray:
    """A saved length-k vector of finite floats (None entries are NaN when ``allow_nan``)."""
    if not isinstance(value, (list, tuple)) or len(value) != k:
        raise OnlineMixerError(f"{where}: must be a list of {k} numbers")
    xs = [math.nan if (x is None and allow_nan) else as_number(x) for x in value]
    if any(x is None or (not math.isfinite(x) and not (allow_nan and math.isnan(x))) for x in xs):
        raise OnlineMixerError(f"{where}: holds a value that is not a finite number")
    return np.array(xs, dtype=float)


def matrix(value: Any, where: str, k: int) -> np.ndarray | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != k:
        raise OnlineMixerError(f"{where}: must be a {k} x {k} list of lists")
    return np.stack([vector(row, f"{where}[{i}]", k) for i, row in enumerate(value)])


def plain(x: np.ndarray | None) -> Any:
    """A vector or matrix as JSON-ready lists (NaN -> None); None stays None."""
    if x is None:
        return None
    return [None if math.isnan(v) else v for v in x.tolist()] if x.ndim == 1 else x.tolist()


class OnlineMixer:
    """Base class of every online mixer; subclasses set ``name``, ``Options`` and the hooks below.

    Hooks: ``_init_state()``; ``_now()`` -> (phase, mixture, loss_weights | None, domain_weights,
    evaluate, report, until) for ``self._step``; ``_eval_due()``; ``_prepare_eval(losses)`` and
    ``_prepare_train(losses, mask, reference, where)`` return the new values of the mixer's
    attributes (they must not change anything themselves); ``_state()`` / ``_parse_state(d)``.
    Not thread-safe: one caller at a time (a server holds a lock per mixer).
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type]

    def __init__(self, domains: Sequence[str], *, start: Mapping[str, float] | str | None = None,
                 study: str | None = None, **options: Any) -> None:
        self.domains = check_domains(domains, self.name)
        self._index = {d: i for i, d in enumerate(self.domains)}
        if study is not None and (not isinstance(study, str) or not study):
            raise OnlineMixerError(f"{self.name}.study: must be a non-empty string or None, got {study!r}")
        self.study = study
        try:
            self.options = from_dict(self.Options, dict(options), self.name)
        except ConfigError as e:
            raise OnlineMixerError(str(e)) from None
        self._check_options()
        self.start = check_start(start, self.domains, self.name)
        self.fingerprint = fingerprint(self._identity())
        k = len(self.domains)
        self._step, self._evals, self._learn_steps, self._updates = 0, 0, 0, 0
        self._dw_sum, self._data_sum = np.zeros(k), np.zeros(k)
        self._init_state()

    # ----- the protocol -----------------------------------------------------------------------

    @property
    def step(self) -> int:
        """The next training step (the number of steps completed)."""
        return self._step

    def plan(self) -> StepPlan:
        """What to do at step ``self.step`` (see :class:`StepPlan`)."""
        phase, mix, lw, dw, evaluate, report, until = self._now()
        return StepPlan(self._step, phase, self._dict(mix), self._dict(dw), evaluate, report,
                        None if lw is None else self._dict(lw), until)

    def weights(self) -> dict[str, float]:
        """The mixture to sample at step ``self.step`` (domain -> weight; ``plan().mixture``)."""
        return self._dict(self._now()[1])

    def observe(self, step: int, losses: Mapping[str, float], *, kind: str = "train",
                reference: Mapping[str, float] | None = None) -> None:
        """Report per-domain losses for ``step`` (must equal ``self.step``).

        ``kind="eval"``: validation losses of every domain, measured before training ``step``,
        only when ``plan().evaluate``. ``kind="train"``: the step's batch losses (mean per domain
        present; ``{}`` when the plan does not ask for them); completes the step. ``reference``:
        the reference model's per-domain losses on the same batch (DoReMi only).
        Raises :class:`OnlineMixerError` (state unchanged) on any bad input.
        """
        where = f"{self.name}.observe(step={step!r}, kind={kind!r})"
        if kind not in KINDS:
            raise OnlineMixerError(f"{where}: kind must be one of {', '.join(KINDS)}")
        t = self._check_step(step, where)
        if kind == "eval":
            if reference is not None:
                raise OnlineMixerError(f"{where}: reference losses go with train reports, not evaluations")
            if not self._eval_due():
                raise OnlineMixerError(f"{where}: no evaluation is due at step {t}; send one when plan().evaluate is true")
            vec, _ = self.check_losses(losses, where, full=True)
            new = self._prepare_eval(vec)
            new["_evals"] = self._evals + 1
        else:
            if self._eval_due():
                raise OnlineMixerError(f"{where}: an evaluation is due before step {t}; report per-domain validation "
                                       "losses with kind='eval' first")
            vec, mask = self.check_losses(losses, where, full=False)
            phase, mix, _, dw, *_ = self._now()
            new = self._prepare_train(vec, mask, reference, where)
            new.update(_data_sum=self._data_sum + mix, _dw_sum=self._dw_sum + dw, _step=t + 1,
                       _learn_steps=self._learn_steps + (phase == "learn"))
        for attr, value in new.items():  # everything is checked: commit
            setattr(self, attr, value)

    def average(self) -> dict[str, float]:
        """The method's output mixture for a static run: its domain weights averaged over the steps
        trained (DoReMi: over its updates, as in the paper). Before any step: the current ones."""
        if self._step == 0:
            return self._dict(self._now()[3])
        return self._dict(self._dw_sum / self._dw_sum.sum())

    def summary(self) -> dict[str, Any]:
        """Plain-data summary for logging: current and average weights, the trained mixture, counts."""
        trained = self._data_sum / self._data_sum.sum() if self._step else self._now()[1]
        return {"mixer": self.name, "step": self._step, "weights": self.weights(),
                "domain_weights": self._dict(self._now()[3]), "average": self.average(),
                "trained": self._dict(trained), "stats": self.stats(), **self._extra_summary()}

    def stats(self) -> dict[str, int]:
        """Counts: steps trained, evaluations reported, LearnParams steps, weight updates."""
        return {"steps": self._step, "evals": self._evals, "learn_steps": self._learn_steps, "updates": self._updates}

    def options_dict(self) -> dict[str, Any]:
        return asdict(self.options)

    # ----- state ------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the same trajectory, as JSON-ready plain data."""
        return {**self._identity(), "fingerprint": self.fingerprint, "step": self._step,
                "stats": {"evals": self._evals, "learn_steps": self._learn_steps, "updates": self._updates},
                "sums": {"domain_weights": plain(self._dw_sum), "data": plain(self._data_sum)},
                "method": self._state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state`` (from :meth:`state_dict`). Refused, with nothing changed, when
        it belongs to another mixer, study, domain list, start or options, or is malformed."""
        where = f"{self.name}.load_state_dict"
        if not isinstance(state, Mapping):
            raise OnlineMixerError(f"{where}: state must be a mapping (from state_dict()), got {type(state).__name__}")
        self._check_identity(state, where)
        k = len(self.domains)
        step, stats, sums = state.get("step"), state.get("stats"), state.get("sums")
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise OnlineMixerError(f"{where}: step must be an integer >= 0, got {step!r}")
        if not isinstance(stats, Mapping) or not isinstance(sums, Mapping):
            raise OnlineMixerError(f"{where}: stats and sums must be mappings")
        new: dict[str, Any] = {"_step": step}
        for key in ("evals", "learn_steps", "updates"):
            v = stats.get(key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise OnlineMixerError(f"{where}: stats.{key} must be an integer >= 0, got {v!r}")
            new[f"_{key}"] = v
        new["_dw_sum"] = vector(sums.get("domain_weights"), f"{where}: sums.domain_weights", k)
        new["_data_sum"] = vector(sums.get("data"), f"{where}: sums.data", k)
        method = state.get("method")
        if not isinstance(method, Mapping):
            raise OnlineMixerError(f"{where}: method must be a mapping")
        new.update(self._parse_state(method, f"{where}: method"))
        for attr, value in new.items():
            setattr(self, attr, value)

    # ----- checks -----------------------------------------------------------------------------

    def check_losses(self, losses: Any, where: str, full: bool) -> tuple[np.ndarray, np.ndarray]:
        """A report as (vector with NaN where absent, mask of present domains); checks every entry."""
        if not isinstance(losses, Mapping):
            raise OnlineMixerError(f"{where}: losses must be a mapping domain -> loss, got {type(losses).__name__}")
        k = len(self.domains)
        vec, mask = np.full(k, math.nan), np.zeros(k, dtype=bool)
        for d, v in losses.items():
            i = self._index.get(d) if isinstance(d, str) else None
            if i is None:
                raise OnlineMixerError(f"{where}: unknown domain {d!r}; allowed: {', '.join(self.domains)}")
            x = as_number(v)
            if x is None:
                raise OnlineMixerError(f"{where}: loss of {d!r} is {v!r}, not a number")
            if not math.isfinite(x) or x < 0:
                raise OnlineMixerError(f"{where}: loss of {d!r} is {x}; losses must be finite and >= 0")
            vec[i], mask[i] = x, True
        if full and not mask.all():
            missing = [d for d, m in zip(self.domains, mask) if not m]
            raise OnlineMixerError(f"{where}: no loss for {', '.join(missing)}; an evaluation reports every domain")
        return vec, mask

    def _check_step(self, step: Any, where: str) -> int:
        try:
            t = operator.index(step)
        except TypeError:
            t = None
        if t is None or isinstance(step, bool):
            raise OnlineMixerError(f"{where}: step must be an integer, got {step!r}")
        if t != self._step:
            raise OnlineMixerError(f"{where}: the mixer is at step {self._step}; report each step once, in order")
        return t

    def _identity(self) -> dict[str, Any]:
        return {"format": FORMAT, "mixer": self.name, "study": self.study, "domains": list(self.domains),
                "options": self.options_dict(), "start": self.start.tolist()}

    def _check_identity(self, state: Mapping[str, Any], where: str) -> None:
        mine = self._identity()
        if state.get("format") != FORMAT:
            raise OnlineMixerError(f"{where}: format {state.get('format')!r} is not {FORMAT!r}")
        for key, what in (("mixer", "mixer"), ("study", "study"), ("domains", "domains")):
            if state.get(key) != mine[key]:
                raise OnlineMixerError(f"{where}: the state is from {what} {state.get(key)!r}, this mixer's is "
                                       f"{mine[key]!r}")
        theirs = state.get("options")
        if not isinstance(theirs, Mapping) or dict(theirs) != mine["options"]:
            got = dict(theirs) if isinstance(theirs, Mapping) else {}
            diff = "; ".join(f"{k} {got.get(k)!r} (state) vs {v!r}" for k, v in mine["options"].items() if got.get(k) != v)
            raise OnlineMixerError(f"{where}: the state's options differ from this mixer's: {diff or repr(theirs)}")
        if state.get("start") != mine["start"]:
            raise OnlineMixerError(f"{where}: the state's start mixture {state.get('start')!r} differs from "
                                   f"{mine['start']!r}")
        fp = state.get("fingerprint")
        if fp != self.fingerprint:
            raise OnlineMixerError(f"{where}: fingerprint {fp!r} does not match this mixer's {self.fingerprint!r}")

    def _dict(self, x: np.ndarray) -> dict[str, float]:
        return dict(zip(self.domains, x.tolist()))

    # ----- hooks (overridden) -----------------------------------------------------------------

    def _check_options(self) -> None:
        """Check option values against each other and the domains; raise OnlineMixerError."""

    def _init_state(self) -> None:
        raise NotImplementedError

    def _now(self) -> tuple[str, np.ndarray, np.ndarray | None, np.ndarray, bool, bool, int | None]:
        raise NotImplementedError

    def _eval_due(self) -> bool:
        return False

    def _prepare_eval(self, losses: np.ndarray) -> dict[str, Any]:
        raise NotImplementedError

    def _prepare_train(self, losses: np.ndarray, mask: np.ndarray, reference: Any, where: str) -> dict[str, Any]:
        if reference is not None:
            raise OnlineMixerError(f"{where}: {self.name} takes no reference losses (only doremi does)")
        return {}

    def _state(self) -> dict[str, Any]:
        return {}

    def _parse_state(self, d: Mapping[str, Any], where: str) -> dict[str, Any]:
        return {}

    def _extra_summary(self) -> dict[str, Any]:
        return {}


def fingerprint(identity: Mapping[str, Any]) -> str:
    """16 hex digits of SHA-256 over the mixer's identity (format, mixer, study, domains, options, start)."""
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def check_range(ok: bool, where: str, value: Any, allowed: str) -> None:
    if not ok:
        raise OnlineMixerError(f"{where}: {value!r} is not allowed; {allowed}")
