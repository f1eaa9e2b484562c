"""The HTTP JSON API of ``mixopt serve``: ask/tell over the same :class:`~mixopt.study.Study` code.

Every endpoint calls the same :class:`mixopt.study.Study` methods a local script does, on a study
in the same store, so whatever a served study does lands in MLflow exactly as a local study's
would (the dashboard and ``mixopt ui`` show it unchanged).

Concurrency: the server keeps one :class:`Study` per study name, each behind its own
:class:`threading.Lock`; every call on a study (FastAPI runs these sync endpoints in a thread
pool) holds that lock, so concurrent clients never lose a tell, never get the same pending
trial twice and never get duplicate trial ids. With ``reload=True`` the study is re-read from the
store inside the lock before every write, for stores that other processes write to as well.

Errors: a :class:`~mixopt.core.errors.UserError` (and subclasses) becomes 400 (404 for an
unknown study or trial, 409 for creating a study that exists) with the body
``{"error": "<the exception's one-line message>", "type": "<its class name>"}``, which
:mod:`mixopt.client` raises again as the same class. Malformed JSON: 400; a body of the wrong
shape: 422; a body over the size limit: 413; a missing or wrong bearer token: 401.

Endpoints (OpenAPI docs at ``/docs``)::

    GET  /health                              liveness, version, limits
    GET  /studies                             study names in the store
    POST /studies                             create (or open, load_if_exists) a study
    GET  /studies/{name}                      its metadata, counts, fidelity costs
    POST /studies/{name}/ask                  {"n": 4}            -> {"trials": [...]}
    POST /studies/{name}/tell                 {"trial_id": 3, "result": {...} | 2.9, "error": null}
    POST /studies/{name}/enqueue              {"mixture": {...}, "label": "uniform"}
    POST /studies/{name}/running              {"trial_id": 3}
    POST /studies/{name}/completed            {"csv": "..."} | {"records": [...]} | {"columns", "data"}
    GET  /studies/{name}/best | /recommend | /counts | /trials | /trials/{id}
    GET  /studies/{name}/runs.csv | /runs.json
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import io
import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from starlette.exceptions import HTTPException as StarletteHTTPException

from mixopt.core.errors import ConfigError, MixoptError, RunsTableError, UserError
from mixopt.core.mixture import MixtureSpace
from mixopt.core.objective import Objective
from mixopt.core.runs_table import RunsTable
from mixopt.core.spec import ProxySpec
from mixopt.serve import wire
from mixopt.study import Storage, Study, create_study, get_storage, load_study

log = logging.getLogger("mixopt.serve")

MAX_BODY_BYTES = 8 * 1024 * 1024  #: default request-size limit (413 above it)
MAX_ASK = 256  #: default limit on ``n`` per ask
_OPEN_PATHS = ("/docs", "/docs/oauth2-redirect", "/openapi.json")  # readable without the token


class _Status(Exception):
    """A mixopt error answered with a specific status (404 unknown study/trial, 409 exists)."""

    def __init__(self, status: int, error: MixoptError) -> None:
        super().__init__(str(error))
        self.status, self.error = status, error


# --- request bodies ---------------------------------------------------------------------------
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
    maximize: bool = False


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
    searcher: str = "random"
    searcher_options: dict[str, Any] | None = None
    n_init: int = 0
    seed: int = 0
    spec: dict[str, Any] | None = Field(None, description="ProxySpec fields")
    fidelities: list[dict[str, Any]] = Field(default_factory=list, description="ProxySpec fields, cheapest first")
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


# --- the studies this server holds -------------------------------------------------------------
@dataclass
class _Entry:
    study: Study | None
    lock: threading.Lock = field(default_factory=threading.Lock)


class StudyHub:
    """One :class:`Study` per study name, each behind its own lock.

    Args:
        storage: the store (a tracking URI or a :class:`~mixopt.study.Storage`).
        reload: re-read a study from the store inside its lock before every write (slower; for
            stores that other processes write to as well).
    """

    def __init__(self, storage: Storage | str, reload: bool = False) -> None:
        self.storage_arg = storage
        self.storage = get_storage(storage)
        self.reload = reload
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}

    def names(self) -> list[str]:
        return self.storage.study_names()

    def _entry(self, name: str) -> _Entry:
        entry = self._entries.get(name)
        if entry is not None:
            return entry
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                if self.storage.load_meta(name) is None:  # load_study's own message, naming the store
                    try:
                        load_study(name, self.storage_arg)
                    except UserError as e:
                        raise _Status(404, e) from None
                entry = self._entries[name] = _Entry(load_study(name, self.storage))
            return entry

    @contextlib.contextmanager
    def study(self, name: str, write: bool = False) -> Iterator[Study]:
        """The study ``name``, its lock held (404 for an unknown study); re-read from the store
        first when it is a write and ``reload`` is on, or after a failed write."""
        entry = self._entry(name)
        with entry.lock:
            if entry.study is None or (write and self.reload):
                entry.study = load_study(name, self.storage)
            try:
                yield entry.study
            except (UserError, _Status):
                raise  # checked before anything is written: the study in memory is the store's
            except BaseException:
                entry.study = None  # a write may have stopped half way: read it again next time
                raise

    def create(self, kwargs: dict[str, Any]) -> Study:
        """:func:`mixopt.create_study` in this store (409 when it exists and not ``load_if_exists``)."""
        name = kwargs["name"]
        with self._lock:
            entry = self._entries.get(name)
            exists = entry is not None or self.storage.load_meta(name) is not None
            if entry is not None and kwargs.get("load_if_exists"):
                with entry.lock:
                    if entry.study is None:
                        entry.study = load_study(name, self.storage)
                    return entry.study
            try:
                study = create_study(storage=self.storage, **kwargs)
            except UserError as e:
                if exists:
                    raise _Status(409, e) from None
                raise
            self._entries[name] = _Entry(study)
            return study


def _spec(d: Mapping[str, Any] | None, where: str) -> ProxySpec | None:
    if d is None:
        return None
    try:
        return ProxySpec.from_dict(dict(d), where)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


def _create_kwargs(b: CreateStudyBody) -> dict[str, Any]:
    if b.objective is not None and b.objective_def is not None:
        raise ConfigError("create_study: give objective (config form) or objective_def, not both")
    objective: Objective | dict[str, Any] | None = b.objective
    if b.objective_def is not None:
        o = b.objective_def
        objective = Objective(dict(o.weights), tuple(o.targets), o.description, o.maximize)
    space = None
    if b.space is not None:
        if b.floors or b.caps:
            raise ConfigError("create_study: give space, or domains with floors/caps, not both")
        s = b.space
        space = MixtureSpace(tuple(s.domains), tuple(s.lower), tuple(s.upper), tuple(s.prior))
    elif b.floors or b.caps:
        if not b.domains:
            raise ConfigError("create_study: floors/caps need domains")
        if not isinstance(objective, Objective):
            objective = Objective.from_config(objective, list(b.domains))
        train = [d for d in b.domains if d not in objective.targets]
        space = MixtureSpace.build(train, floors=b.floors, caps=b.caps)
    return {"name": b.name, "space": space, "domains": b.domains, "objective": objective, "searcher": b.searcher,
            "searcher_options": b.searcher_options, "n_init": b.n_init, "seed": b.seed,
            "spec": _spec(b.spec, "spec"),
            "fidelities": [_spec(f, f"fidelities[{i}]") for i, f in enumerate(b.fidelities)],
            "load_if_exists": b.load_if_exists, "extra": b.extra}


def _frame(b: CompletedBody):
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


# --- responses ---------------------------------------------------------------------------------
def _json(obj: Any, status: int = 200) -> Response:
    return Response(wire.dumps(obj), status, media_type="application/json")


def _error(status: int, e: BaseException, type_name: str | None = None) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return Response(wire.dumps({"error": str(e), "type": type_name or type(e).__name__}), status,
                    headers=headers, media_type="application/json")


def _trial_or_404(study: Study, trial_id: Any, call: Callable[[], Any] | None = None) -> Any:
    """``call()`` (default: ``study.trial(trial_id)``); its UserError is answered 404 when it is
    the unknown-trial error (whatever order the Study checks things in), else 400."""
    try:
        return call() if call is not None else study.trial(trial_id)
    except UserError as e:
        try:
            study.trial(trial_id)
        except UserError as unknown:
            if str(unknown) == str(e):
                raise _Status(404, e) from None
        raise


def _trial_id(text: str) -> Any:
    """A trial id from a URL segment: JSON (``3``, ``"3"``, ``2.5``) or else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


# --- guard: token and request size --------------------------------------------------------------
class _Guard:
    """Pure ASGI middleware: bearer token (constant-time compare) and the request-size limit.

    The body is read here (at most ``max_body`` bytes) and replayed to the app; a larger one is
    answered 413 (after reading what was sent, up to a bound, so the client sees the answer).
    """

    def __init__(self, app, token: str | None, max_body: int) -> None:
        self.app, self.max_body = app, max_body
        self.token = token.encode() if token else None

    def _authorized(self, scope) -> bool:
        if self.token is None or scope["path"] in _OPEN_PATHS:
            return True
        value = b""
        for k, v in scope.get("headers") or []:
            if k == b"authorization":
                value = v
        scheme, _, cred = value.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(cred.strip(), self.token)

    async def _reject(self, send, receive, status: int, message: str, drain: int) -> None:
        seen, more = 0, True
        while more and seen <= drain:  # read (and drop) what the client sends, so it sees the answer
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            seen += len(msg.get("body", b""))
            more = msg.get("more_body", False)
        body = wire.dumps({"error": message, "type": "UserError"})
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self._authorized(scope):
            await self._reject(send, receive, 401, "missing or wrong bearer token: send the header "
                               "'Authorization: Bearer <token>' (mixopt.client.Client(url, token=...))", self.max_body)
            return
        too_big = (f"request body larger than this server's limit of {self.max_body} bytes; "
                   "send less per request (e.g. add_completed in parts)")
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await self._reject(send, receive, 413, too_big, 4 * self.max_body)
            return
        chunks, size, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunk = msg.get("body", b"")
            size += len(chunk)
            chunks.append(chunk)
            more = msg.get("more_body", False)
            if size > self.max_body:
                await self._reject(send, receive, 413, too_big, 4 * self.max_body if more else -1)
                return
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


# --- the app ---------------------------------------------------------------------------------------
@functools.cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mixopt")
    except PackageNotFoundError:
        return "unknown"


def create_app(storage: Storage | str, token: str | None = None, *, max_body: int = MAX_BODY_BYTES,
               max_ask: int = MAX_ASK, reload: bool = False) -> FastAPI:
    """The serve API over the studies in ``storage``.

    Args:
        storage: an MLflow tracking URI (``sqlite:///mlflow.db``) or a :class:`~mixopt.study.Storage`.
        token: when set, every request (but ``/docs`` and ``/openapi.json``) needs
            ``Authorization: Bearer <token>``.
        max_body: request-size limit in bytes (413 above it).
        max_ask: the largest ``n`` one ask may request.
        reload: re-read a study from the store before every write (other processes write it too).
    """
    hub = StudyHub(storage, reload=reload)
    bearer = HTTPBearer(auto_error=False, description="the server's --token / $MIXOPT_SERVE_TOKEN, when it has one")
    app = FastAPI(title="mixopt serve", version=_version(), dependencies=[Security(bearer)],
                  description="Ask/tell over HTTP for the studies of one MLflow store: the same Study code as "
                              "`mixopt.create_study`. Python: `mixopt.client.Client(url).create_study(...)`. "
                              "Errors: `{\"error\": \"<one line>\", \"type\": \"<mixopt exception class>\"}`.")
    app.state.hub = hub
    app.add_middleware(_Guard, token=token, max_body=max_body)

    @app.exception_handler(_Status)
    async def _status(request: Request, e: _Status) -> Response:
        return _error(e.status, e.error)

    @app.exception_handler(UserError)
    async def _user(request: Request, e: UserError) -> Response:
        return _error(400, e)

    @app.exception_handler(MixoptError)
    async def _mixopt(request: Request, e: MixoptError) -> Response:
        log.error("%s %s: %s: %s", request.method, request.url.path, type(e).__name__, e)
        return _error(500, e)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError) -> Response:
        errors = e.errors()
        if any(err.get("type") == "json_invalid" for err in errors):
            ctx = next(err.get("ctx", {}) for err in errors if err.get("type") == "json_invalid")
            return _error(400, UserError(f"request body is not valid JSON ({ctx.get('error', 'parse error')})"))
        parts = ["{}: {}".format(".".join(str(x) for x in err.get("loc", ())), err.get("msg", "invalid"))
                 for err in errors]
        return _error(422, UserError("; ".join(parts)))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException) -> Response:
        return _error(e.status_code, Exception(str(e.detail)), "HTTPError")

    @app.exception_handler(Exception)
    async def _bug(request: Request, e: Exception) -> Response:  # uvicorn logs the traceback
        line = str(e).splitlines()[0] if str(e) else ""
        return _error(500, Exception(f"internal error: {type(e).__name__}: {line}"), "InternalError")

    # --- store ----------------------------------------------------------------------------------
    @app.get("/health", tags=["server"])
    async def health() -> Response:  # on the event loop: answers even when every worker thread waits
        """Liveness, version and this server's limits."""
        return _json({"status": "ok", "version": _version(), "max_body_bytes": max_body, "max_ask": max_ask})

    @app.get("/studies", tags=["studies"])
    def studies() -> Response:
        """The names of the studies in the store."""
        return _json({"studies": hub.names()})

    @app.post("/studies", tags=["studies"])
    def create(body: CreateStudyBody) -> Response:
        """Create a study (``mixopt.create_study``), or open it with ``load_if_exists``."""
        name = hub.create(_create_kwargs(body)).name
        with hub.study(name) as study:
            return _json(_info(study))

    def _info(study: Study) -> dict[str, Any]:
        return {"name": study.name, "meta": study.meta, "counts": study.counts(),
                "fidelity_costs": study.fidelity_costs()}

    # --- one study: the writes (each under the study's lock) ----------------------------------------------
    @app.post("/studies/{name:path}/ask", tags=["ask/tell"])
    def ask(name: str, body: AskBody) -> Response:
        """Hand out up to ``n`` trials (enqueued ones first, then the initial design, then the searcher)."""
        if isinstance(body.n, int) and not isinstance(body.n, bool) and body.n > max_ask:
            raise UserError(f"ask: n={body.n} is more than this server's limit of {max_ask} per request; "
                            "ask in smaller batches")
        spec = _spec(body.spec, "spec")
        with hub.study(name, write=True) as study:
            return _json({"trials": [wire.trial_to_wire(t) for t in study.ask(body.n, spec)]})

    @app.post("/studies/{name:path}/tell", tags=["ask/tell"])
    def tell(name: str, body: TellBody) -> Response:
        """Report a trial's losses (``{domain: loss}``, a worker result, or a float objective) or an error."""
        with hub.study(name, write=True) as study:
            t = _trial_or_404(study, body.trial_id, lambda: study.tell(body.trial_id, body.result, error=body.error))
            return _json({"trial": wire.trial_to_wire(t)})

    @app.post("/studies/{name:path}/enqueue", tags=["ask/tell"])
    def enqueue(name: str, body: EnqueueBody) -> Response:
        """Queue a mixture of your own; the next ask hands it out first."""
        spec = _spec(body.spec, "spec")
        with hub.study(name, write=True) as study:
            return _json({"trial": wire.trial_to_wire(study.enqueue(body.mixture, spec, body.label))})

    @app.post("/studies/{name:path}/running", tags=["ask/tell"])
    def running(name: str, body: TrialIdBody) -> Response:
        """Mark a PENDING trial RUNNING."""
        with hub.study(name, write=True) as study:
            t = _trial_or_404(study, body.trial_id, lambda: study.mark_running(body.trial_id))
            return _json({"trial": wire.trial_to_wire(t)})

    @app.post("/studies/{name:path}/completed", tags=["ask/tell"])
    def completed(name: str, body: CompletedBody) -> Response:
        """Warm start from a runs table (``w.<domain>`` columns, ``loss.<domain>`` or an objective column)."""
        df, source = _frame(body)
        rt = RunsTable.from_frame(df, source, body.objective)
        with hub.study(name, write=True) as study:
            return _json({"trials": [wire.trial_to_wire(t) for t in study.add_completed(rt, body.objective)]})

    # --- one study: reads ------------------------------------------------------------------------------
    @app.get("/studies/{name:path}/best", tags=["results"])
    def best(name: str) -> Response:
        """The COMPLETE trial with the lowest objective (``null`` before any)."""
        with hub.study(name) as study:
            t = study.best()
            return _json({"trial": wire.trial_to_wire(t) if t is not None else None})

    @app.get("/studies/{name:path}/recommend", tags=["results"])
    def recommend(name: str) -> Response:
        """The searcher's recommended mixture with its predicted objective."""
        with hub.study(name) as study:
            return _json(wire.recommendation_to_wire(study.recommend()))

    @app.get("/studies/{name:path}/counts", tags=["results"])
    def counts(name: str) -> Response:
        """Trials per state."""
        with hub.study(name) as study:
            return _json(study.counts())

    @app.get("/studies/{name:path}/trials/{trial_id}", tags=["results"])
    def trial(name: str, trial_id: str) -> Response:
        """One trial (404 for an unknown id)."""
        with hub.study(name) as study:
            return _json({"trial": wire.trial_to_wire(_trial_or_404(study, _trial_id(trial_id)))})

    @app.get("/studies/{name:path}/trials", tags=["results"])
    def trials(name: str) -> Response:
        """Every trial, in id order."""
        with hub.study(name) as study:
            return _json({"trials": [wire.trial_to_wire(t) for t in study.trials]})

    @app.get("/studies/{name:path}/runs.csv", tags=["results"])
    def runs_csv(name: str) -> Response:
        """The runs table (``Study.to_dataframe``) as CSV."""
        with hub.study(name) as study:
            df = study.to_dataframe()
        return Response(df.to_csv(index=False), media_type="text/csv")

    @app.get("/studies/{name:path}/runs.json", tags=["results"])
    def runs_json(name: str, orient: Annotated[str, Query(pattern="^(records|split)$")] = "records") -> Response:
        """The runs table as JSON: one object per row (``records``) or ``{columns, data}`` (``split``)."""
        with hub.study(name) as study:
            df = study.to_dataframe()
        if orient == "split":
            return _json(wire.frame_to_wire(df))
        return _json(df.to_dict(orient="records"))

    @app.get("/studies/{name:path}", tags=["studies"])
    def info(name: str) -> Response:
        """The study's metadata (as stored), trial counts and per-rung costs."""
        with hub.study(name) as study:
            return _json(_info(study))

    return app
