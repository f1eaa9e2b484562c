"""Searchers behind one protocol (:mod:`mixopt.search.base`), looked up by name.

Example:
    >>> from mixopt.search import get_searcher
    >>> s = get_searcher("regmix", {"surrogate": "linear", "top_k": 50})
    >>> s.name
    'regmix'
"""

from __future__ import annotations

import dataclasses
import importlib

from mixopt.core.errors import ConfigError
from mixopt.search.base import Fidelity, Observation, Proposal, Recommendation, Rung, SearchContext, Searcher

# the searcher `mixopt run`, create_study and the service use when none is named: chosen by replay across
# every released table (README, "Which searcher?")
DEFAULT_SEARCHER = "bo"

# name -> (module, class); modules are imported lazily so LightGBM loads only when needed.
_REGISTRY: dict[str, tuple[str, str]] = {
    "random": ("mixopt.search.dirichlet", "DirichletSearcher"),
    "dirichlet": ("mixopt.search.dirichlet", "DirichletSearcher"),
    "regmix": ("mixopt.search.regmix", "RegMixSearcher"),
    "bo": ("mixopt.search.bo", "BOSearcher"),
    "mfbo": ("mixopt.search.mfbo", "MFBOSearcher"),
    "mixing_law": ("mixopt.search.mixing_law", "MixingLawSearcher"),
    "hybrid": ("mixopt.search.wrappers", "Hybrid"),
    "concurrency_limit": ("mixopt.search.wrappers", "ConcurrencyLimit"),
    "repeat": ("mixopt.search.wrappers", "Repeat"),
    "merge_screen": ("mixopt.search.screen", "MergeScreen"),
}

__all__ = ["DEFAULT_SEARCHER", "Fidelity", "Rung", "Observation", "Proposal", "Recommendation", "SearchContext",
           "Searcher", "available", "get_searcher", "register"]


def available() -> list[str]:
    """Names accepted by :func:`get_searcher`, sorted."""
    return sorted(_REGISTRY)


def register(name: str, module: str, cls: str) -> None:
    """Add a searcher implemented by ``module.cls`` (a dataclass whose fields are its options)."""
    _REGISTRY[name] = (module, cls)


def get_searcher(name: str, options: dict | None = None) -> Searcher:
    """Build the searcher ``name`` with ``options``; ConfigError names what is allowed."""
    if name not in _REGISTRY:
        raise ConfigError(f"search.searcher: unknown searcher {name!r}; allowed: {', '.join(available())}")
    module, cls_name = _REGISTRY[name]
    cls = getattr(importlib.import_module(module), cls_name)
    options = dict(options or {})
    allowed = [f.name for f in dataclasses.fields(cls) if f.init and f.name != "name"]
    for key in options:
        if key not in allowed:
            raise ConfigError(f"search.options.{key}: unknown option for searcher {name!r}; "
                              f"allowed: {', '.join(allowed) or '(none)'}")
    return cls(name=name, **options)
