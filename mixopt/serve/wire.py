"""The wire form of the serve API: JSON for trials, recommendations, studies and runs tables.

Shared by the server (:mod:`mixopt.serve.app`) and the client (:mod:`mixopt.client`), so both
read and write the same shapes. Imports only ``mixopt.core`` and ``mixopt.search.base``
(no FastAPI, no MLflow): the client may import it anywhere mixopt is installed.

Non-finite numbers are written as ``NaN`` / ``Infinity`` (as Python's :mod:`json` does), so a
trial whose loss is ``nan`` reads back as ``nan``, not as a made-up value.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mixopt.core import errors as _errors
from mixopt.core.mixture import Mixture
from mixopt.core.spec import ProxySpec
from mixopt.core.trial import Trial, TrialState
from mixopt.search.base import Recommendation

if TYPE_CHECKING:
    import pandas as pd

#: the exception classes an error body may name (``{"error": ..., "type": <name>}``)
ERROR_TYPES: dict[str, type[_errors.MixoptError]] = {
    name: c for name, c in vars(_errors).items() if isinstance(c, type) and issubclass(c, _errors.MixoptError)}

#: environment variable holding the bearer token (server and client)
TOKEN_ENV = "MIXOPT_SERVE_TOKEN"


def to_jsonable(o: Any) -> Any:
    """``json.dumps`` ``default=``: numpy scalars/arrays, mappings, sets, paths, dates; else ``str``."""
    item = getattr(o, "item", None)
    if callable(item) and getattr(o, "shape", None) == ():  # numpy scalar
        return item()
    tolist = getattr(o, "tolist", None)
    if callable(tolist):  # numpy array, pandas index
        return tolist()
    if isinstance(o, Mapping):
        return dict(o)
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    if isinstance(o, (_dt.datetime, _dt.date)):
        return o.isoformat()
    if type(o).__name__ in ("NAType", "NaTType"):  # pandas missing values
        return None
    return str(o)


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON; non-finite floats as ``NaN``/``Infinity``."""
    return json.dumps(obj, default=to_jsonable, separators=(",", ":"), allow_nan=True).encode("utf-8")


# --- trials -------------------------------------------------------------------------------
def trial_to_wire(t: Trial) -> dict[str, Any]:
    """A :class:`~mixopt.core.trial.Trial` as a JSON object (every field; ``mixture`` keeps the
    study's domain order)."""
    return {"trial_id": t.trial_id, "mixture": t.mixture.to_dict(), "spec": t.spec.to_dict() if t.spec else None,
            "state": t.state.value, "value": t.value, "losses": dict(t.losses), "metrics": dict(t.metrics),
            "history": list(t.history), "searcher": t.searcher, "phase": t.phase, "error": t.error,
            "run_id": t.run_id, "label": t.label, "device": t.device}


def trial_from_wire(d: Mapping[str, Any]) -> Trial:
    """The inverse of :func:`trial_to_wire`."""
    mixture = dict(d["mixture"])
    return Trial(int(d["trial_id"]), Mixture(mixture, list(mixture)),
                 ProxySpec.from_dict(d["spec"]) if d.get("spec") else None, TrialState(d["state"]), d.get("value"),
                 dict(d.get("losses") or {}), dict(d.get("metrics") or {}), list(d.get("history") or []),
                 d.get("searcher", ""), d.get("phase", ""), d.get("error"), d.get("run_id"), d.get("label", ""),
                 d.get("device", ""))


def recommendation_to_wire(r: Recommendation) -> dict[str, Any]:
    return {"mixture": r.mixture.to_dict(), "predicted": r.predicted, "std": r.std, "info": dict(r.info)}


def recommendation_from_wire(d: Mapping[str, Any]) -> Recommendation:
    mixture = dict(d["mixture"])
    return Recommendation(Mixture(mixture, list(mixture)), d.get("predicted"), d.get("std"), dict(d.get("info") or {}))


# --- runs tables ---------------------------------------------------------------------------
def frame_to_wire(df: pd.DataFrame) -> dict[str, Any]:
    """A DataFrame as ``{"columns": [...], "data": [[...], ...]}`` (row lists, column order kept)."""
    split = df.to_dict(orient="split")
    return {"columns": list(split["columns"]), "data": [list(r) for r in split["data"]]}


def frame_from_wire(d: Mapping[str, Any]) -> pd.DataFrame:
    """The inverse of :func:`frame_to_wire` (dtypes inferred per column, as pandas does for rows)."""
    import pandas as pd

    columns = list(d.get("columns") or [])
    data = list(d.get("data") or [])
    if not columns and not data:
        return pd.DataFrame([])
    return pd.DataFrame(data, columns=columns)
