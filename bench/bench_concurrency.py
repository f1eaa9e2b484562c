"""Many writers on one study: P processes x R ask/tell rounds, on SQLite and on an MLflow server.

Each process opens the study with ``mixopt.load_study`` and does R rounds of ``ask(1)`` + ``tell``.
Afterwards the study is read back: every tell must be there (0 lost) and the trial ids must be
0..P*R-1 with no repeats (0 duplicates). Prints throughput (tells/s over the wall time).

    python bench/bench_concurrency.py                      # 16 x 20 on SQLite and on a server
    python bench/bench_concurrency.py --stores sqlite --procs 8 --rounds 5 --json
    python bench/bench_concurrency.py --stores ctrl-c      # Ctrl-C during the quickstart (Ray) to outputs

The server is an ``mlflow server`` started here on 127.0.0.1 (a free port) and stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

DOMAINS = ["a", "b", "c", "d"]


def _losses(m) -> dict[str, float]:
    return {d: 2.0 + (m[d] - 0.25) ** 2 + 0.1 * i for i, d in enumerate(DOMAINS)}


def _worker(uri: str, study: str, rounds: int, out: mp.Queue) -> None:
    import mixopt

    told, errors = [], []
    try:
        s = mixopt.load_study(study, uri)
        for _ in range(rounds):
            [t] = s.ask(1)
            s.tell(t.trial_id, _losses(t.mixture))
            told.append(t.trial_id)
    except Exception as e:  # reported, counted as lost tells
        errors.append(f"{type(e).__name__}: {e}")
    out.put((told, errors))


def run_case(uri: str, procs: int, rounds: int, name: str) -> dict:
    import mixopt

    mixopt.create_study(name, domains=DOMAINS, searcher="random", storage=uri)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    ps = [ctx.Process(target=_worker, args=(uri, name, rounds, q)) for _ in range(procs)]
    t0 = time.perf_counter()
    for p in ps:
        p.start()
    results = [q.get(timeout=1800) for _ in ps]
    for p in ps:
        p.join(timeout=60)
    wall = time.perf_counter() - t0
    told = [i for r, _ in results for i in r]
    errors = [e for _, es in results for e in es]
    trials = mixopt.load_study(name, uri).trials
    ids = [t.trial_id for t in trials]
    complete = sum(1 for t in trials if t.state.value == "COMPLETE")
    return {"store": uri.split(":")[0], "procs": procs, "rounds": rounds, "expected": procs * rounds,
            "told": len(told), "complete_in_store": complete, "trials_in_store": len(trials),
            "lost": procs * rounds - complete, "duplicate_ids": len(ids) - len(set(ids)) + (len(told) - len(set(told))),
            "ids_dense": ids == list(range(len(ids))), "errors": errors[:3], "wall_s": round(wall, 2),
            "tells_per_s": round(len(told) / wall, 2)}


def ctrl_c_case(folder: Path) -> dict:
    """``mixopt run examples/quickstart.yaml`` on local Ray; SIGINT once the first trial finished;
    seconds from the signal to the process exit with its outputs written."""
    import signal

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"), "PYTHONUNBUFFERED": "1"}
    cmd = [str(Path(sys.executable).parent / "mixopt"), "run", str(root / "examples" / "quickstart.yaml"),
           "--study=ctrl-c", f"--tracking_uri=sqlite:///{folder / 'ctrl.db'}", f"--output_dir={folder / 'out'}"]
    proc = subprocess.Popen(cmd, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stderr:
        if "] trial" in line:
            break
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    proc.stderr.read()
    proc.wait(timeout=600)
    took = time.perf_counter() - t0
    out = folder / "out" / "ctrl-c"
    return {"store": "ctrl-c", "exit_code": proc.returncode, "seconds_to_exit": round(took, 2),
            "outputs_written": (out / "recommendation.json").is_file() and (out / "runs.csv").is_file()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mlflow_server(folder: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    db = folder / "server.db"
    mlflow = Path(sys.executable).parent / "mlflow"
    proc = subprocess.Popen([str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{db}", "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/health", timeout=2).close()
            return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("mlflow server did not start within 180 s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procs", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--stores", default="sqlite,server", help="comma-separated: sqlite, server")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    out = []
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        for store in a.stores.split(","):
            if store == "sqlite":
                uri = f"sqlite:///{folder / 'mlflow.db'}"
                import mixopt.study as st

                st.get_storage(uri)  # create the database once before the writers start
                out.append(run_case(uri, a.procs, a.rounds, "conc-sqlite"))
            elif store == "server":
                proc, url = start_mlflow_server(folder)
                try:
                    out.append(run_case(url, a.procs, a.rounds, "conc-server"))
                finally:
                    proc.terminate()
                    proc.wait(timeout=30)
            elif store == "ctrl-c":
                out.append(ctrl_c_case(folder))
            else:
                ap.error(f"--stores: {store!r}; allowed: sqlite, server, ctrl-c")
    for r in out:
        if a.json:
            print(json.dumps(r))
        elif r["store"] == "ctrl-c":
            print(f"ctrl-c  quickstart on local Ray: exit code {r['exit_code']} {r['seconds_to_exit']} s after SIGINT, "
                  f"outputs written: {r['outputs_written']}")
        else:
            print(f"{r['store']:<7} {r['procs']} processes x {r['rounds']} ask/tell: told {r['told']}/{r['expected']}, "
                  f"in store COMPLETE {r['complete_in_store']}, lost {r['lost']}, duplicate ids {r['duplicate_ids']}, "
                  f"ids dense {r['ids_dense']}, {r['tells_per_s']} tells/s ({r['wall_s']} s)"
                  + (f"; errors: {r['errors']}" if r["errors"] else ""))
    ok = all(r["exit_code"] == 130 and r["outputs_written"] if r["store"] == "ctrl-c"
             else r["lost"] == 0 and r["duplicate_ids"] == 0 and r["ids_dense"] for r in out)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
