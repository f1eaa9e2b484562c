"""The config of the big run and of ``auto`` hyperparameters: ``target:`` and ``hparams:``.

``target:`` describes the run the recommendation is for (its run card, :mod:`mixopt.analysis.card`):
its size, tokens, context, MoE layout and unique tokens per domain. ``hparams:`` says where
``lr: auto`` and ``batch_size: auto`` take their numbers. ``auto`` may be written for ``proxy.lr``,
``proxy.batch_size`` and a ladder rung's ``lr`` / ``batch_size`` (a rung that sets neither inherits the
proxy's ``auto`` and is resolved at its own size; a transfer target too). The loader records where
``auto`` was written (:func:`take_auto`: ``hparams.auto``, keys such as ``proxy.lr`` or
``ladder[1].batch_size``, indexed as written) and leaves a placeholder; the numbers come from a law
(:func:`mixopt.analysis.autohp.resolve_config`, which the command line applies before planning), are
written into the config (``hparams.resolved``, ``hparams.source``) and stored with the study. A plan
refuses a config whose ``auto`` keys are not resolved (:func:`unresolved`), so a placeholder never trains.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mixopt.core.errors import ConfigError

AUTO = "auto"
AUTO_KEYS = ("lr", "batch_size")  # the proxy fields a law gives
_PLACEHOLDER = {"lr": 3e-3, "batch_size": 1}  # valid for any budget; refused by the plan until resolved
LAWS = ("auto", "fitted", "published")
MOE_KEYS = ("active", "experts", "top_k", "shared", "granularity")


@dataclass(frozen=True)
class HparamsConfig:
    """Where ``auto`` learning rates and batch sizes come from.

    Attributes:
        law: ``auto``: the law fitted to ``study``'s runs, else to this study's own (a ``mixopt fit --kind
            hparams`` run logged with it), else the published Step Law scaled for proxies; ``fitted``: a
            fitted law or an error; ``published``: the Step Law (scaled for proxies below its range).
        study: a study in the same store whose runs the law is fitted to (``mixopt hparams-sweep``'s).
        auto: set by the loader: the keys written as ``auto`` (not to be set by hand).
        resolved: set on resolution: {key: number}.
        source: set on resolution: which law gave them.
    """

    law: str = "auto"
    study: str | None = None
    auto: list[str] = field(default_factory=list)
    resolved: dict[str, Any] = field(default_factory=dict)
    source: str = ""


@dataclass(frozen=True)
class TargetConfig:
    """The big run a recommendation is for (its run card).

    Attributes:
        params: N, non-embedding parameters (an MoE's total); no card without it.
        tokens: D, its training tokens (default: ``space.target_tokens``).
        seq_len: its context length (the batch size in sequences); default 2048, the Step Law's.
        moe: an MoE target: ``active`` (non-embedding params per token), ``experts``, ``top_k``,
            ``granularity`` (2 d_model / d_expert, as arXiv 2507.17702), ``shared`` (default 0).
        unique_tokens: {domain: unique tokens} of its corpus (default: the proxy corpus's train tokens).
    """

    params: float | None = None
    tokens: float | None = None
    seq_len: int = 2048
    moe: dict[str, float] = field(default_factory=dict)
    unique_tokens: dict[str, float] = field(default_factory=dict)


def _is_auto(v: Any) -> bool:
    return isinstance(v, str) and v.strip().lower() == AUTO


def _take(entry: dict[str, Any], where: str) -> list[str]:
    keys = []
    for k, v in list(entry.items()):
        if not _is_auto(v):
            continue
        if k not in AUTO_KEYS:
            raise ConfigError(f"{where}.{k}: 'auto' has no law to resolve it; allowed: auto for lr and batch_size only")
        keys.append(f"{where}.{k}")
        entry[k] = _PLACEHOLDER[k]
    return keys


def take_auto(raw: dict[str, Any]) -> dict[str, Any]:
    """A copy of a raw config mapping with every ``auto`` replaced by a placeholder and the keys listed in
    ``hparams.auto`` (ConfigError: ``auto`` on another key, or ``hparams.auto/resolved/source`` set by hand)."""
    out = dict(raw)
    h = out.get("hparams")
    if isinstance(h, dict):
        for k in ("auto", "resolved", "source"):
            if k in h:
                raise ConfigError(f"hparams.{k}: set by mixopt; write `lr: auto` / `batch_size: auto` in proxy: or "
                                  "a ladder rung instead")
    keys: list[str] = []
    if isinstance(out.get("proxy"), dict):
        out["proxy"] = dict(out["proxy"])
        keys += _take(out["proxy"], "proxy")
    if isinstance(out.get("ladder"), list):
        out["ladder"] = [dict(e) if isinstance(e, dict) else e for e in out["ladder"]]
        for i, e in enumerate(out["ladder"]):
            if isinstance(e, dict):
                keys += _take(e, f"ladder[{i}]")
    if keys:
        out["hparams"] = {**(h if isinstance(h, dict) else {}), "auto": keys}
    return out


def unresolved(h: HparamsConfig) -> list[str]:
    """The ``auto`` keys no law has given a number yet."""
    return [k for k in h.auto if k not in h.resolved]


def describe_auto(h: HparamsConfig) -> list[str]:
    """Comment lines for ``mixopt run --dry-run``: each ``auto`` key, its number (or ``unresolved``), the law."""
    if not h.auto:
        return []
    keys = list(h.auto) + [k for k in h.resolved if k not in h.auto]  # rungs that inherit the proxy's auto
    return ([f"# {k}: auto -> {h.resolved[k] if k in h.resolved else 'unresolved'}" for k in keys]
            + ([f"# auto from: {h.source}"] if h.source else []))


def rung_auto(h: HparamsConfig, i: int, entry: dict[str, Any]) -> tuple[bool, bool]:
    """(lr, batch_size) auto at ladder rung ``i``: written there, or inherited from ``proxy``'s ``auto``."""
    return tuple((f"ladder[{i}].{k}" in h.auto) or (f"proxy.{k}" in h.auto and k not in entry)  # type: ignore[return-value]
                 for k in AUTO_KEYS)


def _positive(where: str, v: Any) -> None:
    if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0):
        raise ConfigError(f"{where}: {v!r} must be a number > 0")


def validate_hparams(h: HparamsConfig) -> None:
    if h.law not in LAWS:
        raise ConfigError(f"hparams.law: {h.law!r}; allowed: {', '.join(LAWS)}")
    if h.study is not None and (not h.study.strip() or any(c in h.study for c in "/\\\n")):
        raise ConfigError(f"hparams.study: {h.study!r} must be a study name")


def validate_target(t: TargetConfig) -> None:
    """The target section's values (domain names are checked against the corpus by the plan)."""
    for k in ("params", "tokens"):
        if getattr(t, k) is not None:
            _positive(f"target.{k}", getattr(t, k))
    if isinstance(t.seq_len, bool) or t.seq_len < 1:
        raise ConfigError(f"target.seq_len: {t.seq_len!r} must be an integer >= 1")
    for d, u in t.unique_tokens.items():
        _positive(f"target.unique_tokens.{d}", u)
    if t.moe:
        for k, v in t.moe.items():
            if k not in MOE_KEYS:
                raise ConfigError(f"target.moe.{k}: unknown key; allowed: {', '.join(MOE_KEYS)}")
            if k == "shared":
                if not (isinstance(v, (int, float)) and v >= 0):
                    raise ConfigError(f"target.moe.shared: {v!r} must be a number >= 0")
            else:
                _positive(f"target.moe.{k}", v)
        missing = [k for k in MOE_KEYS if k != "shared" and k not in t.moe]
        if missing:
            raise ConfigError(f"target.moe: missing {', '.join(missing)}; an MoE target needs active, experts, top_k "
                              "and granularity (shared optional)")
        if t.moe["top_k"] > t.moe["experts"]:
            raise ConfigError(f"target.moe.top_k: {t.moe['top_k']} exceeds target.moe.experts = {t.moe['experts']}")
        if t.params is not None and t.moe["active"] > t.params:
            raise ConfigError(f"target.moe.active: {t.moe['active']:.4g} exceeds target.params = {t.params:.4g} (the "
                              "total non-embedding params of an MoE)")


def check_target_domains(t: TargetConfig, domains: Sequence[str]) -> None:
    """``target.unique_tokens`` names corpus domains only."""
    for d in t.unique_tokens:
        if d not in domains:
            raise ConfigError(f"target.unique_tokens.{d}: not a corpus domain; allowed: {', '.join(domains)}")


__all__ = ["AUTO_KEYS", "HparamsConfig", "LAWS", "TargetConfig", "check_target_domains", "describe_auto", "rung_auto",
           "take_auto",
           "unresolved", "validate_hparams", "validate_target"]
