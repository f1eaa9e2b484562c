"""Typed loading: frozen dataclasses from plain mappings (YAML), with ``--a.b=c`` overrides.

Every key is checked against the dataclass fields and their types; a mistake raises one
:class:`~mixopt.core.errors.ConfigError` naming the dotted key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

import yaml

from mixopt.core.errors import ConfigError
from mixopt.core.spec import ProxySpec


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is not None:
        return getattr(origin, "__name__", str(origin))
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} has the wrong type; allowed: {_type_name(tp)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: must be a mapping of {', '.join(f.name for f in dataclasses.fields(tp))}")
        return from_dict(tp, value, where)
    if tp is Any:
        return value
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {value!r} must be a mapping")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is not Any:
            return {k: _coerce(v, args[1], f"{where}.{k}") for k, v in value.items()}
        return dict(value)
    if origin is list or tp is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: {value!r} must be a list")
        return list(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, str):  # YAML 1.1 reads "2e6" as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{where}: {value!r} must be a finite number")
        if isinstance(value, str):  # YAML 1.1 reads "1e9" as a string
            try:
                x = float(value)
                if math.isfinite(x):
                    return x
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{where}: {value!r} has the wrong type; allowed: {_type_name(tp)}")


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, checking keys and types (recursively)."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for k, v in data.items():
        key = f"{where}.{k}" if where else str(k)
        if k not in names:
            raise ConfigError(f"{key}: unknown key; allowed: {', '.join(names)}")
        kwargs[k] = _coerce(v, hints[k], key)
    try:
        return cls(**kwargs)
    except ConfigError as e:  # ProxySpec validates itself under the name "proxy"; say where it really is
        msg = str(e)
        if cls is ProxySpec and where and msg.startswith("proxy") and not msg.startswith(where):
            msg = where + msg[len("proxy"):]
        raise ConfigError(msg) from None


def set_dotted(d: dict[str, Any], dotted: str, value: Any, where: str) -> None:
    """``d[a][b][c] = value`` for ``dotted`` "a.b.c", creating mappings on the way (in place)."""
    parts = dotted.split(".")
    cur = d
    for p in parts[:-1]:
        nxt = cur.get(p)
        if nxt is None:
            nxt = cur[p] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"{where}: {'.'.join(parts[:-1])} is not a mapping, cannot set {dotted}")
        cur = nxt
    cur[parts[-1]] = value


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """``["--budget.trials=8", "--proxy.preset", "dense-1m"]`` -> nested dict of YAML-typed values."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        a = args[i]
        if not a.startswith("--") or len(a) <= 2:
            raise ConfigError(f"override {a}: expected --key.sub=value")
        body = a[2:]
        if "=" in body:
            key, raw = body.split("=", 1)
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            key, raw = body, args[i + 1]
            i += 1
        else:
            raise ConfigError(f"override {a}: missing value; write --{body}=VALUE")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        set_dotted(out, key, value, f"override --{key}")
        i += 1
    return out


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out
