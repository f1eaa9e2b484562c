"""Mixture (a validated point of the simplex) and MixtureSpace (the feasible region).

A ``Mixture`` is immutable and checks its invariants on construction: every weight finite and
>= 0, weights sum to 1 within 1e-6, every domain known. A ``MixtureSpace`` is the simplex over
``domains`` intersected with per-domain floors and caps, where a domain's cap also includes
the repetition cap ``max_epochs * tokens_j / target_tokens`` (RegMix / Olmix).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mixopt.core.errors import MixtureError, SpaceError

SUM_TOL = 1e-6


class Mixture(Mapping[str, float]):
    """An immutable mapping domain -> weight on the simplex.

    Example:
        >>> m = Mixture({"code": 0.25, "legal": 0.75})
        >>> m["legal"], m.as_array(["legal", "code"]).tolist()
        (0.75, [0.75, 0.25])
    """

    __slots__ = ("_w",)

    def __init__(self, weights: Mapping[str, float], domains: Sequence[str] | None = None,
                 where: str = "mixture") -> None:
        if not isinstance(weights, Mapping) or not weights:
            raise MixtureError(f"{where}: must be a non-empty mapping domain -> weight, got {weights!r}")
        w: dict[str, float] = {}
        for k, v in weights.items():
            if not isinstance(k, str):
                raise MixtureError(f"{where}: domain names must be strings, got {k!r}")
            if domains is not None and k not in domains:
                raise MixtureError(
                    f"{where}.{k}: unknown domain; allowed: {', '.join(domains)}")
            try:
                x = float(v)
            except (TypeError, ValueError):
                raise MixtureError(f"{where}.{k}: weight {v!r} is not a number") from None
            if not math.isfinite(x):
                raise MixtureError(f"{where}.{k}: weight {x} is not finite; weights must be finite and >= 0")
            if x < 0:
                raise MixtureError(f"{where}.{k}: weight {x} is negative; weights must be >= 0")
            w[k] = x
        if domains is not None:
            for d in domains:
                w.setdefault(d, 0.0)
        total = sum(w.values())
        if abs(total - 1.0) > SUM_TOL:
            raise MixtureError(f"{where}: weights sum to {total:.9g}; they must sum to 1 (within {SUM_TOL})")
        self._w = dict(sorted(w.items())) if domains is None else {d: w[d] for d in domains}

    @classmethod
    def from_array(cls, x: Sequence[float] | np.ndarray, domains: Sequence[str],
                   renormalize: bool = True) -> Mixture:
        """Build from a vector aligned with ``domains``; tiny float drift is renormalized away."""
        a = np.asarray(x, dtype=float)
        if a.shape != (len(domains),):
            raise MixtureError(f"mixture: vector of shape {a.shape} does not match {len(domains)} domains")
        if renormalize and np.all(np.isfinite(a)):
            a = np.clip(a, 0.0, None)
            s = a.sum()
            if s > 0:
                a = a / s
        return cls(dict(zip(domains, a.tolist())), domains)

    def __getitem__(self, k: str) -> float:
        return self._w[k]

    def __iter__(self) -> Iterator[str]:
        return iter(self._w)

    def __len__(self) -> int:
        return len(self._w)

    def __hash__(self) -> int:
        return hash(tuple(self._w.items()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self._w) == dict(other)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v:.4f}" for k, v in self._w.items())
        return f"Mixture({inner})"

    @classmethod
    def from_file(cls, path: str | os.PathLike, domains: Sequence[str], where: str | None = None,
                  held_out: Sequence[str] = ()) -> Mixture:
        """A mixture from a YAML/JSON file: a mapping domain -> weight, or any document whose ``mixture``
        is one (``recommendation.yaml``, ``mixopt infer-mixture --out``). Weight on ``held_out`` domains
        (a study's held-out targets) is dropped and the rest renormalized; any other domain must be one
        of ``domains``.

        Raises:
            MixtureError: the file is missing, not YAML/JSON, not a mapping, or not a mixture of ``domains``.
        """
        import yaml

        where = where or str(path)
        p = Path(path)
        if not p.is_file():
            raise MixtureError(f"{where}: file not found")
        try:
            doc = yaml.safe_load(p.read_text())
        except (yaml.YAMLError, OSError, UnicodeDecodeError) as e:
            raise MixtureError(f"{where}: not YAML/JSON ({str(e).splitlines()[0]})") from None
        if isinstance(doc, Mapping) and isinstance(doc.get("mixture"), Mapping):
            doc = doc["mixture"]
        if not isinstance(doc, Mapping) or not doc:
            raise MixtureError(f"{where}: expected a mapping domain -> weight (or a document with a 'mixture' one)")
        kept = {k: v for k, v in doc.items() if k not in held_out}
        total = 0.0
        for k, v in kept.items():
            try:
                total += float(v)
            except (TypeError, ValueError):
                raise MixtureError(f"{where}.{k}: weight {v!r} is not a number") from None
        if len(kept) < len(doc) and total > 0:  # renormalize what is left after the held-out domains
            kept = {k: float(v) / total for k, v in kept.items()}
        return cls(kept, list(domains), where=where)

    def as_array(self, domains: Sequence[str]) -> np.ndarray:
        return np.array([self._w.get(d, 0.0) for d in domains], dtype=float)

    def to_dict(self) -> dict[str, float]:
        return dict(self._w)


@dataclass(frozen=True)
class MixtureSpace:
    """The simplex over ``domains`` with per-domain bounds ``lower[j] <= p_j <= upper[j]``.

    ``upper`` already folds in the repetition cap; use :meth:`build` to derive it from token
    counts. Linear constraints follow BoTorch's form: sum_j p_j = 1 is the one equality.
    """

    domains: tuple[str, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    prior: tuple[float, ...] = field(default=())  # natural mixture (token shares), for samplers

    def __post_init__(self) -> None:
        k = len(self.domains)
        if k < 2:
            raise SpaceError(f"space: needs at least 2 domains, got {list(self.domains)}")
        if len(set(self.domains)) != k:
            raise SpaceError(f"space: duplicate domain names in {list(self.domains)}")
        if len(self.lower) != k or len(self.upper) != k:
            raise SpaceError("space: lower/upper bounds must have one value per domain")
        for d, lo, hi in zip(self.domains, self.lower, self.upper):
            if not (0.0 <= lo <= hi):
                raise SpaceError(f"space.{d}: floor {lo:.4g} > cap {hi:.4g}; need 0 <= floor <= cap")
        if sum(self.lower) > 1.0 + 1e-9:
            raise SpaceError(
                f"space: floors sum to {sum(self.lower):.4g} > 1; no mixture can satisfy them")
        if sum(self.upper) < 1.0 - 1e-9:
            caps = ", ".join(f"{d}<={u:.4g}" for d, u in zip(self.domains, self.upper))
            raise SpaceError(
                f"space: caps sum to {sum(self.upper):.4g} < 1 ({caps}); no mixture can satisfy "
                "them. Raise caps or max_epochs, or lower target_tokens")
        if self.prior and len(self.prior) != k:
            raise SpaceError("space: prior must have one value per domain")

    @classmethod
    def build(cls, domains: Sequence[str], tokens: Mapping[str, int] | None = None,
              target_tokens: float | None = None, max_epochs: float | None = None,
              floors: Mapping[str, float] | None = None, caps: Mapping[str, float] | None = None,
              where: str = "space") -> MixtureSpace:
        """Space from config: floors/caps by domain plus the repetition cap.

        The repetition cap is ``p_j <= max_epochs * tokens_j / target_tokens``: a domain may
        not be seen more than ``max_epochs`` times in a run of ``target_tokens`` tokens.
        """
        domains = tuple(domains)
        floors, caps = dict(floors or {}), dict(caps or {})
        for name, m in (("floors", floors), ("caps", caps)):
            for d, v in m.items():
                if d not in domains:
                    raise SpaceError(f"{where}.{name}.{d}: unknown domain; allowed: {', '.join(domains)}")
                if not isinstance(v, (int, float)) or isinstance(v, bool) or not (0 <= v <= 1):
                    raise SpaceError(f"{where}.{name}.{d}: {v!r} must be a number in [0, 1]")
        space = cls(domains, tuple(float(floors.get(d, 0.0)) for d in domains),
                    tuple(float(caps.get(d, 1.0)) for d in domains))
        return space if tokens is None else space.capped(tokens, target_tokens, max_epochs)

    def capped(self, tokens: Mapping[str, int], target_tokens: float | None = None,
               max_epochs: float | None = None) -> MixtureSpace:
        """This space with the natural mixture (token shares) as its prior and, given ``target_tokens`` and
        ``max_epochs``, the repetition cap ``p_j <= max_epochs * tokens_j / target_tokens`` folded into its caps.

        Raises:
            SpaceError: the capped space holds no mixture.
        """
        upper = self.upper
        if max_epochs is not None and target_tokens:
            upper = tuple(min(hi, max_epochs * float(tokens[d]) / float(target_tokens))
                          for d, hi in zip(self.domains, self.upper))
        t = np.array([float(tokens[d]) for d in self.domains])
        prior = tuple((t / t.sum()).tolist()) if t.sum() > 0 else ()
        return replace(self, upper=upper, prior=prior)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (``domains``, ``lower``, ``upper``, ``prior``); :meth:`from_dict` reads it back."""
        return {"domains": list(self.domains), "lower": list(self.lower), "upper": list(self.upper),
                "prior": list(self.prior)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "space") -> MixtureSpace:
        """The inverse of :meth:`to_dict`.

        Raises:
            SpaceError: a missing or malformed field, or bounds that hold no mixture.
        """
        try:
            lists = [tuple(d[k]) for k in ("domains", "lower", "upper")]
            prior = tuple(float(x) for x in d.get("prior") or ())
            lo, hi = (tuple(float(x) for x in v) for v in lists[1:])
        except (KeyError, TypeError, ValueError) as e:
            raise SpaceError(f"{where}: needs lists domains, lower, upper (and optional prior) ({e})") from None
        return cls(tuple(str(x) for x in lists[0]), lo, hi, prior)

    @property
    def dim(self) -> int:
        return len(self.domains)

    def lower_array(self) -> np.ndarray:
        return np.array(self.lower)

    def upper_array(self) -> np.ndarray:
        return np.array(self.upper)

    def prior_array(self) -> np.ndarray:
        if self.prior:
            return np.array(self.prior)
        return np.full(self.dim, 1.0 / self.dim)

    def contains(self, x: Mixture | np.ndarray, tol: float = 1e-6) -> bool:
        a = x.as_array(self.domains) if isinstance(x, Mixture) else np.asarray(x, dtype=float)
        return bool(
            a.shape == (self.dim,) and np.all(np.isfinite(a)) and abs(a.sum() - 1) <= tol
            and np.all(a >= self.lower_array() - tol) and np.all(a <= self.upper_array() + tol))

    def validate(self, m: Mixture, where: str = "mixture") -> Mixture:
        """Check a mixture lies in this space; return it aligned to ``domains``."""
        for d in m:
            if d not in self.domains:
                raise MixtureError(f"{where}.{d}: unknown domain; allowed: {', '.join(self.domains)}")
        m = Mixture(m.to_dict(), self.domains, where)
        for d, lo, hi in zip(self.domains, self.lower, self.upper):
            if not (lo - 1e-6 <= m[d] <= hi + 1e-6):
                raise MixtureError(f"{where}.{d}: weight {m[d]:.6g} outside the space's [{lo:.6g}, {hi:.6g}]")
        return m

    def project(self, x: np.ndarray) -> np.ndarray:
        """Euclidean projection of a vector onto {sum = 1, lower <= p <= upper} (bisection on the shift)."""
        lo, hi = self.lower_array(), self.upper_array()
        x = np.asarray(x, dtype=float)
        a, b = (x - hi).min() - 1.0, (x - lo).max() + 1.0
        for _ in range(100):
            tau = 0.5 * (a + b)
            s = np.clip(x - tau, lo, hi).sum()
            if s > 1:
                a = tau
            else:
                b = tau
        p = np.clip(x - 0.5 * (a + b), lo, hi)
        return p / p.sum()
