"""The same command on a Ray cluster: a real `ray start --head` and a real `mlflow server`, both on
127.0.0.1, and `ray job submit --working-dir . -- mixopt run study.yaml`."""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import free_port, study_yaml, wait_http

pytestmark = [pytest.mark.ray, pytest.mark.slow]
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


@pytest.fixture
def ray_head(env, ray_tmp):
    port, dash = free_port(), free_port()
    res = subprocess.run([str(BIN / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                          "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--num-cpus", "2",
                          "--temp-dir", ray_tmp], env=env, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    try:
        wait_http(f"http://127.0.0.1:{dash}/api/version", 120)
        yield f"http://127.0.0.1:{dash}"
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)


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
