"""What a set of domain experts is: the definition that model-merging proxies are trained from.

A mixture's **merged score** is the study objective of the merged model
``theta(w) = theta_seed + scale * sum_i w_i (theta_i - theta_seed)`` of k domain experts (at ``scale``
1 the weight average ``sum_i w_i theta_i``; the scale is a scoring setting, not part of the set)
(Na et al., "Scalable Data Ablation
Approximations for Language Models through Modular Training and Merging", arXiv 2410.15661;
"Linear Model Merging for Data Mixture Optimization", arXiv 2602.04937): a seed model is trained on
a ``base`` mixture for a fraction ``seed_fraction`` of the proxy's token budget, then one copy per
domain continues on that domain alone for the rest of the budget, on the rest of the same learning-
rate schedule. k trainings then score any number of mixtures, each for the cost of evaluating one
model on the validation batches.

:class:`ExpertsSpec` names such a set; its :meth:`ExpertsSpec.key` identifies the weights on disk and
in the store, so any later run, process or machine reuses them. The training and the merging
themselves live in :mod:`mixopt.proxies.merge`; storing and reusing them in :mod:`mixopt.run.experts`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mixopt.core.errors import ConfigError
from mixopt.core.mixture import Mixture
from mixopt.core.spec import ProxySpec, upgrade_stored_spec

_NOT_IN_KEY = frozenset({"eval_batches", "evals", "online", "online_options"})
_SPEC_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ProxySpec) if f.default is not dataclasses.MISSING}

#: the version of the expert file layout; part of the key
FORMAT = "mixopt.experts/1"
#: the seed's file in an expert set's folder; each expert is ``expert_file(domain)``
SEED_FILE = "seed.safetensors"


#: ``merge.seed_fraction: auto`` leaves the experts (and branches) at least this many optimizer steps ...
AUTO_REST_STEPS = 150
#: ... and between these shares of the schedule: the hand-off is at s = 1 - rest
AUTO_REST_RANGE = (0.1, 0.5)


def resolve_seed_fraction(value: Any, spec: ProxySpec) -> Any:
    """``merge.seed_fraction`` for the proxy ``spec``: a number is kept (checked by :class:`ExpertsSpec`);
    ``auto`` hands off as late as leaves the experts (and branches) ``AUTO_REST_STEPS`` optimizer steps,
    within ``AUTO_REST_RANGE`` of the schedule, rounded down to 2 decimals (so the rest keeps its steps):
    ``s = 1 - min(0.5, max(0.1, 150 / steps))``.

    Why (``mixopt merge-check --branch``; the README has the figures): a later hand-off merges better,
    the experts moving less far from the seed (dense-37k at 1,562 steps: the worse objective's Spearman
    0.85-0.87 at s = 0.9 against 0.69-0.83 at 0.5, for 2.6 proxies' worth of experts instead of 9.0),
    as long as the continuation keeps the steps to show its mixture (dense-3k at 156 steps: branches of
    16 steps rank 0.65-0.68, of 78 steps 0.75-0.77, as well as a second training). So 0.5 up to 300
    steps, 0.9 from 1,500 on."""
    if value != "auto":
        return value
    lo, hi = AUTO_REST_RANGE
    return math.floor(round(100 * (1.0 - min(hi, max(lo, AUTO_REST_STEPS / max(1, spec.steps)))), 6)) / 100


def expert_file(domain: str) -> str:
    """The file of the expert of ``domain`` in an expert set's folder."""
    return f"expert-{domain}.safetensors"


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class ExpertsSpec:
    """One seed and one expert per domain.

    Attributes:
        spec: the proxy: architecture, the whole token budget (seed + expert), lr schedule, seed.
        domains: one expert per domain, in this order (the study's training domains).
        base: the seed's mixture (over ``domains``).
        seed_fraction: s, the seed's share of ``spec.tokens``, in (0, 1); each expert trains the rest.
        corpus: the corpus the experts were trained on (its manifest's fingerprint).
        vocab_size: the corpus's vocabulary size (the experts' embedding rows).
    """

    spec: ProxySpec
    domains: tuple[str, ...]
    base: Mixture
    seed_fraction: float
    corpus: str
    vocab_size: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "domains", tuple(self.domains))
        if len(self.domains) < 2 or len(set(self.domains)) != len(self.domains):
            raise ConfigError(f"merge: experts need >= 2 distinct domains, got {list(self.domains)}")
        s = self.seed_fraction
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not (0 < s < 1):
            raise ConfigError(f"merge.seed_fraction: {s!r} must be a number in (0, 1)")
        if self.seed_steps < 1 or self.expert_steps < 1:
            raise ConfigError(f"merge.seed_fraction: {s} of {self.spec.steps} steps leaves the seed or the experts "
                              "without a step; raise proxy.tokens or move seed_fraction towards 0.5")
        if not isinstance(self.base, Mixture):
            object.__setattr__(self, "base", Mixture(dict(self.base), self.domains, where="merge.base"))
        extra = sorted(set(self.base) - set(self.domains))
        if extra:
            raise ConfigError(f"merge.base: domain(s) {extra} have no expert; allowed: {', '.join(self.domains)}")

    @property
    def seed_steps(self) -> int:
        """Optimizer steps of the seed: round(s * steps)."""
        return int(round(self.seed_fraction * self.spec.steps))

    @property
    def expert_steps(self) -> int:
        """Optimizer steps of each expert: the rest of the schedule."""
        return self.spec.steps - self.seed_steps

    def training_tokens(self) -> int:
        """Tokens trained for the whole set: the seed's, plus every expert's."""
        per = self.spec.batch_size * self.spec.seq_len
        return per * (self.seed_steps + len(self.domains) * self.expert_steps)

    def score_cost(self, eval_tokens: int) -> float:
        """What one merged score costs, as a share of training one proxy of ``spec``: its evaluation's
        forward tokens count a third of a training token's FLOPs (the merging itself is negligible)."""
        return eval_tokens / 3 / self.spec.tokens

    def proxies_worth(self) -> float:
        """The set's training compute in units of one proxy trained on ``spec``: s + k (1 - s)."""
        return self.training_tokens() / (self.spec.batch_size * self.spec.seq_len * self.spec.steps)

    def files(self) -> list[str]:
        """The set's weight files: the seed's, then one per domain."""
        return [SEED_FILE, *(expert_file(d) for d in self.domains)]

    def key(self) -> str:
        """16 hex digits naming these experts (same definition, same key, in any process and version).

        Only what shapes the weights counts: the spec's fields that differ from their defaults (a field a
        later version adds, at its default, keeps old keys), less how trials are evaluated (eval_batches,
        evals) and online mixing (not used by experts)."""
        spec = {k: v for k, v in self.spec.to_dict().items()
                if k not in _NOT_IN_KEY and (k not in _SPEC_DEFAULTS or v != _SPEC_DEFAULTS[k])}
        alpha = float(self.spec.mup_output_mult)
        if self.spec.parametrization == "mup" and alpha == 1.0:  # muP experts keyed before alpha existed trained
            spec.pop("mup_output_mult", None)  # with alpha 1: that keeps their key
        elif self.spec.parametrization == "mup":  # any other alpha is named, the default 4 too
            spec["mup_output_mult"] = alpha
        text = json.dumps([FORMAT, {**self.to_dict(), "spec": spec}], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec.to_dict(), "domains": list(self.domains), "base": self.base.to_dict(),
                "seed_fraction": float(self.seed_fraction), "corpus": self.corpus, "vocab_size": int(self.vocab_size)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ExpertsSpec:
        spec = ProxySpec.from_dict(upgrade_stored_spec(dict(d["spec"])))  # muP stored before alpha: alpha 1
        return cls(spec, tuple(d["domains"]), Mixture(dict(d["base"]), list(d["domains"])),
                   float(d["seed_fraction"]), str(d["corpus"]), int(d["vocab_size"]))


MAX_SCALE = 10.0


def _positive_up_to(value: Any, where: str, top: float, meaning: str) -> float:
    """``value`` as a float; ConfigError (naming ``where`` and what the values mean) unless it is a number in
    (0, top]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value <= top):
        raise ConfigError(f"{where}: {value!r} must be a number in (0, {top:g}] ({meaning})")
    return float(value)


def check_scale(scale: Any, where: str = "merge.scale") -> float:
    """The task-vector scale of a merge (``theta_seed + scale * sum_i w_i (theta_i - theta_seed)``) as a
    float; ConfigError unless it is a number in (0, MAX_SCALE]."""
    return _positive_up_to(scale, where, MAX_SCALE, "1: the plain weight average of the experts; above 1: each "
                           "expert's change from the seed scaled up")


#: the largest ``merge.power``
MAX_POWER = 2.0


def check_power(power: Any, where: str = "merge.power") -> float:
    """The exponent of a merge's coefficients (mixture w merged with weights ``w ** power``, renormalized)
    as a float; ConfigError unless it is a number in (0, MAX_POWER]."""
    return _positive_up_to(power, where, MAX_POWER, "1: the mixture's own weights; below 1: small weights count "
                           "for more")


def check_seed_fraction(value: Any, where: str = "merge.seed_fraction") -> float | str:
    """``merge.seed_fraction`` as given: ``auto`` (see :func:`resolve_seed_fraction`) or a number in (0, 1);
    ConfigError otherwise."""
    if value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ConfigError(f"{where}: {value!r}; allowed: auto or a number in (0, 1)")
    return value


def check_weights(W: Sequence[Sequence[float]], k: int, where: str = "merge") -> None:
    """Raise ConfigError unless W is (m, k) of finite weights >= 0 with rows summing to 1 (within 1e-6)."""
    for i, row in enumerate(W):
        if len(row) != k:
            raise ConfigError(f"{where}: mixture {i} has {len(row)} weights for {k} experts")
        if any(not math.isfinite(x) or x < 0 for x in row) or abs(sum(row) - 1.0) > 1e-6:
            raise ConfigError(f"{where}: mixture {i} is not on the simplex (weights {list(row)})")
