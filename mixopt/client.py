"""Python client of ``mixopt serve``: the ask/tell API of :mod:`mixopt` against a server.

Code written against the Python API runs against a server by changing one line::

    study = mixopt.create_study("demo", domains=["code", "legal", "web"], storage="sqlite:///mlflow.db")
    study = Client("http://127.0.0.1:8765").create_study("demo", domains=["code", "legal", "web"])

:class:`RemoteStudy` has the methods of :class:`mixopt.Study` and returns the same types
(:class:`~mixopt.core.trial.Trial` with a :class:`~mixopt.core.mixture.Mixture`,
:class:`~mixopt.search.Recommendation`, a pandas DataFrame); a mistake raises the same
exception class with the same message (:class:`~mixopt.core.errors.UserError`,
``ConfigError``, ``MixtureError``, ``RunsTableError``, ...), because the server runs the very same
Study code. An unreachable server is a ``UserError`` within ``timeout``.

Only the standard library speaks HTTP here (``urllib``), and neither MLflow nor FastAPI is
imported, so the client works wherever mixopt itself is installed.
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mixopt.core.errors import MixoptError, UserError
from mixopt.core.meta import StudyMeta
from mixopt.core.mixture import MixtureSpace
from mixopt.core.objective import Objective
from mixopt.core.runs_table import RunsTable, read_runs_table
from mixopt.core.spec import ProxySpec
from mixopt.core.trial import Trial
from mixopt.core.worker import TrialResult
from mixopt.search import DEFAULT_SEARCHER
from mixopt.search.base import Recommendation
from mixopt.serve import wire
from mixopt.study.study import StudySettings

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Client", "RemoteError", "RemoteMixer", "RemoteStudy"]


class RemoteError(MixoptError):
    """The server failed (5xx), or what answered is not a mixopt server."""


class Client:
    """A connection to a ``mixopt serve`` server.

    Args:
        url: the server, e.g. ``http://127.0.0.1:8765``.
        token: bearer token (default: ``$MIXOPT_SERVE_TOKEN``, if set).
        timeout: seconds to wait for the server on each call (connecting and answering).

    Example:
        >>> client = Client("http://127.0.0.1:8765")                        # doctest: +SKIP
        >>> study = client.create_study("demo", domains=["a", "b"], searcher="random")  # doctest: +SKIP
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UserError(f"Client: url {url!r} must look like http://host:port")
        if timeout <= 0:
            raise UserError(f"Client: timeout={timeout!r} must be > 0 seconds")
        self.url = url.rstrip("/")
        self.token = token if token is not None else (os.environ.get(wire.TOKEN_ENV) or None)
        self.timeout = float(timeout)
        # a server on this machine is never reached through an HTTP proxy from the environment
        local = parts.hostname in ("localhost", "127.0.0.1", "::1") or parts.hostname.startswith("127.")
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({})) if local \
            else urllib.request.build_opener()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # --- HTTP ------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, raw: bool = False) -> Any:
        """One call: JSON ``body`` in, the decoded JSON (or the text, ``raw``) out; errors raised
        as the server's mixopt exception class."""
        data = wire.dumps(body) if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        where = f"mixopt server {self.url}"
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                text = resp.read().decode("utf-8")
        except urllib.error.HTTPError as e:
            raise self._error(e, method, path) from None
        except TimeoutError:
            raise UserError(f"{where}: no answer to {method} {path} within {self.timeout:g} s (a write may or may "
                            "not have taken effect; raise Client(timeout=...) for slow searchers)") from None
        except urllib.error.URLError as e:
            reason = e.reason
            if isinstance(reason, TimeoutError):
                raise UserError(f"{where}: no connection within {self.timeout:g} s; is `mixopt serve` running "
                                "there, and reachable?") from None
            raise UserError(f"cannot reach the {where} ({reason}); is `mixopt serve` running there?") from None
        except (ConnectionError, http.client.HTTPException) as e:
            raise UserError(f"{where}: connection lost during {method} {path} ({type(e).__name__}: {e}); "
                            "a write may or may not have taken effect") from None
        if raw:
            return text
        try:
            return json.loads(text)
        except ValueError:
            raise RemoteError(f"{where}: {method} {path} answered something that is not JSON: {text[:200]!r}") from None

    def _error(self, e: urllib.error.HTTPError, method: str, path: str) -> MixoptError:
        try:
            text = e.read().decode("utf-8", "replace")
        except Exception:  # the body may be cut off
            text = ""
        try:
            payload = json.loads(text)
            msg, kind = str(payload["error"]), str(payload.get("type", ""))
        except (ValueError, KeyError, TypeError):
            msg, kind = text[:200] or (e.reason or ""), ""
        where = f"mixopt server {self.url}"
        if e.code == 401:
            return UserError(f"{where}: {msg}")
        cls = wire.ERROR_TYPES.get(kind)
        if cls is not None:
            return cls(msg)
        if e.code < 500:
            return UserError(f"{where}: {method} {path}: HTTP {e.code}: {msg}")
        return RemoteError(f"{where}: {method} {path}: HTTP {e.code}: {msg}")

    # --- studies -----------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """The server's status, version and limits."""
        return self.request("GET", "/health")

    def study_names(self) -> list[str]:
        """The names of the studies in the server's store."""
        return list(self.request("GET", "/studies")["studies"])

    def create_study(self, name: str = "mixopt-study", *, space: MixtureSpace | None = None,
                     domains: Sequence[str] | None = None, objective: Objective | Mapping[str, Any] | None = None,
                     searcher: str = DEFAULT_SEARCHER, searcher_options: Mapping[str, Any] | None = None,
                     n_init: int = 0, seed: int = 0, spec: ProxySpec | None = None,
                     rungs: Sequence[ProxySpec] = (), load_if_exists: bool = False,
                     extra: Mapping[str, Any] | None = None, fidelities: Sequence[ProxySpec] | None = None
                     ) -> RemoteStudy:
        """:func:`mixopt.create_study` on the server (its store); the same arguments less ``storage``
        (``searcher`` by name)."""
        if fidelities is not None:
            warnings.warn("create_study(fidelities=...) is now create_study(rungs=...)", DeprecationWarning,
                          stacklevel=2)
            rungs = rungs or fidelities
        body: dict[str, Any] = {
            "name": name, "domains": list(domains) if domains is not None else None, "searcher": searcher,
            "searcher_options": dict(searcher_options) if searcher_options is not None else None,
            "n_init": n_init, "seed": seed, "spec": _spec(spec),
            "load_if_exists": load_if_exists, "extra": dict(extra) if extra is not None else None}
        if rungs:  # only when there is a ladder: a server from before the rename knows "fidelities" only
            body["rungs"] = [_spec(f) for f in rungs]
        if space is not None:
            body["space"] = space.to_dict() if isinstance(space, MixtureSpace) else space
        if isinstance(objective, Objective):
            body["objective_def"] = objective.to_dict()
        elif objective is not None:
            body["objective"] = objective
        return RemoteStudy(self, self.request("POST", "/studies", body))

    def load_study(self, name: str) -> RemoteStudy:
        """:func:`mixopt.load_study` on the server: an existing study (UserError if there is none)."""
        return RemoteStudy(self, self.request("GET", _study_path(name)))

    # --- online mixers -------------------------------------------------------------------------
    def create_mixer(self, mixer_id: str, name: str, domains: Sequence[str], *, start: Mapping[str, float] | None = None,
                     study: str | None = None, load_if_exists: bool = False, **options: Any) -> RemoteMixer:
        """:func:`mixopt.online.make_mixer` on the server, reached as ``mixer_id`` (by this or any client)."""
        body = {"id": mixer_id, "name": name,  # a str goes as it is: the server refuses it as make_mixer does
                "domains": domains if isinstance(domains, str) or not isinstance(domains, Iterable) else list(domains),
                "start": dict(start) if isinstance(start, Mapping) else start,
                "study": study, "options": options, "load_if_exists": load_if_exists}
        return RemoteMixer(self, mixer_id, self.request("POST", "/mixers", body))

    def mixer(self, mixer_id: str) -> RemoteMixer:
        """A mixer the server holds (NotFoundError if there is none)."""
        return RemoteMixer(self, mixer_id, self.request("GET", _mixer_path(mixer_id) + "/plan"))

    def restore_mixer(self, mixer_id: str, state: Mapping[str, Any]) -> RemoteMixer:
        """Put a saved ``state_dict()`` on the server as ``mixer_id`` (e.g. after a restart), and continue it."""
        return RemoteMixer(self, mixer_id, self.request("PUT", _mixer_path(mixer_id) + "/state", {"state": state}))


def _study_path(name: str) -> str:
    return "/studies/" + urllib.parse.quote(str(name), safe="")


def _mixer_path(mixer_id: str) -> str:
    return "/mixers/" + urllib.parse.quote(str(mixer_id), safe="")


def _spec(spec: Any) -> Any:
    return spec.to_dict() if isinstance(spec, ProxySpec) else spec


def _trials(payload: Mapping[str, Any]) -> list[Trial]:
    return [wire.trial_from_wire(t) for t in payload["trials"]]


class RemoteStudy(StudySettings):
    """A study on a ``mixopt serve`` server, with the methods of :class:`mixopt.Study`.

    Attributes (as on :class:`mixopt.Study`): ``name``, ``space``, ``objective``,
    ``searcher_name``, ``searcher_options``, ``n_init``, ``seed``, ``spec``, ``rungs``,
    ``meta`` (a :class:`~mixopt.core.meta.StudyMeta`). Reads (``trials``, ``best()``, ...) ask the server
    each time, so they see what other clients told as well.
    """

    def __init__(self, client: Client, info: Mapping[str, Any]) -> None:
        self.client = client
        self._read_meta(StudyMeta.from_dict(info["meta"]))
        self._path = _study_path(self.name)

    def __repr__(self) -> str:
        return f"RemoteStudy({self.name!r} on {self.client.url})"

    @property
    def url(self) -> str:
        """The server this study is reached through."""
        return self.client.url

    def _get(self, suffix: str) -> Any:
        return self.client.request("GET", self._path + suffix)

    def _post(self, suffix: str, body: Mapping[str, Any]) -> Any:
        return self.client.request("POST", self._path + suffix, body)

    # --- reading ------------------------------------------------------------------------
    @property
    def trials(self) -> list[Trial]:
        return _trials(self._get("/trials"))

    def trial(self, trial_id: int) -> Trial:
        segment = urllib.parse.quote(json.dumps(trial_id, default=wire.to_jsonable), safe="")
        return wire.trial_from_wire(self._get(f"/trials/{segment}")["trial"])

    def counts(self) -> dict[str, int]:
        return dict(self._get("/counts"))

    def best(self) -> Trial | None:
        """The COMPLETE trial with the lowest objective (None before any)."""
        t = self._get("/best")["trial"]
        return wire.trial_from_wire(t) if t is not None else None

    def rung_costs(self) -> list[float]:
        """Cost per trial of each rung (as :meth:`mixopt.Study.rung_costs`, computed on the server)."""
        info = self._get("")
        return [float(c) for c in info.get("rung_costs", info.get("fidelity_costs", []))]

    # --- asking -------------------------------------------------------------------------
    def ask(self, n: int = 1, spec: ProxySpec | None = None) -> list[Trial]:
        """Hand out up to ``n`` trials (pending ones count for the searcher); see :meth:`mixopt.Study.ask`."""
        return _trials(self._post("/ask", {"n": n, "spec": _spec(spec)}))

    def enqueue(self, mixture: Mapping[str, float], spec: ProxySpec | None = None, label: str = "") -> Trial:
        """Queue a mixture of your own; the next ``ask`` hands it out before any proposal."""
        return wire.trial_from_wire(self._post("/enqueue", {"mixture": mixture, "spec": _spec(spec),
                                                            "label": label})["trial"])

    def mark_running(self, trial_id: int) -> Trial:
        return wire.trial_from_wire(self._post("/running", {"trial_id": trial_id})["trial"])

    # --- telling ------------------------------------------------------------------------
    def tell(self, trial_id: int, result: TrialResult | Mapping[str, Any] | float | None = None, *,
             error: str | None = None) -> Trial:
        """Report a trial's outcome: ``{domain: loss}``, a TrialResult (or its dict), a float objective, or
        ``error=...``; see :meth:`mixopt.Study.tell`."""
        if isinstance(result, TrialResult):
            result = result.to_dict()
        return wire.trial_from_wire(self._post("/tell", {"trial_id": trial_id, "result": result,
                                                         "error": error})["trial"])

    def add_completed(self, table: pd.DataFrame | str | os.PathLike, objective: str | None = None) -> list[Trial]:
        """Warm start from a runs table (DataFrame, or a CSV/Parquet file read here and sent);
        see :meth:`mixopt.Study.add_completed`."""
        if isinstance(table, RunsTable):
            df, source = table.df, table.source
        elif isinstance(table, (str, os.PathLike)):
            rt = read_runs_table(table, objective)  # a missing or unreadable file: the local message
            df, source = rt.df, rt.source
        else:
            df, source = table, "<dataframe>"  # checked on the server, with the local messages
        body = {**wire.frame_to_wire(df), "source": str(source), "objective": objective}
        return _trials(self._post("/completed", body))

    # --- results ------------------------------------------------------------------------
    def recommend(self) -> Recommendation:
        """The searcher's recommended mixture with its predicted objective."""
        return wire.recommendation_from_wire(self._get("/recommend"))

    def to_dataframe(self) -> pd.DataFrame:
        """Runs table: one row per trial (as :meth:`mixopt.Study.to_dataframe`)."""
        return wire.frame_from_wire(self.client.request("GET", self._path + "/runs.json?orient=split"))

    def to_csv(self) -> str:
        """The runs table as CSV text."""
        return self.client.request("GET", self._path + "/runs.csv", raw=True)


class RemoteMixer:
    """An online mixer on a ``mixopt serve`` server, with the methods of :class:`mixopt.online.OnlineMixer`
    (``step``, ``plan()``, ``weights()``, ``observe()``, ``state_dict()``, ``load_state_dict()``, ``summary()``,
    ``average()``, ``stats()``): the same results and exceptions (:class:`~mixopt.core.errors.OnlineMixerError`)
    as in-process, over HTTP. The plan the server answered last is kept, so a loop that calls ``plan()`` after
    ``observe()`` costs one request per step.
    """

    def __init__(self, client: Client, mixer_id: str, info: Mapping[str, Any]) -> None:
        self.client, self.id = client, mixer_id
        self._path = _mixer_path(mixer_id)
        self._take(info)

    def __repr__(self) -> str:
        return f"RemoteMixer({self.id!r} {self.name} on {self.client.url})"

    def _take(self, info: Mapping[str, Any]) -> None:
        from mixopt.online import StepPlan

        self.name, self.domains, self.study = info["name"], tuple(info["domains"]), info.get("study")
        self._step, self._plan = int(info["step"]), StepPlan.from_dict(info["plan"])

    @property
    def step(self) -> int:
        """The next training step (steps completed)."""
        return self._step

    def plan(self):
        """What to do at ``step`` (:class:`mixopt.online.StepPlan`)."""
        return self._plan

    def weights(self) -> dict[str, float]:
        return dict(self._plan.mixture)

    def observe(self, step: int, losses: Mapping[str, float], *, kind: str = "train",
                reference: Mapping[str, float] | None = None) -> None:
        """Report an evaluation (``kind="eval"``) or a step's batch losses (``{}`` when not asked for)."""
        body = {"step": step, "losses": dict(losses) if isinstance(losses, Mapping) else losses, "kind": kind,
                "reference": dict(reference) if isinstance(reference, Mapping) else reference}
        self._take(self.client.request("POST", self._path + "/observe", body))

    def refresh(self) -> None:
        """Read the plan from the server again (another client may have reported)."""
        self._take(self.client.request("GET", self._path + "/plan"))

    def state_dict(self) -> dict[str, Any]:
        return dict(self.client.request("GET", self._path + "/state")["state"])

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._take(self.client.request("PUT", self._path + "/state", {"state": state}))

    def summary(self) -> dict[str, Any]:
        return dict(self.client.request("GET", self._path + "/state")["summary"])

    def average(self) -> dict[str, float]:
        return dict(self.summary()["average"])

    def stats(self) -> dict[str, int]:
        return dict(self.summary()["stats"])
