"""Objective: how a trial's per-domain validation losses become one number to minimize.

Three kinds (config key ``objective``):

* ``{domain: X}`` — the loss on domain X;
* ``{weights: {a: 0.5, b: 0.5}}`` — a weighted average of domain losses (weights renormalized);
  ``{}`` (the default) — the plain average over all training domains;
* ``{target: X}`` or ``{target: [X, Y]}`` — the mean loss on held-out target domain(s) that are
  *excluded from the training mixture* (the space does not contain them).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mixopt.core.errors import ConfigError


@dataclass(frozen=True)
class Objective:
    """Weighted average of per-domain losses; ``targets`` are held out of the mixture.

    Example:
        >>> Objective.from_config({"domain": "code"}, ["code", "legal"]).value({"code": 2.0, "legal": 3.0})
        2.0
    """

    weights: Mapping[str, float]
    targets: tuple[str, ...] = ()
    description: str = ""

    def value(self, losses: Mapping[str, float]) -> float:
        """Objective value (lower is better); nan if any needed loss is missing or not finite."""
        total = 0.0
        for d, w in self.weights.items():
            x = losses.get(d)
            if x is None or not math.isfinite(float(x)):
                return math.nan
            total += w * float(x)
        return total

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(self.weights)

    def training_domains(self, domains: Sequence[str]) -> list[str]:
        """The domains a mixture may weight: ``domains`` less the held-out targets (order kept)."""
        return [d for d in domains if d not in self.targets]

    def to_config(self) -> dict[str, Any]:
        if self.targets:
            return {"target": list(self.targets)}
        return {"weights": dict(self.weights)}

    def to_dict(self) -> dict[str, Any]:
        """This objective exactly, as plain data (:meth:`from_dict` reads it back)."""
        return {"weights": dict(self.weights), "targets": list(self.targets), "description": self.description}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "objective") -> Objective:
        """The inverse of :meth:`to_dict`; weights must be finite numbers >= 0 with a positive sum.

        Raises:
            ConfigError: not a mapping, an unknown key, or a bad weight.
        """
        if not isinstance(d, Mapping) or not isinstance(d.get("weights"), Mapping) or not d["weights"]:
            raise ConfigError(f"{where}: must be a mapping with non-empty 'weights' (domain -> weight)")
        extra = sorted(set(d) - {"weights", "targets", "description"})
        if extra:
            raise ConfigError(f"{where}.{extra[0]}: unknown key; allowed: description, targets, weights")
        ws = {}
        for k, w in d["weights"].items():
            if not isinstance(w, (int, float)) or isinstance(w, bool) or not math.isfinite(w) or w < 0:
                raise ConfigError(f"{where}.weights.{k}: {w!r} must be a finite number >= 0")
            ws[str(k)] = float(w)
        if sum(ws.values()) <= 0:
            raise ConfigError(f"{where}.weights: all weights are 0")
        targets = d.get("targets") or ()
        if isinstance(targets, str) or not all(isinstance(t, str) for t in targets):
            raise ConfigError(f"{where}.targets: must be a list of domain names")
        return cls(ws, tuple(targets), str(d.get("description") or ""))

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None, corpus_domains: Sequence[str],
                    where: str = "objective") -> Objective:
        cfg = dict(cfg or {})
        allowed = {"domain", "weights", "target"}
        for k in cfg:
            if k not in allowed:
                raise ConfigError(f"{where}.{k}: unknown key; allowed: {', '.join(sorted(allowed))}")
        given = [k for k in allowed if cfg.get(k) not in (None, {}, [])]
        if len(given) > 1:
            raise ConfigError(f"{where}: give only one of domain, weights, target (got {', '.join(sorted(given))})")

        def check(d: Any, key: str) -> str:
            if not isinstance(d, str) or d not in corpus_domains:
                raise ConfigError(f"{where}.{key}: {d!r} is not a corpus domain; allowed: {', '.join(corpus_domains)}")
            return d

        if cfg.get("domain") is not None:
            d = check(cfg["domain"], "domain")
            return cls({d: 1.0}, (), f"loss on {d}")
        if cfg.get("target") not in (None, [], ""):
            t = cfg["target"]
            targets = [t] if isinstance(t, str) else t
            if not isinstance(targets, list) or not targets:
                raise ConfigError(f"{where}.target: must be a domain name or a list of them")
            targets = [check(x, "target") for x in targets]
            if len(set(targets)) != len(targets) or len(corpus_domains) - len(targets) < 2:
                raise ConfigError(f"{where}.target: {targets} leaves fewer than 2 training domains")
            w = 1.0 / len(targets)
            return cls({d: w for d in targets}, tuple(targets), f"held-out loss on {', '.join(targets)}")
        weights = cfg.get("weights")
        if weights:
            if not isinstance(weights, Mapping):
                raise ConfigError(f"{where}.weights: must be a mapping domain -> weight")
            ws = {}
            for d, w in weights.items():
                check(d, f"weights.{d}")
                if not isinstance(w, (int, float)) or isinstance(w, bool) or not math.isfinite(w) or w < 0:
                    raise ConfigError(f"{where}.weights.{d}: {w!r} must be a finite number >= 0")
                ws[d] = float(w)
            s = sum(ws.values())
            if s <= 0:
                raise ConfigError(f"{where}.weights: all weights are 0")
            return cls({d: w / s for d, w in ws.items()}, (), "weighted average loss")
        n = len(corpus_domains)
        return cls({d: 1.0 / n for d in corpus_domains}, (), "average loss over domains")
