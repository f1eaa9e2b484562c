"""``mixopt dashboard`` (the live Dash app) and ``mixopt ui`` (the MLflow UI on a study).

Both read the store at ``--tracking-uri`` (default ``$MLFLOW_TRACKING_URI`` or
``sqlite:///mlflow.db``); user mistakes raise :class:`mixopt.core.errors.UserError` (one line, exit 2).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys

from mixopt.core.errors import UserError
from mixopt.run.config import load_config
from mixopt.study import MlflowStorage, default_tracking_uri
from mixopt.study.mlflow_storage import ML_VIEW


def _port(text: str) -> int:
    try:
        p = int(text)
    except ValueError:
        raise UserError(f"--port: {text!r} is not a number; allowed: 1..65535") from None
    if not 1 <= p <= 65535:
        raise UserError(f"--port: {p} is out of range; allowed: 1..65535")
    return p


def _check_free(host: str, port: int) -> None:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError as e:
            raise UserError(f"--host {host} --port {port}: cannot listen there ({e.strerror or e}); "
                            "choose another --port") from None


def _uri(args: argparse.Namespace) -> str:

    return args.tracking_uri or default_tracking_uri()


def add_dashboard_parser(subparsers) -> argparse.ArgumentParser:
    d = subparsers.add_parser("dashboard", help="live dashboard of the studies in an MLflow store (127.0.0.1)")
    d.add_argument("--tracking-uri", help="MLflow URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    d.add_argument("--host", default="127.0.0.1")
    d.add_argument("--port", default="8050", help="default 8050")
    d.add_argument("--refresh", type=float, default=5.0, help="seconds between reloads of a study page")
    d.add_argument("--mlflow-url", help="an MLflow UI to link runs to when the store is a file (e.g. from `mixopt ui`)")
    return d


def cmd_dashboard(args: argparse.Namespace) -> int:
    port = _port(str(args.port))
    if args.refresh <= 0:
        raise UserError(f"--refresh: {args.refresh} must be > 0 seconds")
    _check_free(args.host, port)
    from mixopt.dashboards.app import create_app

    uri = _uri(args)
    app = create_app(uri, refresh_s=args.refresh, mlflow_url=args.mlflow_url)  # fails here on a bad URI
    print(f"mixopt dashboard: http://{args.host}:{port}/  (studies in {uri}; Ctrl-C stops)", flush=True)
    app.run(host=args.host, port=port, debug=False)
    return 0


def add_ui_parser(subparsers) -> argparse.ArgumentParser:
    u = subparsers.add_parser("ui", help="the MLflow UI on the store, opened at a study's experiment")
    u.add_argument("config", nargs="?", help="study YAML (names the study and store)")
    u.add_argument("--study", help="study to open (default: the config's, else the list of experiments)")
    u.add_argument("--tracking-uri", help="MLflow URI (default: the config's, $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    u.add_argument("--host", default="127.0.0.1")
    u.add_argument("--port", default="5000", help="default 5000")
    return u


def _experiment_url(base: str, uri: str, study: str | None) -> str:
    """The study's runs table in MLflow's model-training view (tagging a study stored before
    mixopt tagged its experiments); without a study, the experiment list in that view."""
    if not study:
        return f"{base.rstrip('/')}/#/experiments?{ML_VIEW}"
    store = MlflowStorage(uri, create=False)
    if not store.tag_ui(study):
        names = store.study_names()
        raise UserError(f"no study {study!r} in {uri}" + (f"; studies there: {', '.join(names)}" if names else ""))
    return store.ui_url(study, base=base)


def cmd_ui(args: argparse.Namespace) -> int:
    """Serve ``mlflow ui`` on a file store (a tracking server already is one: print its URL)."""
    study, uri = args.study, args.tracking_uri
    if args.config:

        cfg = load_config(args.config, [])
        study, uri = study or cfg.study, uri or cfg.resolved_tracking_uri()
    uri = uri or _uri(args)
    if uri.startswith("http"):
        print(f"MLflow UI: {_experiment_url(uri, uri, study)}")
        return 0
    port = _port(str(args.port))
    _check_free(args.host, port)
    url = _experiment_url(f"http://{args.host}:{port}", uri, study)
    mlflow = shutil.which("mlflow", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if mlflow is None:
        raise UserError("mlflow is not on PATH; install mixopt's dependencies (pip install -e .)")
    print(f"MLflow UI: {url}  (Ctrl-C stops)", flush=True)
    try:
        return subprocess.call([mlflow, "ui", "--backend-store-uri", uri, "--host", args.host, "--port", str(port),
                                "--workers", "1"])
    except KeyboardInterrupt:
        return 0


def add_parsers(sub) -> dict:
    """Add ``dashboard`` and ``ui``; returns {command: handler(args, extra)}."""
    add_dashboard_parser(sub)
    add_ui_parser(sub)

    def dashboard(args: argparse.Namespace, extra: list[str]) -> int:
        _no_extra(extra)
        return cmd_dashboard(args)

    def ui(args: argparse.Namespace, extra: list[str]) -> int:
        _no_extra(extra)
        return cmd_ui(args)

    return {"dashboard": dashboard, "ui": ui}


def _no_extra(extra: list[str]) -> None:
    if extra:
        raise UserError(f"unrecognized arguments: {' '.join(extra)}")


def main(argv: list[str] | None = None) -> int:
    """``python -m mixopt.dashboards.cli dashboard|ui ...``: the same commands without the mixopt CLI."""
    p = argparse.ArgumentParser(prog="mixopt")
    sub = p.add_subparsers(dest="cmd", required=True)
    add_dashboard_parser(sub)
    add_ui_parser(sub)
    args = p.parse_args(argv)
    try:
        return cmd_dashboard(args) if args.cmd == "dashboard" else cmd_ui(args)
    except UserError as e:
        print(f"mixopt: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
