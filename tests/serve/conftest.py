"""One served MLflow store (SQLite in a temporary folder) for the serve tests: creating the
database is the slow part, so the server and store live for the whole session."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from mixopt.client import Client
from mixopt.serve.server import BackgroundServer


@pytest.fixture(scope="session")
def store_uri(tmp_path_factory) -> str:
    return f"sqlite:///{Path(tmp_path_factory.mktemp('serve')) / 'mlflow.db'}"


@pytest.fixture(scope="session")
def server(store_uri) -> Iterator[BackgroundServer]:
    """``mixopt serve`` over the store, on 127.0.0.1 and a free port, in a background thread."""
    with BackgroundServer(store_uri, host="127.0.0.1", port=0) as srv:
        yield srv


@pytest.fixture
def client(server) -> Client:
    return Client(server.url, timeout=60)
