"""``mixopt serve``: ask/tell over HTTP for the studies of one MLflow store.

User mistakes (a non-loopback host without a token, a taken port, a store that cannot be
opened) raise :class:`~mixopt.core.errors.UserError` (one line, exit 2).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from mixopt.core.errors import UserError
from mixopt.serve.app import MAX_ASK, MAX_BODY_BYTES
from mixopt.serve.wire import TOKEN_ENV


def add_parsers(sub) -> dict[str, Callable[[argparse.Namespace, list[str]], int]]:
    """Add ``serve``; returns {command: handler(args, extra)}."""
    s = sub.add_parser("serve", help="ask/tell over HTTP (JSON API, docs at /docs) for trainers anywhere",
                       description="Serve the studies of an MLflow store over HTTP: create/open a study, ask, tell, "
                                   "enqueue, add_completed, best, recommend, runs table. Python clients: "
                                   "mixopt.client.Client(url).create_study(...).")
    s.add_argument("--tracking-uri", help="MLflow URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    s.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1; any other host needs a token")
    s.add_argument("--port", default="8765", help="default 8765")
    s.add_argument("--token", help=f"bearer token every request must send (default: ${TOKEN_ENV}); prefer the "
                                   "environment variable, a command line is visible to other users")
    s.add_argument("--max-body-mb", type=float, default=MAX_BODY_BYTES / 2**20,
                   help="request-size limit in MiB (default 8; larger requests get 413)")
    s.add_argument("--max-ask", type=int, default=MAX_ASK, help="largest n per ask (default 256)")
    s.add_argument("--reload", action="store_true",
                   help="re-read a study from the store before every write (other processes write it too; slower)")
    s.add_argument("--access-log", action="store_true", help="log every request")
    return {"serve": cmd_serve}


def cmd_serve(args: argparse.Namespace, extra: list[str]) -> int:
    from mixopt.serve.server import serve
    from mixopt.study import default_tracking_uri

    if extra:
        raise UserError(f"serve: unrecognized arguments: {' '.join(extra)}")
    try:
        port = int(args.port)
    except ValueError:
        raise UserError(f"--port: {args.port!r} is not a number; allowed: 1..65535") from None
    if args.max_body_mb <= 0 or args.max_ask < 1:
        raise UserError("--max-body-mb and --max-ask must be positive")
    token = args.token if args.token is not None else (os.environ.get(TOKEN_ENV) or None)
    uri = args.tracking_uri or default_tracking_uri()
    host = f"[{args.host}]" if ":" in args.host else args.host
    banner = (f"mixopt serve: http://{host}:{port} (docs: /docs) over {uri}"
              f"{'; bearer token required' if token else ''}. Ctrl-C stops.")
    serve(uri, args.host, port, token, max_body=int(args.max_body_mb * 2**20), max_ask=args.max_ask,
          reload=args.reload, access_log=args.access_log, banner=lambda: print(banner, file=sys.stderr, flush=True))
    return 0
