"""Names that end up in MLflow (study names, domain names): one rule for the CLI and the API."""

from __future__ import annotations

import re
from collections.abc import Iterable

from mixopt.core.errors import ConfigError

DOMAIN_NAME = re.compile(r"[A-Za-z0-9_.\-]+")  # what MLflow accepts in param/metric names, minus spaces


def check_domain_names(names: Iterable[str], where: str = "domains") -> list[str]:
    """Raise ConfigError unless every name is a non-empty string of letters, digits, '_', '.', '-'."""
    out = list(names)
    for n in out:
        if not isinstance(n, str) or not DOMAIN_NAME.fullmatch(n):
            raise ConfigError(f"{where}: domain name {n!r} may only use letters, digits, '_', '.' and '-' "
                              "(it names MLflow params and metrics)")
    if len(set(out)) != len(out):
        dup = sorted({n for n in out if out.count(n) > 1})
        raise ConfigError(f"{where}: domain names repeat: {dup}")
    return out


def check_study_name(name: object, where: str = "study") -> str:
    """Raise ConfigError unless ``name`` is a non-empty single-line string without slashes."""
    if not isinstance(name, str) or not name.strip() or any(c in name for c in "/\\\n\r"):
        raise ConfigError(f"{where}: {name!r} must be a non-empty name without slashes or line breaks")
    return name
