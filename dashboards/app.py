"""The live dashboard (Dash): studies read from the MLflow store through the mixopt API.

Pages: ``/`` the study list; ``/study/<name>`` a study's plots, recommended mixture and trials,
reloaded every ``refresh_s`` seconds while it runs; ``/study/<name>/trial/<id>`` one trial.

Example:
    >>> app = create_app("http://127.0.0.1:5000")  # doctest: +SKIP
    >>> app.run(host="127.0.0.1", port=8050)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any
from urllib.parse import quote, unquote

from dash import Dash, Input, Output, State, dcc, html, no_update

from mixopt.analysis.card import card_of_study
from mixopt.dashboards import data as D
from mixopt.dashboards.plots import study_figures
from mixopt.study import MlflowStorage, load_study

# one graph slot per figure of mixopt.dashboards.plots.study_figures, in its order
GRAPHS = ("mixture", "objective", "weights", "surrogate", "losses", "scaling", "routing", "merged", "online")
_CSS = {"font-family": "system-ui, sans-serif", "max-width": "1200px", "margin": "0 auto", "padding": "12px"}
_TABLE = {"border-collapse": "collapse", "margin": "8px 0"}
_CELL = {"border": "1px solid #ddd", "padding": "3px 10px", "text-align": "right"}
_HIDDEN, _SHOWN = {"display": "none"}, {"display": "block"}


def _fmt(x: Any, nd: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def _table(header: list[str], rows: list[list[Any]], id: str | None = None) -> html.Table:
    head = html.Tr([html.Th(h, style=_CELL) for h in header])
    body = [html.Tr([html.Td(c, style=_CELL) for c in r]) for r in rows]
    return html.Table([html.Thead(head), html.Tbody(body)], style=_TABLE, **({"id": id} if id else {}))


def study_href(name: str) -> str:
    return f"/study/{quote(name, safe='')}"


class StudyCache:
    """Loads studies through ``mixopt.load_study`` and keeps the computed view of each one until
    its trials change (a fingerprint of ids, states and values), so an idle study costs one read."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.storage = MlflowStorage(uri, create=False)
        self._lock = threading.Lock()
        self._views: dict[str, tuple[tuple, dict[str, Any]]] = {}

    def names(self) -> list[str]:
        return self.storage.study_names()

    def load(self, name: str):
        return load_study(name, self.storage)  # one store (one client) for every page

    def view(self, name: str) -> tuple[dict[str, Any], str]:
        """(everything the study page shows, a fingerprint of the trials it was computed from)."""
        study = self.load(name)
        key = repr(tuple((t.trial_id, t.state.value, t.value) for t in study.trials))
        with self._lock:
            old = self._views.get(name)
        if old is not None and old[0] == key:
            return old[1], key
        v = D.study_view(study)
        rec = D.recommendation_or_none(study, v.notes)
        cv = D.study_surrogate_cv(study, v)
        figs = study_figures(study, v, cv, D.loss_comparison(v), D.mixture_comparison(v, rec), D.routing(v))
        card = card_of_study(study, rec) if rec is not None else None  # the big run's lr, batch, epochs, MoE EL
        out = {"study": study, "view": v, "rec": rec, "figures": figs, "best": study.best(), "card": card}
        with self._lock:
            self._views[name] = (key, out)
        return out, key

    def mlflow_link(self, name: str, run_id: str | None, ui_url: str | None) -> str | None:
        """URL of a run in an MLflow UI: the tracking server itself, or ``ui_url`` for a file store."""
        base = self.uri if self.uri.startswith("http") else ui_url
        if not base or not run_id:
            return None
        return self.storage.ui_url(name, run_id, base)


# --- pages ------------------------------------------------------------------------------
def list_page() -> html.Div:
    return html.Div([html.H1("mixopt studies"), html.Div(id="study-list", children="loading…"),
                     dcc.Interval(id="list-tick", interval=5000, n_intervals=0)])


def study_page(name: str, refresh_ms: int) -> html.Div:
    boxes = [html.Div(dcc.Graph(id=f"g-{g}", config={"displaylogo": False}), id=f"box-{g}", style=_HIDDEN)
             for g in GRAPHS]
    return html.Div([
        dcc.Link("← all studies", href="/"), html.H1(f"Study {name}", id="study-title"),
        dcc.Store(id="study-name", data=name), dcc.Store(id="study-rendered", data=None),
        html.P(id="study-summary", children="loading…"),
        html.H2("Recommended mixture"), html.Div(id="rec-table"),
        html.Div(boxes[:1]), html.H2("Trials"), *boxes[1:], html.Ul(id="study-notes", style={"color": "#666"}),
        html.Div(id="trials-table"), dcc.Interval(id="study-tick", interval=refresh_ms, n_intervals=0)])


def not_found(what: str, names: list[str]) -> html.Div:
    return html.Div([html.H1("Not found"), html.P(what, id="not-found"),
                     html.P("Studies in this store:" if names else "This store holds no study yet."),
                     html.Ul([html.Li(dcc.Link(n, href=study_href(n))) for n in names]),
                     dcc.Link("← all studies", href="/")])


def trial_page(cache: StudyCache, name: str, tid: int, ui_url: str | None) -> html.Div:
    study = cache.load(name)
    t = study.trial(tid)
    domains = list(study.space.domains)
    loss_domains = sorted(t.losses, key=lambda d: (d not in domains, d))
    link = cache.mlflow_link(name, t.run_id, ui_url)
    return html.Div([
        dcc.Link(f"← study {name}", href=study_href(name)), html.H1(f"Study {name} · trial {tid}"),
        html.P([html.B("state: "), html.Span(t.state.value, id="trial-state"),
                f" · phase {t.phase or '–'} · searcher {t.searcher or '–'}"
                + (f" · label {t.label}" if t.label else "")
                + (f" · objective {_fmt(t.value)}" if t.value is not None else "")]),
        html.Pre(t.error, id="trial-error", style={"color": "#b00", "white-space": "pre-wrap"}) if t.error else None,
        html.H2("Mixture"), _table(["domain", "weight"], [[d, _fmt(float(t.mixture.get(d, 0.0)))] for d in domains]),
        html.H2("Validation loss per domain"),
        _table(["domain", "loss"], [[d, _fmt(float(t.losses[d]))] for d in loss_domains]) if loss_domains
        else html.P("no losses reported"),
        html.H2("Metrics"), _table(["metric", "value"], [[k, f"{float(v):,.6g}"] for k, v in sorted(t.metrics.items())]),
        html.H2("MLflow"),
        html.P([f"run id {t.run_id or '–'} · tracking {cache.uri}",
                *([" · ", html.A("open the run in MLflow", href=link, target="_blank")] if link else [])]),
    ])


# --- study page contents ----------------------------------------------------------------
def _summary(s: dict[str, Any]) -> str:
    v, best = s["view"], s["best"]
    c = v.counts
    running = c.get("RUNNING", 0) + c.get("PENDING", 0)
    return (f"{len(v.trial_ids)} trials: {c.get('COMPLETE', 0)} complete, {c.get('FAILED', 0)} failed, "
            f"{running} running/pending"
            + (f" · best objective {best.value:.4f} (trial {best.trial_id})" if best else "")
            + f" · searcher {v.searcher} · objective: {v.objective} (lower is better)")


def _rec_table(s: dict[str, Any]):
    rec, v = s["rec"], s["view"]
    if rec is None:
        return html.P("No recommendation yet: no trial has completed.", id="rec-none")
    names, M = D.mixture_comparison(v, rec)
    rows = [[d] + [_fmt(float(M[r, j])) for r in range(len(names))] for j, d in enumerate(v.domains)]
    rows.append(["objective", _fmt(rec.predicted) + (" (predicted)" if rec.predicted is not None else ""), "–", "–"]
                + ([_fmt(float(s["best"].value))] if len(names) > 3 else []))
    card = s.get("card")
    if card is None:
        return _table(["domain", *names], rows, id="rec-mixture")
    return html.Div([_table(["domain", *names], rows, id="rec-mixture"),
                     html.Pre("\n".join(line for line in card.lines if line.strip()), id="rec-card",
                              style={"white-space": "pre-wrap", "background": "#f6f6f6", "padding": "8px"})])


def _trials_table(name: str, s: dict[str, Any]):
    v = s["view"]
    order = D.order_by_objective(v)
    rows = [[dcc.Link(f"trial {int(v.trial_ids[i])}", href=f"{study_href(name)}/trial/{int(v.trial_ids[i])}"),
             v.state[i], v.phase[i], v.label[i], _fmt(float(v.value[i]))]
            + [_fmt(float(w), 3) for w in v.W[i]] + [v.errors[i][:80]] for i in order]
    return _table(["trial", "state", "phase", "label", "objective", *[f"w.{d}" for d in v.domains], "error"], rows,
                  id="trials")


def create_app(uri: str, refresh_s: float = 5.0, mlflow_url: str | None = None) -> Dash:
    """A Dash app over the studies of the MLflow store at ``uri`` (a server URL or sqlite:///)."""
    cache = StudyCache(uri)
    app = Dash(__name__, title="mixopt", suppress_callback_exceptions=True, update_title=None)
    app.layout = html.Div([dcc.Location(id="url"), html.Div(id="page")], style=_CSS)
    refresh_ms = max(500, int(refresh_s * 1000))

    @app.callback(Output("page", "children"), Input("url", "pathname"))
    def route(path: str | None):
        parts = [unquote(p) for p in (path or "/").strip("/").split("/") if p]
        if not parts:
            return list_page()
        if parts[0] != "study" or len(parts) not in (2, 4) or (len(parts) == 4 and parts[2] != "trial"):
            return not_found(f"No page at {path!r}.", cache.names())
        names = cache.names()
        if parts[1] not in names:
            return not_found(f"No study named {parts[1]!r} in {uri}.", names)
        if len(parts) == 2:
            return study_page(parts[1], refresh_ms)
        n = len(cache.load(parts[1]).trials)
        if not parts[3].isdigit() or int(parts[3]) >= n:
            return not_found(f"Study {parts[1]!r} has no trial {parts[3]!r} (trials 0..{n - 1}).", names)
        return trial_page(cache, parts[1], int(parts[3]), mlflow_url)

    @app.callback(Output("study-list", "children"), Input("list-tick", "n_intervals"))
    def study_list(_n):
        rows = []
        for n in cache.names():
            try:
                s = cache.load(n)
            except Exception as e:  # one broken study does not hide the others
                rows.append([n, "–", "–", "–", f"unreadable: {e}"])
                continue
            c, best = s.counts(), s.best()
            rows.append([dcc.Link(n, href=study_href(n)), len(s.trials), c["COMPLETE"], c["FAILED"],
                         c["RUNNING"] + c["PENDING"], _fmt(best.value if best else None), s.searcher_name])
        if not rows:
            return html.P(f"No study in {uri} yet: run one with `mixopt run study.yaml`.")
        return _table(["study", "trials", "complete", "failed", "running", "best objective", "searcher"], rows,
                      id="studies")

    outputs = [Output("study-summary", "children"), Output("rec-table", "children"), Output("trials-table", "children"),
               Output("study-notes", "children")]
    for g in GRAPHS:
        outputs += [Output(f"g-{g}", "figure"), Output(f"box-{g}", "style")]

    outputs.append(Output("study-rendered", "data"))

    @app.callback(outputs, Input("study-tick", "n_intervals"), State("study-name", "data"),
                  State("study-rendered", "data"))
    def study_contents(_n, name, rendered):
        # ``rendered`` is what this browser last received: a response the browser dropped (a slow
        # store answering after the next tick) is sent again, not assumed drawn
        try:
            s, key = cache.view(name)
        except Exception as e:
            return [f"cannot read study {name!r}: {e}"] + [no_update] * (len(outputs) - 1)
        if key == rendered:
            return [_summary(s)] + [no_update] * (len(outputs) - 1)
        out: list[Any] = [_summary(s), _rec_table(s), _trials_table(name, s), [html.Li(x) for x in s["view"].notes]]
        for _g, fig in zip(GRAPHS, s["figures"], strict=True):  # one slot per figure of study_figures
            out += [fig if fig is not None else {}, _SHOWN if fig is not None else _HIDDEN]
        return out + [key]

    app.server.config["started"] = time.time()
    return app
