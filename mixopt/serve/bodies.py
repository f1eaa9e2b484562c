"""The request bodies of the serve API (pydantic), and what each becomes on the Study side.

Fields the Study validates itself are passed through as they came (typed ``Any`` with a schema for
the docs), so a bad value gets the very message and exception class the Python API gives. A space
and an objective travel in the forms their own classes write (:meth:`MixtureSpace.to_dict`,
:meth:`Objective.to_dict`) and are read back by them.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from mixopt.core.errors import ConfigError, RunsTableError
from mixopt.core.mixture import MixtureSpace
from mixopt.core.objective import Objective
from mixopt.core.spec import ProxySpec
from mixopt.search import DEFAULT_SEARCHER
from mixopt.serve import wire

# Fields the Study validates itself are passed through as they came (typed ``Any`` with a schema
# for the docs), so a bad value gets the very message and exception class the Python API gives.
_Int = Annotated[Any, WithJsonSchema({"type": "integer"})]
_Weights = Annotated[Any, WithJsonSchema({"type": "object", "additionalProperties": {"type": "number"},
                                          "example": {"code": 0.5, "legal": 0.2, "web": 0.3}})]
_Result = Annotated[Any, WithJsonSchema({
    "anyOf": [{"type": "object", "description": "{domain: loss}, or a worker result with 'losses'"},
              {"type": "number"}, {"type": "null"}], "example": {"code": 3.1, "legal": 2.8, "web": 3.3}})]
_Text = Annotated[Any, WithJsonSchema({"type": "string"})]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SpaceBody(_Body):
    """A :class:`~mixopt.core.mixture.MixtureSpace`: per-domain floors (``lower``) and caps (``upper``)."""

    domains: list[str]
    lower: list[float]
    upper: list[float]
    prior: list[float] = Field(default_factory=list)


class ObjectiveBody(_Body):
    """An :class:`~mixopt.core.objective.Objective` exactly (weights, held-out targets, description)."""

    weights: dict[str, float]
    targets: list[str] = Field(default_factory=list)
    description: str = ""


class CreateStudyBody(_Body):
    """The arguments of :func:`mixopt.create_study` less ``storage`` (the server's store)."""

    name: str = "mixopt-study"
    domains: list[str] | None = Field(None, description="full simplex over these domains (or give space)")
    space: SpaceBody | None = None
    floors: dict[str, float] | None = Field(None, description="with domains: per-domain floors")
    caps: dict[str, float] | None = Field(None, description="with domains: per-domain caps")
    objective: dict[str, Any] | None = Field(None, description="config form: {domain: X} | {weights: {...}} | "
                                                               "{target: X}; default: mean loss")
    objective_def: ObjectiveBody | None = Field(None, description="an Objective exactly (instead of objective)")
    searcher: str = DEFAULT_SEARCHER
    searcher_options: dict[str, Any] | None = None
    n_init: int = 0
    seed: int = 0
    spec: dict[str, Any] | None = Field(None, description="ProxySpec fields")
    rungs: list[dict[str, Any]] = Field(default_factory=list, description="the scale ladder: ProxySpec fields, "
                                        "cheapest first")
    fidelities: list[dict[str, Any]] = Field(default_factory=list, description="deprecated name of rungs")
    load_if_exists: bool = False
    extra: dict[str, Any] | None = None


class AskBody(_Body):
    n: _Int = Field(1, description="how many trials (pending ones count for the searcher)")
    spec: dict[str, Any] | None = Field(None, description="ProxySpec fields for the new trials")


class TellBody(_Body):
    trial_id: _Int
    result: _Result = None
    error: _Text = Field(None, description="mark the trial FAILED with this reason")


class EnqueueBody(_Body):
    mixture: _Weights
    spec: dict[str, Any] | None = None
    label: _Text = ""


class TrialIdBody(_Body):
    trial_id: _Int


class CompletedBody(_Body):
    """A runs table: CSV text, JSON records, or ``columns`` + ``data`` rows (give one)."""

    csv: str | None = Field(None, description="runs table as CSV text")
    records: list[dict[str, Any]] | None = Field(None, description="one object per row")
    columns: list[Any] | None = None
    data: list[list[Any]] | None = None
    source: str | None = Field(None, description="name of the table in messages (e.g. its file name)")
    objective: str | None = Field(None, description="column holding the objective (default: from loss.* columns)")



def spec_of(d: Mapping[str, Any] | None, where: str) -> ProxySpec | None:
    """A ProxySpec from its fields (None stays None)."""
    if d is None:
        return None
    try:
        return ProxySpec.from_dict(dict(d), where)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


def create_kwargs(b: CreateStudyBody) -> dict[str, Any]:
    """The keyword arguments of :func:`mixopt.create_study` a create request stands for."""
    if b.objective is not None and b.objective_def is not None:
        raise ConfigError("create_study: give objective (config form) or objective_def, not both")
    if b.rungs and b.fidelities:
        raise ConfigError("create_study: give rungs (fidelities is its old name), not both")
    objective: Objective | dict[str, Any] | None = b.objective
    if b.objective_def is not None:
        objective = Objective.from_dict(b.objective_def.model_dump(), "objective_def")
    space = None
    if b.space is not None:
        if b.floors or b.caps:
            raise ConfigError("create_study: give space, or domains with floors/caps, not both")
        space = MixtureSpace.from_dict(b.space.model_dump())
    elif b.floors or b.caps:
        if not b.domains:
            raise ConfigError("create_study: floors/caps need domains")
        if not isinstance(objective, Objective):
            objective = Objective.from_config(objective, list(b.domains))
        space = MixtureSpace.build(objective.training_domains(b.domains), floors=b.floors, caps=b.caps)
    rungs = b.rungs or b.fidelities
    return {"name": b.name, "space": space, "domains": b.domains, "objective": objective, "searcher": b.searcher,
            "searcher_options": b.searcher_options, "n_init": b.n_init, "seed": b.seed,
            "spec": spec_of(b.spec, "spec"), "rungs": [spec_of(f, f"rungs[{i}]") for i, f in enumerate(rungs)],
            "load_if_exists": b.load_if_exists, "extra": b.extra}


def frame_of(b: CompletedBody):
    """The runs table a completed request carries, as a DataFrame, and its name for messages."""
    import pandas as pd

    given = [k for k in ("csv", "records", "data") if getattr(b, k) is not None]
    if len(given) != 1:
        raise RunsTableError("add_completed: give the runs table once, as csv, records, or columns + data "
                             f"(got {', '.join(given) or 'none'})")
    if b.csv is not None:
        source = b.source or "<csv>"
        try:
            return pd.read_csv(io.StringIO(b.csv)), source
        except Exception as e:  # pandas raises many types for a bad file
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise RunsTableError(f"{source}: cannot read as csv: {msg}") from None
    if b.records is not None:
        return pd.DataFrame(b.records), b.source or "<records>"
    if b.columns is None:
        raise RunsTableError("add_completed: data needs columns")
    try:
        return wire.frame_from_wire({"columns": b.columns, "data": b.data}), b.source or "<dataframe>"
    except ValueError as e:
        raise RunsTableError(f"{b.source or '<dataframe>'}: {e}") from None

