"""Running the serve API: in the foreground (``mixopt serve``) or on a background thread.

Safe by default: it listens on 127.0.0.1; any other host needs a bearer token (``--token`` or
``$MIXOPT_SERVE_TOKEN``), and without one it refuses to start (:class:`UserError`).

Example:
    >>> with BackgroundServer("sqlite:///mlflow.db") as srv:            # doctest: +SKIP
    ...     study = mixopt.client.Client(srv.url).create_study("demo", domains=["a", "b"])
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from mixopt.core.errors import UserError
from mixopt.serve.app import MAX_ASK, MAX_BODY_BYTES, create_app
from mixopt.study import Storage


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_listen(host: str, port: int, token: str | None) -> None:
    """Refuse a non-loopback host without a token, and a port that is taken.

    Raises:
        UserError: what is wrong and what to do.
    """
    if token is not None and (not token.strip() or token != token.strip()):
        raise UserError("--token: the token is empty or has surrounding spaces")
    if not is_loopback(host) and not token:
        raise UserError(f"--host {host}: listening beyond this machine needs a bearer token; pass --token or set "
                        "MIXOPT_SERVE_TOKEN (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'), "
                        "or keep the default --host 127.0.0.1")
    if not 1 <= port <= 65535:
        raise UserError(f"--port: {port} is out of range; allowed: 1..65535")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a TIME_WAIT port is free
        try:
            s.bind((host.strip("[]"), port))
        except OSError as e:
            raise UserError(f"--host {host} --port {port}: cannot listen there ({e.strerror or e}); "
                            "choose another --port") from None


def _config(storage: Storage | str, host: str, port: int, token: str | None, max_body: int, max_ask: int,
            reload: bool, access_log: bool):
    import uvicorn

    app = create_app(storage, token, max_body=max_body, max_ask=max_ask, reload=reload)
    return uvicorn.Config(app, host=host, port=port, log_level="info" if access_log else "warning",
                          access_log=access_log, timeout_keep_alive=30, server_header=False)


def serve(storage: Storage | str, host: str = "127.0.0.1", port: int = 8765, token: str | None = None, *,
          max_body: int = MAX_BODY_BYTES, max_ask: int = MAX_ASK, reload: bool = False,
          access_log: bool = False, banner: Callable[[], None] | None = None) -> None:
    """Serve the studies in ``storage`` until interrupted (Ctrl-C / SIGTERM).

    The host, port and token are checked before the store is opened; ``banner`` is called once
    the store is open, just before listening.
    """
    import uvicorn

    check_listen(host, port, token)
    config = _config(storage, host, port, token, max_body, max_ask, reload, access_log)
    if banner is not None:
        banner()
    uvicorn.Server(config).run()


class BackgroundServer:
    """The serve API on a daemon thread of this process (tests, notebooks, benchmarks).

    Args:
        storage: an MLflow tracking URI or a :class:`~mixopt.study.Storage`.
        host, port: where to listen (port 0: a free one, see :attr:`url`).
        token: bearer token (needed for a non-loopback host).
        **kw: ``max_body``, ``max_ask``, ``reload``, ``access_log``.
    """

    def __init__(self, storage: Storage | str, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
                 **kw: Any) -> None:
        import uvicorn

        if port == 0:
            with socket.socket() as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
        check_listen(host, port, token)
        self.host, self.port = host, port
        cfg = {"max_body": MAX_BODY_BYTES, "max_ask": MAX_ASK, "reload": False, "access_log": False, **kw}
        self._server = uvicorn.Server(_config(storage, host, port, token, cfg["max_body"], cfg["max_ask"],
                                              cfg["reload"], cfg["access_log"]))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        self._thread = threading.Thread(target=self._server.run, name="mixopt-serve", daemon=True)
        self._thread.start()
        end = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise UserError(f"mixopt serve on {self.url} did not start (see the log above)")
            if time.monotonic() > end:
                raise TimeoutError(f"mixopt serve on {self.url} did not start within {timeout} s")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
