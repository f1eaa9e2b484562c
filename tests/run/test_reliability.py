"""Reliability suite: each case a real process. Many writers on one study (SQLite and an MLflow
server), Ctrl-C during a run, an unreachable tracking server, and user mistakes that must exit 2
with one line naming what and where, having written nothing."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mixopt
from mixopt.core.errors import ConfigError, UserError
from tests.conftest import study_yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _env(**extra) -> dict:
    return {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1", **extra}


def _mixopt(args, cwd, timeout=300, **env):
    return subprocess.run([str(BIN / "mixopt"), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=_env(**env))


def _one_line_exit2(res) -> str:
    err = res.stderr.strip()
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert len(err.splitlines()) == 1 and err.startswith("mixopt: error: ") and "Traceback" not in err, err
    return err


def _study(tmp_path, domains, **extra) -> Path:
    """The tiny study of tests/conftest.py with a random searcher, 4 trials, a SQLite store in tmp_path."""
    extra = {"search": {"searcher": "random", "n_init": 0, "options": {}}, "budget": {"trials": 4}, **extra}
    return study_yaml(tmp_path / "study.yaml", domains, tmp_path / "cache", f"sqlite:///{tmp_path / 'mlflow.db'}",
                      tmp_path / "out", **extra)


# --- many writers ------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("store,procs,rounds", [("sqlite", 16, 3), ("server", 4, 3)])
def test_many_processes_ask_tell_one_study(store, procs, rounds):
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_concurrency.py"), "--stores", store,
                          "--procs", str(procs), "--rounds", str(rounds), "--json"], capture_output=True, text=True,
                         timeout=1200, env=_env())
    [row] = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert row["lost"] == 0 and row["duplicate_ids"] == 0 and row["ids_dense"], row
    assert row["complete_in_store"] == procs * rounds and not row["errors"], row
    assert res.returncode == 0


def test_threads_share_a_study_without_losing_tells(tmp_path):
    """The same guarantee inside one process: threads on one SQLite study."""
    import threading

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    mixopt.create_study("thr", domains=["a", "b", "c"], searcher="random", storage=uri)

    def work():
        s = mixopt.load_study("thr", uri)
        for _ in range(3):
            [t] = s.ask()
            s.tell(t.trial_id, {d: 1.0 + w for d, w in t.mixture.items()})

    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    trials = mixopt.load_study("thr", uri).trials
    assert [t.trial_id for t in trials] == list(range(12))
    assert all(t.state.value == "COMPLETE" for t in trials)


# --- interruption ------------------------------------------------------------------------------

@pytest.mark.slow
def test_ctrl_c_writes_outputs_and_resume_continues(tmp_path, tiny_domains):
    cfg = _study(tmp_path, tiny_domains, budget={"trials": 40})
    proc = subprocess.Popen([str(BIN / "mixopt"), "run", str(cfg)], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())
    seen = []
    for line in proc.stderr:  # wait for the first finished trial
        seen.append(line)
        if "] trial" in line:
            break
    proc.send_signal(signal.SIGINT)  # how fast: bench/bench_concurrency.py --stores ctrl-c
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, "".join(seen) + err
    assert "Ctrl-C" in err and "--resume" in err
    rec = tmp_path / "out" / "tiny" / "recommendation.json"
    assert rec.is_file() and (tmp_path / "out" / "tiny" / "runs.csv").is_file()
    study = mixopt.load_study("tiny", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert study.storage.study_status("tiny") == "KILLED"
    done = study.counts()["COMPLETE"]
    assert 1 <= done < 40
    res = _mixopt(["run", str(cfg), "--resume", "--trials", str(done + 2)], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert mixopt.load_study("tiny", f"sqlite:///{tmp_path / 'mlflow.db'}").counts()["COMPLETE"] >= done + 2


def _descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, start time) of every process below ``pid`` (Linux /proc)."""
    kids: dict[int, list[int]] = {}
    starts: dict[int, str] = {}
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            rest = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(int(rest[1]), []).append(int(d))
        starts[int(d)] = rest[19]
    out, todo = [], [pid]
    while todo:
        for c in kids.get(todo.pop(), ()):
            out.append((c, starts[c]))
            todo.append(c)
    return out


def _alive(procs: list[tuple[int, str]]) -> list[str]:
    names = []
    for pid, start in procs:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        rest = stat.rsplit(")", 1)[1].split()
        if rest[19] == start and rest[0] != "Z":
            names.append(stat.split("(", 1)[1].rsplit(")", 1)[0])
    return names


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_local_ray_goes_with_a_killed_driver(tmp_path):
    """kill -9 of a driver that started local Ray: no Ray process outlives it by more than a few seconds
    (Ray's agents alone wait 60 s on the dead GCS; the reaper in mixopt.run.executors ends them)."""
    code = ("import time\nfrom mixopt.run.config import ExecutorConfig\nfrom mixopt.run.executors import RayExecutor\n"
            "ex = RayExecutor(ExecutorConfig(kind='ray', workers=1))\n"
            "ex.submit(0, __import__('mixopt.core.worker', fromlist=['x']).TrialRequest(0, {'a': 1.0}, {}, ''))\n"
            "ex.wait(60)\nprint('ready', flush=True)\ntime.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env())
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()[-2000:]
        time.sleep(2)  # the reaper has seen the whole tree
        procs = _descendants(proc.pid)
        assert any(n in {"raylet", "gcs_server"} for n in _alive(procs)), _alive(procs)
        proc.kill()
        proc.wait()
        deadline = time.time() + 15
        while _alive(procs) and time.time() < deadline:
            time.sleep(0.5)
        assert not _alive(procs), f"outlived the driver by 15 s: {_alive(procs)}"
    finally:
        proc.kill()


# --- user mistakes: exit 2, one line, nothing written ------------------------------------------

def test_unreachable_tracking_server_fails_fast(tmp_path):
    t0 = time.time()
    res = _mixopt(["recommend", "--study", "quickstart", "--tracking-uri", "http://127.0.0.1:9"], tmp_path, timeout=60)
    err = _one_line_exit2(res)
    assert time.time() - t0 < 10 and "no server answers" in err


def test_bad_sweep_mixture_is_refused_before_anything_is_written(tmp_path, tiny_domains):
    cfg = _study(tmp_path, tiny_domains, sweep={"custom": [{"code": 2.0, "legal": -1.0}]})
    err = _one_line_exit2(_mixopt(["run", str(cfg)], tmp_path))
    assert "study.yaml" in err and "sweep.custom[0]" in err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "cache").exists()


def test_config_errors_name_the_file_and_overrides_name_themselves(tmp_path, tiny_domains):
    cfg = _study(tmp_path, tiny_domains, objective={"domain": "nope"})
    err = _one_line_exit2(_mixopt(["run", str(cfg)], tmp_path))
    assert err.startswith(f"mixopt: error: {cfg}") and "nope" in err
    cfg = _study(tmp_path, tiny_domains)
    err = _one_line_exit2(_mixopt(["run", str(cfg), "--budget.trials=abc"], tmp_path))
    assert "override --budget.trials=abc" in err and "study.yaml" not in err
    err = _one_line_exit2(_mixopt(["run", str(cfg), "--proxy.lr=.nan"], tmp_path))
    assert "finite" in err and "wrong type" not in err
    assert not (tmp_path / "mlflow.db").exists()


def test_run_takes_tracking_uri_like_every_other_command(tmp_path, tiny_domains):
    cfg = _study(tmp_path, tiny_domains)
    res = _mixopt(["run", str(cfg), "--dry-run", "--tracking-uri", f"sqlite:///{tmp_path / 'other.db'}"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert "other.db" in res.stdout


def test_runs_table_mistakes(tmp_path):
    rng = np.random.default_rng(0)
    W = rng.dirichlet(np.ones(3), 20)
    good = tmp_path / "good.csv"
    pd.DataFrame({"w.a": W[:, 0], "w.b": W[:, 1], "w.c": W[:, 2], "loss.a": W[:, 0]}).to_csv(good, index=False)
    dup = tmp_path / "dup.csv"
    dup.write_text("w.a,w.a,w.b,loss.a\n" + "\n".join("0.3,0.3,0.4,1.0" for _ in range(20)) + "\n")
    err = _one_line_exit2(_mixopt(["predict", "--train", str(dup), "--test", str(good), "--objective", "loss.a"],
                                  tmp_path))
    assert "'w.a'" in err and "more than once" in err and "sum" not in err
    nan = tmp_path / "nan.csv"
    nan.write_text("w.a,w.b,loss.a\nnan,1.0,2.0\n0.5,0.5,2.0\n0.2,0.8,2.0\n")
    err = _one_line_exit2(_mixopt(["predict", "--train", str(nan), "--test", str(good), "--objective", "loss.a"],
                                  tmp_path))
    assert "weight nan" in err and "np.float64" not in err


def test_data_prepare_refuses_a_domain_name_run_would_refuse(tmp_path, tiny_domains):
    (tiny_domains / "code").rename(tiny_domains / "my dom")
    err = _one_line_exit2(_mixopt(["data", "prepare", "--recipe", str(tiny_domains), "--tokenizer", "bytes",
                                   "--cache-dir", str(tmp_path / "cache")], tmp_path))
    assert "'my dom'" in err
    assert not (tmp_path / "cache").exists()


def test_corrupt_shard_of_the_same_size_is_caught_when_a_study_opens_the_corpus(tmp_path, tiny_domains):
    cfg = _study(tmp_path, tiny_domains)
    res = _mixopt(["data", "prepare", str(cfg)], tmp_path)
    assert res.returncode == 0, res.stderr
    [shard] = list((tmp_path / "cache").rglob("legal/train.bin"))
    data = bytearray(shard.read_bytes())
    data[:64] = bytes(64)  # same size, other bytes
    shard.write_bytes(bytes(data))
    res = _mixopt(["run", str(cfg)], tmp_path)  # progress lines first ("legal: up to date"), then the error
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    err = res.stderr.strip().splitlines()[-1]
    assert err.startswith("mixopt: error: ") and "sha256" in err and "legal" in err


# --- the Python API follows the CLI's rules ----------------------------------------------------

def test_python_api_rules():
    with pytest.raises(ConfigError, match="slashes"):
        mixopt.create_study("x/y", domains=["a", "b"])
    with pytest.raises(ConfigError, match="n_init"):
        mixopt.create_study("s", domains=["a", "b"], n_init=-1)
    with pytest.raises(ConfigError, match="'a b'"):
        mixopt.create_study("s", domains=["a b", "c"])
    s = mixopt.create_study("s", domains=["a", "b", "c"], searcher="random")
    [t] = s.ask()
    with pytest.raises(UserError, match=r"lack the objective's domain\(s\) \['c'\]"):
        s.tell(t.trial_id, {"a": 1.0, "b": 1.0})
    with pytest.raises(UserError, match="unknown domain"):
        s.tell(t.trial_id, {"a": 1.0, "b": 1.0, "c": 1.0, "zzz": 2.0})
    assert s.trial(t.trial_id).state.value == "PENDING"  # nothing written
    assert s.tell(t.trial_id, {"a": 1.0, "b": 1.0, "c": 1.0}).state.value == "COMPLETE"


def test_predict_json_with_a_constant_objective_is_valid_json(tmp_path):
    rng = np.random.default_rng(0)
    W = rng.dirichlet(np.ones(3), 20)
    table = pd.DataFrame({"w.a": W[:, 0], "w.b": W[:, 1], "w.c": W[:, 2], "loss.a": 2.0})
    table.to_csv(tmp_path / "const.csv", index=False)
    res = _mixopt(["predict", "--train", str(tmp_path / "const.csv"), "--test", str(tmp_path / "const.csv"),
                   "--objective", "loss.a", "--surrogate", "linear", "--json"], tmp_path)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    out = json.loads(res.stdout)  # strict JSON: no NaN
    assert out["spearman"] is None and "constant" in out["note"]

