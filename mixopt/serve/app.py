"""The HTTP JSON API of ``mixopt serve``: ask/tell over the same :class:`~mixopt.study.Study` code.

Every endpoint calls the same :class:`mixopt.study.Study` methods a local script does, on a study
in the same store, so whatever a served study does lands in MLflow exactly as a local study's
would (the dashboard and ``mixopt ui`` show it unchanged). The pieces: request bodies
(:mod:`mixopt.serve.bodies`), the studies held and their locks (:mod:`mixopt.serve.hub`), the token and
size guard (:mod:`mixopt.serve.guard`), the JSON forms (:mod:`mixopt.serve.wire`); this module holds
the routes and the one mapping from exceptions to answers.

Errors: every mixopt exception is answered ``{"error": "<its one-line message>", "type": "<its class
name>"}``, which :mod:`mixopt.client` raises again as the same class, with the status
:func:`status_of` gives its class: 404 :class:`~mixopt.core.errors.NotFoundError` (unknown study or
trial), 409 :class:`~mixopt.core.errors.AlreadyExistsError` (creating a study that exists), 400 any
other :class:`~mixopt.core.errors.UserError`, 500 anything else. Malformed JSON: 400; a body of the
wrong shape: 422; a body over the size limit: 413; a missing or wrong bearer token: 401.

Endpoints (OpenAPI docs at ``/docs``)::

    GET  /health                              liveness, version, limits
    GET  /studies                             study names in the store
    POST /studies                             create (or open, load_if_exists) a study
    GET  /studies/{name}                      its metadata, counts, rung costs
    POST /studies/{name}/ask                  {"n": 4}            -> {"trials": [...]}
    POST /studies/{name}/tell                 {"trial_id": 3, "result": {...} | 2.9, "error": null}
    POST /studies/{name}/enqueue              {"mixture": {...}, "label": "uniform"}
    POST /studies/{name}/running              {"trial_id": 3}
    POST /studies/{name}/completed            {"csv": "..."} | {"records": [...]} | {"columns", "data"}
    GET  /studies/{name}/best | /recommend | /counts | /trials | /trials/{id}
    GET  /studies/{name}/runs.csv | /runs.json
    GET  /mixers                              online mixers held (mixopt.online)
    POST /mixers                              {"id": "run-7", "name": "aioli", "domains": [...], "start", "options"}
    GET  /mixers/{id}/plan                    the next step's plan: mixture, evaluate?, report?, loss_weights
    POST /mixers/{id}/observe                 {"step": 12, "losses": {...}, "kind": "train" | "eval"} -> next plan
    GET  /mixers/{id}/state | PUT (restore) | DELETE
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from mixopt.core.errors import AlreadyExistsError, MixoptError, NotFoundError, UserError
from mixopt.core.runs_table import RunsTable
from mixopt.serve import wire
from mixopt.serve.bodies import (
    AskBody,
    CompletedBody,
    CreateStudyBody,
    EnqueueBody,
    TellBody,
    TrialIdBody,
    create_kwargs,
    frame_of,
    spec_of,
)
from mixopt.serve.guard import Guard
from mixopt.serve.hub import StudyHub
from mixopt.serve.mixers import MixerHub, add_routes
from mixopt.study import Storage, Study

log = logging.getLogger("mixopt.serve")

MAX_BODY_BYTES = 8 * 1024 * 1024  #: default request-size limit (413 above it)
MAX_ASK = 256  #: default limit on ``n`` per ask


def status_of(e: BaseException) -> int:
    """The HTTP status a mixopt exception is answered with."""
    if isinstance(e, NotFoundError):
        return 404
    if isinstance(e, AlreadyExistsError):
        return 409
    return 400 if isinstance(e, UserError) else 500


def _json(obj: Any, status: int = 200) -> Response:
    return Response(wire.dumps(obj), status, media_type="application/json")


def _error(status: int, e: BaseException, type_name: str | None = None) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return Response(wire.dumps({"error": str(e), "type": type_name or type(e).__name__}), status,
                    headers=headers, media_type="application/json")


def _trial_id(text: str) -> Any:
    """A trial id from a URL segment: JSON (``3``, ``"3"``, ``2.5``) or else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


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
    mixer_hub = MixerHub()
    bearer = HTTPBearer(auto_error=False, description="the server's --token / $MIXOPT_SERVE_TOKEN, when it has one")
    app = FastAPI(title="mixopt serve", version=_version(), dependencies=[Security(bearer)],
                  description="Ask/tell over HTTP for the studies of one MLflow store: the same Study code as "
                              "`mixopt.create_study`. Python: `mixopt.client.Client(url).create_study(...)`. "
                              "Errors: `{\"error\": \"<one line>\", \"type\": \"<mixopt exception class>\"}`.")
    app.state.hub = hub
    app.state.mixers = mixer_hub
    app.add_middleware(Guard, token=token, max_body=max_body)

    @app.exception_handler(MixoptError)
    async def _mixopt(request: Request, e: MixoptError) -> Response:
        status = status_of(e)
        if status >= 500:
            log.error("%s %s: %s: %s", request.method, request.url.path, type(e).__name__, e)
        return _error(status, e)

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
        name = hub.create(create_kwargs(body)).name
        with hub.study(name) as study:
            return _json(_info(study))

    def _info(study: Study) -> dict[str, Any]:
        costs, meta = study.rung_costs(), study.meta.to_dict()
        meta.setdefault("fidelities", meta["rungs"])  # the old names, for clients from before the rename
        return {"name": study.name, "meta": meta, "counts": study.counts(), "rung_costs": costs,
                "fidelity_costs": costs}

    # --- one study: the writes (each under the study's lock) ----------------------------------------------
    @app.post("/studies/{name:path}/ask", tags=["ask/tell"])
    def ask(name: str, body: AskBody) -> Response:
        """Hand out up to ``n`` trials (enqueued ones first, then the initial design, then the searcher)."""
        if isinstance(body.n, int) and not isinstance(body.n, bool) and body.n > max_ask:
            raise UserError(f"ask: n={body.n} is more than this server's limit of {max_ask} per request; "
                            "ask in smaller batches")
        spec = spec_of(body.spec, "spec")
        with hub.study(name, write=True) as study:
            return _json({"trials": [wire.trial_to_wire(t) for t in study.ask(body.n, spec)]})

    @app.post("/studies/{name:path}/tell", tags=["ask/tell"])
    def tell(name: str, body: TellBody) -> Response:
        """Report a trial's losses (``{domain: loss}``, a worker result, or a float objective) or an error."""
        with hub.study(name, write=True) as study:
            t = study.tell(body.trial_id, body.result, error=body.error)
            return _json({"trial": wire.trial_to_wire(t)})

    @app.post("/studies/{name:path}/enqueue", tags=["ask/tell"])
    def enqueue(name: str, body: EnqueueBody) -> Response:
        """Queue a mixture of your own; the next ask hands it out first."""
        spec = spec_of(body.spec, "spec")
        with hub.study(name, write=True) as study:
            return _json({"trial": wire.trial_to_wire(study.enqueue(body.mixture, spec, body.label))})

    @app.post("/studies/{name:path}/running", tags=["ask/tell"])
    def running(name: str, body: TrialIdBody) -> Response:
        """Mark a PENDING trial RUNNING."""
        with hub.study(name, write=True) as study:
            return _json({"trial": wire.trial_to_wire(study.mark_running(body.trial_id))})

    @app.post("/studies/{name:path}/completed", tags=["ask/tell"])
    def completed(name: str, body: CompletedBody) -> Response:
        """Warm start from a runs table (``w.<domain>`` columns, ``loss.<domain>`` or an objective column)."""
        df, source = frame_of(body)
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
            return _json({"trial": wire.trial_to_wire(study.trial(_trial_id(trial_id)))})

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

    add_routes(app, mixer_hub, _json)
    return app
