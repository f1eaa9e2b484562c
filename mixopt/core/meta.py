"""StudyMeta: what defines a study (its space, objective, searcher, seed, proxy spec, ladder), typed.

One value type for the study's metadata wherever it travels: :func:`mixopt.create_study` builds it,
a :class:`~mixopt.study.Storage` stores ``to_dict()`` (JSON) and returns ``from_dict()``,
:class:`mixopt.Study` and ``mixopt.client.RemoteStudy`` read it, and ``mixopt serve`` sends and
receives ``to_dict()``. Its parts own their own forms (:meth:`MixtureSpace.to_dict`,
:meth:`Objective.to_dict`, :meth:`ProxySpec.to_dict`).

The stored form keeps the keys studies have always had (``domains``, ``lower``, ``upper``,
``prior``, ``objective``, ``searcher``, ``searcher_options``, ``n_init``, ``seed``, ``spec``) plus
``rungs`` (the scale ladder; studies stored before the rename hold it as ``fidelities``, which
:meth:`StudyMeta.from_dict` reads too). Every other top-level key is ``extra`` (the run config of
``mixopt run``, a transfer study's arms, ...), kept as it came.

Example:
    >>> from mixopt.core.mixture import MixtureSpace
    >>> from mixopt.core.objective import Objective
    >>> space = MixtureSpace(("a", "b"), (0.0, 0.0), (1.0, 1.0))
    >>> m = StudyMeta("demo", space, Objective({"a": 0.5, "b": 0.5}), "random")
    >>> StudyMeta.from_dict(m.to_dict()) == m
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mixopt.core.errors import ConfigError
from mixopt.core.mixture import MixtureSpace
from mixopt.core.names import check_study_name
from mixopt.core.objective import Objective
from mixopt.core.spec import ProxySpec, rung_index, upgrade_stored_spec

_KEYS = ("name", "domains", "lower", "upper", "prior", "objective", "searcher", "searcher_options", "n_init",
         "seed", "spec", "rungs", "fidelities")


@dataclass(frozen=True)
class StudyMeta:
    """A study's definition.

    Attributes:
        name: the study's name (its MLflow experiment).
        space: the mixtures it may propose (training domains, floors, caps, natural prior).
        objective: how per-domain losses become the number to minimize.
        searcher: the searcher's registered name; ``searcher_options`` its options.
        n_init: random trials before the searcher's own proposals.
        seed: the study seed (searchers' randomness, sweeps).
        spec: the proxy spec new trials get (None: told results only).
        rungs: the scale ladder, cheapest first; the last rung is the target.
        extra: any other JSON-able metadata, kept as given.
    """

    name: str
    space: MixtureSpace
    objective: Objective
    searcher: str = "random"
    searcher_options: Mapping[str, Any] = field(default_factory=dict)
    n_init: int = 0
    seed: int = 0
    spec: ProxySpec | None = None
    rungs: tuple[ProxySpec, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_study_name(self.name, "create_study: name")
        self.check_counts(self.n_init, self.seed)
        object.__setattr__(self, "rungs", tuple(self.rungs))
        if self.rungs and self.spec is None:
            object.__setattr__(self, "spec", self.rungs[-1])
        clash = sorted(set(self.extra) & set(_KEYS))
        if clash:
            raise ConfigError(f"create_study: extra key {clash[0]!r} is a study field; allowed: other names")

    @staticmethod
    def check_counts(n_init: object, seed: object) -> None:
        """ConfigError unless ``n_init`` is an integer >= 0 and ``seed`` an integer."""
        if isinstance(n_init, bool) or not isinstance(n_init, int) or n_init < 0:
            raise ConfigError(f"create_study: n_init={n_init!r} must be an integer >= 0")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"create_study: seed={seed!r} must be an integer")

    def rung_of(self, spec: ProxySpec | None) -> int | None:
        """Index of ``spec`` in the ladder (None: no spec, no ladder, or not on it)."""
        return rung_index(spec, self.rungs)

    def to_dict(self) -> dict[str, Any]:
        """The stored (JSON-able) form; see the module docstring."""
        return {"name": self.name, **self.space.to_dict(), "objective": self.objective.to_dict(),
                "searcher": self.searcher, "searcher_options": dict(self.searcher_options), "n_init": self.n_init,
                "seed": self.seed, "spec": self.spec.to_dict() if self.spec else None,
                "rungs": [r.to_dict() for r in self.rungs], **dict(self.extra)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StudyMeta:
        """The inverse of :meth:`to_dict`; also reads studies stored before ``rungs`` was named so.

        Raises:
            ConfigError, SpaceError: a field is missing or malformed.
        """
        if not isinstance(d, Mapping) or "name" not in d or "objective" not in d:
            raise ConfigError("study metadata: needs at least name, domains, lower, upper and objective")
        rungs = d.get("rungs") if d.get("rungs") is not None else d.get("fidelities")
        return cls(d["name"], MixtureSpace.from_dict(d), Objective.from_dict(d["objective"]),
                   str(d.get("searcher", "random")), dict(d.get("searcher_options") or {}), int(d.get("n_init", 0)),
                   int(d.get("seed", 0)), ProxySpec.from_dict(upgrade_stored_spec(d["spec"])) if d.get("spec") else None,
                   tuple(ProxySpec.from_dict(upgrade_stored_spec(r)) for r in rungs or ()),
                   {k: v for k, v in d.items() if k not in _KEYS})
