"""Searchers behind one protocol (:mod:`search.base`), looked up by name.

Example:
    >>> from search import get_searcher
    >>> s = get_searcher("regmix", {"surrogate": "linear", "top_k": 50})
    >>> s.name
    'regmix'
"""

from __future__ import annotations

import dataclasses
import importlib

from mixopt.errors import ConfigError
from search.base import Fidelity, Observation, Proposal, Recommendation, SearchContext, Searcher

# name -> (module, class); modules are imported lazily so LightGBM loads only when needed.
_REGISTRY: dict[str, tuple[str, str]] = {
    "random": ("search.dirichlet", "DirichletSearcher"),
    "dirichlet": ("search.dirichlet", "DirichletSearcher"),
    "regmix": ("search.regmix", "RegMixSearcher"),
    "bo": ("search.bo", "BOSearcher"),
    "mfbo": ("search.mfbo", "MFBOSearcher"),
    "mixing_law": ("search.mixing_law", "MixingLawSearcher"),
    "hybrid": ("search.wrappers", "Hybrid"),
    "concurrency_limit": ("search.wrappers", "ConcurrencyLimit"),
    "repeat": ("search.wrappers", "Repeat"),
}

__all__ = ["Fidelity", "Observation", "Proposal", "Recommendation", "SearchContext", "Searcher", "available",
           "get_searcher", "register"]


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
