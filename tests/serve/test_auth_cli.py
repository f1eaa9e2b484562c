"""``mixopt serve`` from the command line: the bearer token (401 without it, accepted with it),
refusing a non-loopback host without a token, and the client's errors when nothing answers."""

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from mixopt.client import Client
from mixopt.core.errors import UserError
from mixopt.serve.server import is_loopback
from tests.conftest import free_port, wait_http

TOKEN = "test-token-0123456789abcdef"


def status_of(url: str, headers: dict | None = None) -> int:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.fixture(scope="module")
def token_server(store_uri, server):  # `server` first: it creates the store
    port = free_port()
    env = {**os.environ, "MIXOPT_SERVE_TOKEN": TOKEN}
    proc = subprocess.Popen([sys.executable, "-m", "mixopt.cli", "serve", "--tracking-uri", store_uri,
                             "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/openapi.json", 60, proc)  # the docs are readable without the token
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_token_required(token_server, monkeypatch):
    assert status_of(f"{token_server}/studies") == 401
    assert status_of(f"{token_server}/studies", {"Authorization": "Bearer wrong"}) == 401
    assert status_of(f"{token_server}/studies", {"Authorization": TOKEN}) == 401
    assert status_of(f"{token_server}/studies", {"Authorization": f"Bearer {TOKEN}"}) == 200
    assert status_of(f"{token_server}/docs") == 200

    monkeypatch.delenv("MIXOPT_SERVE_TOKEN", raising=False)
    with pytest.raises(UserError, match="missing or wrong bearer token"):
        Client(token_server).study_names()
    study = Client(token_server, token=TOKEN).create_study("auth", domains=["a", "b"], seed=1)
    [t] = study.ask()
    assert study.tell(t.trial_id, {"a": 1.0, "b": 2.0}).value == pytest.approx(1.5)
    monkeypatch.setenv("MIXOPT_SERVE_TOKEN", TOKEN)  # the client reads the same variable
    assert Client(token_server).load_study("auth").best().trial_id == t.trial_id


def test_refuses_public_host_without_token(store_uri, monkeypatch, capsys):
    from mixopt.cli import main

    monkeypatch.delenv("MIXOPT_SERVE_TOKEN", raising=False)
    port = str(free_port())
    assert main(["serve", "--host", "0.0.0.0", "--port", port, "--tracking-uri", store_uri]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mixopt: error: --host 0.0.0.0: listening beyond this machine needs a bearer token")
    assert len(err.splitlines()) == 1
    assert main(["serve", "--port", "99999", "--tracking-uri", store_uri]) == 2
    assert main(["serve", "--port", port, "--tracking-uri", store_uri, "--bogus"]) == 2
    assert [is_loopback(h) for h in ("127.0.0.1", "127.3.2.1", "::1", "localhost", "0.0.0.0", "10.0.0.1", "::")] == \
        [True, True, True, True, False, False, False]


def test_client_errors_without_server():
    url = f"http://127.0.0.1:{free_port()}"
    t0 = time.time()
    with pytest.raises(UserError, match="cannot reach the mixopt server"):
        Client(url, timeout=5).load_study("x")
    assert time.time() - t0 < 5
    with pytest.raises(UserError, match="must look like"):
        Client("127.0.0.1:8765")


def test_client_imports_no_server_stack():
    code = ("import sys, mixopt.client; bad = [m for m in ('mlflow', 'fastapi', 'uvicorn', 'starlette') "
            "if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
