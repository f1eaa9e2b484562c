"""The same command on a Ray cluster: a real `ray start --head` and a real `mlflow server`, both on
127.0.0.1, and `ray job submit --working-dir . -- mixopt run study.yaml`. The test stops only the
head it started (never `ray stop`, which would stop a user's Ray too)."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import free_port, study_yaml, wait_http

BIN = Path(sys.executable).parent


@pytest.fixture
def ray_tmp():
    # Ray puts unix sockets under its temp dir: keep the path short (108-byte socket path limit)
    d = tempfile.mkdtemp(prefix="mxr", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def env(ray_tmp):
    e = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
             PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", RAY_TMPDIR=ray_tmp)
    e.pop("RAY_ADDRESS", None)
    return e


@pytest.fixture
def mlflow_server(tmp_path, env):
    port = free_port()
    db = tmp_path / "server.db"
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{db}", "--artifacts-destination", str(tmp_path / "artifacts")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", 120)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(30)


def _procs() -> dict[int, tuple[int, int]]:
    """{pid: (parent pid, session id)} of the live processes (Linux ``/proc``; zombies left out)."""
    procs = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                state, ppid, _pgrp, session = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[:4]
            except (OSError, ValueError):
                continue  # exited meanwhile
            if state != "Z":
                procs[int(entry)] = (int(ppid), int(session))
    return procs


def _session_tree(sid: int) -> set[int]:
    """Live processes of session ``sid`` and all their descendants."""
    procs = _procs()
    tree = {pid for pid, (_, session) in procs.items() if session == sid}
    while more := {pid for pid, (ppid, _) in procs.items() if ppid in tree} - tree:
        tree |= more
    return tree


def _stop_session(sid: int, grace_s: float = 30.0) -> None:
    """SIGTERM every process of session ``sid`` and its descendants (Ray's job drivers start sessions
    of their own), SIGKILL what is left after ``grace_s``. Nothing outside that tree is touched: not
    `ray stop`, which stops every Ray on the machine (a user's running study too)."""
    end, seen = time.monotonic() + grace_s, set()
    while True:
        seen |= _session_tree(sid)  # once seen, followed after its parent dies
        pids = seen & set(_procs())
        if not pids:
            return
        late = time.monotonic() > end
        if late and time.monotonic() > end + 30:
            raise AssertionError(f"processes of session {sid} survived SIGKILL: {sorted(pids)}")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL if late else signal.SIGTERM)
            except ProcessLookupError:
                pass
        time.sleep(0.5)


@pytest.fixture
def ray_head(env, ray_tmp, tmp_path):
    """A Ray head in a session of its own (``start_new_session``): stopping it stops that session's
    processes and their descendants, and leaves any other Ray on the machine alone. Its fixed-port
    services get free ports: on Ray's defaults (agent 52365, client 10001) a second Ray's job agent
    cannot start, and `ray job submit` finds "No available agent"."""
    port, dash, agent, client = free_port(), free_port(), free_port(), free_port()
    log = tmp_path / "ray_start.log"
    with log.open("w") as out:
        start = subprocess.Popen(
            [str(BIN / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
             "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--num-cpus", "2",
             "--dashboard-agent-listen-port", str(agent), "--ray-client-server-port", str(client),
             "--temp-dir", ray_tmp], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert start.wait(180) == 0, log.read_text()[-4000:]
        wait_http(f"http://127.0.0.1:{dash}/api/version", 120)
        yield f"http://127.0.0.1:{dash}"
    finally:
        if start.poll() is None:
            start.kill()
        _stop_session(start.pid)


def test_stopping_a_head_leaves_another_ray_alone(tmp_path):
    """What the ``ray_head`` fixture's teardown stops: its session and descendants, even those in
    sessions of their own; a process named like another Ray's raylet (which `ray stop --force`
    would kill by name) survives. Plain processes stand in for Ray: this takes a second."""
    raylet = tmp_path / "raylet"
    shutil.copy(shutil.which("sleep"), raylet)
    other = subprocess.Popen([str(raylet), "600"], start_new_session=True)  # another Ray's "raylet"
    head = subprocess.Popen(["sh", "-c", "sleep 600 & setsid sleep 600 & sleep 600"], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while len(_session_tree(head.pid)) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        started = _session_tree(head.pid)
        assert len(started) == 4  # sh, two sleeps in its session, one in a session of its own
        _stop_session(head.pid, grace_s=5)
        head.wait(10)
        assert not started & set(_procs()), "a process of the head survived"
        assert other.poll() is None, "another Ray's process was stopped"
    finally:
        for p in (head, other):
            if p.poll() is None:
                p.kill()
            p.wait(10)


@pytest.mark.ray
@pytest.mark.slow
def test_ray_job_submit_with_mlflow_server(tmp_path, tiny_domains, env, mlflow_server, ray_head):
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(tiny_domains, work / "domains")
    # relative paths: the job runs in Ray's copy of the working dir
    study_yaml(work / "study.yaml", Path("domains"), Path("cache"), None, Path("out"),
               executor={"kind": "ray", "workers": 2}, budget={"trials": 4})
    import yaml

    cfg = yaml.safe_load((work / "study.yaml").read_text())
    cfg.pop("tracking_uri")
    (work / "study.yaml").write_text(yaml.safe_dump(cfg))
    job_env = dict(env, MLFLOW_TRACKING_URI=mlflow_server)
    runtime_env = '{"env_vars": {"MLFLOW_TRACKING_URI": "%s", "RAY_AUTH_MODE": "disabled"}}' % mlflow_server
    for _ in range(12):  # a loaded host registers the head's job agent after the dashboard answers
        res = subprocess.run(
            [str(BIN / "ray"), "job", "submit", "--address", ray_head, "--working-dir", str(work),
             "--runtime-env-json", runtime_env, "--", "mixopt", "run", "study.yaml"],
            env=job_env, capture_output=True, text=True, timeout=600)
        if "No available agent to submit job" not in res.stderr:  # Ray: "please try again later"; nothing submitted
            break
        time.sleep(5)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "recommended" in res.stdout

    import mixopt

    study = mixopt.load_study("tiny", mlflow_server)
    df = study.to_dataframe()
    assert len(df) == 4 and (df["state"] == "COMPLETE").all()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("tiny")
    parent = client.search_runs([exp.experiment_id], "tags.`mixopt.role` = 'study'")[0]
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"recommendation.json", "recommendation.yaml", "runs.csv"} <= names
