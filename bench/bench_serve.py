"""Many trainers against one served study: ``mixopt serve`` on 127.0.0.1 (a subprocess, MLflow on
SQLite in a temporary folder), N client threads each doing R ask/tell rounds against the same
study; first with the ``random`` searcher, then ``regmix`` (``surrogate=linear``) past its initial
design. Prints the lost / duplicated trials check (0 and 0 expected) and p50/p99 latency of ask
and tell as the clients see them. Loopback only; bounded by ``--max-seconds`` per phase (clients
stop starting rounds after it; what ran is reported).

    .venv/bin/python bench/bench_serve.py [--clients 32] [--rounds 20] [--n-init 32] [--max-seconds 600]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mixopt.client import Client  # noqa: E402

DOMAINS = ["code", "legal", "math", "prose", "web"]
HOST = "127.0.0.1"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _losses(mixture, rng: np.random.Generator) -> dict[str, float]:
    """A smooth made-up response with a little noise: each domain's loss falls with its weight."""
    w = np.array([mixture[d] for d in DOMAINS])
    base = 3.0 - 0.9 * w + 0.6 * float(w @ w)
    return {d: float(v + rng.normal(0, 0.01)) for d, v in zip(DOMAINS, base)}


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs) * 1e3, q)) if xs else float("nan")


def run_baseline(uri: str, url: str, rounds: int) -> dict:
    """The same ask/tell rounds one at a time: a local Study on the same kind of store (no server),
    then one client through the server (no queueing): what the store costs, what HTTP adds."""
    import mixopt

    out = {}
    rng = np.random.default_rng(0)
    for label, study in (("local Study, same store", mixopt.create_study("bench-local", domains=DOMAINS, storage=uri)),
                         ("1 client via server", Client(url).create_study("bench-one", domains=DOMAINS))):
        ask_s, tell_s = [], []
        for _ in range(rounds):
            t0 = time.perf_counter()
            [t] = study.ask()
            t1 = time.perf_counter()
            study.tell(t.trial_id, _losses(t.mixture, rng))
            ask_s.append(t1 - t0)
            tell_s.append(time.perf_counter() - t1)
        out[label] = (_pct(ask_s, 50), _pct(ask_s, 99), _pct(tell_s, 50), _pct(tell_s, 99))
    return out


def run_phase(url: str, name: str, searcher: str, options: dict, n_init: int, clients: int, rounds: int,
              max_seconds: float) -> dict:
    study = Client(url).create_study(name, domains=DOMAINS, searcher=searcher, searcher_options=options,
                                     n_init=n_init, seed=0)
    deadline = time.monotonic() + max_seconds
    lock = threading.Lock()
    asked: list[int] = []
    told: dict[int, float | None] = {}
    ask_s: list[float] = []
    tell_s: list[float] = []
    errors: list[str] = []

    def client(k: int) -> None:
        rng = np.random.default_rng(k)
        s = Client(url, timeout=600).load_study(name)
        for _ in range(rounds):
            if time.monotonic() > deadline:
                return
            try:
                t0 = time.perf_counter()
                [t] = s.ask()
                t1 = time.perf_counter()
                done = s.tell(t.trial_id, _losses(t.mixture, rng))
                t2 = time.perf_counter()
            except Exception as e:  # report, do not hide
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")
                return
            with lock:
                asked.append(t.trial_id)
                told[t.trial_id] = done.value
                ask_s.append(t1 - t0)
                tell_s.append(t2 - t1)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - t0
    trials = study.trials
    ids = [t.trial_id for t in trials]
    stored = {t.trial_id: t.value for t in trials if t.state.value == "COMPLETE"}
    duplicated = len(asked) - len(set(asked))
    lost = sum(1 for i, v in told.items() if stored.get(i) != v)
    return {"phase": f"{searcher}{' ' + str(options) if options else ''}", "rounds": len(asked),
            "trials_in_store": len(trials), "ids_dense": ids == list(range(len(ids))), "lost": lost,
            "duplicated": duplicated, "errors": errors, "wall_s": wall,
            "ask_p50_ms": _pct(ask_s, 50), "ask_p99_ms": _pct(ask_s, 99),
            "tell_p50_ms": _pct(tell_s, 50), "tell_p99_ms": _pct(tell_s, 99),
            "n_model": sum(1 for t in trials if t.phase == "model")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--rounds", type=int, default=20, help="ask/tell rounds per client")
    p.add_argument("--n-init", type=int, default=32, help="regmix phase: initial design size")
    p.add_argument("--max-seconds", type=float, default=600, help="per phase: no round starts after it")
    p.add_argument("--phases", default="random,regmix", help="comma list of random, regmix")
    p.add_argument("--baseline-rounds", type=int, default=20,
                   help="sequential rounds of a local Study and of one client first (0: skip)")
    p.add_argument("--keep", action="store_true", help="keep the temporary MLflow store")
    args = p.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench_serve_"))
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    port = _free_port()
    url = f"http://{HOST}:{port}"
    env = {k: v for k, v in os.environ.items() if k != "MIXOPT_SERVE_TOKEN"}
    t_start = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "mixopt.cli", "serve", "--tracking-uri", uri, "--host", HOST,
                               "--port", str(port)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 180
        while True:
            if server.poll() is not None:
                print(server.stderr.read() if server.stderr else "", file=sys.stderr)
                raise SystemExit(f"server exited with {server.returncode}")
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2).read()
                break
            except Exception:
                if time.monotonic() > end:
                    raise SystemExit("server did not start within 180 s") from None
                time.sleep(0.3)
        print(f"server up in {time.perf_counter() - t_start:.1f} s at {url} (store {uri}); "
              f"{args.clients} clients x {args.rounds} rounds per phase; cpus={os.cpu_count()}")
        if args.baseline_rounds > 0:
            print(f"\n[baseline, random searcher, {args.baseline_rounds} sequential rounds]")
            for label, (a50, a99, t50, t99) in run_baseline(uri, url, args.baseline_rounds).items():
                print(f"  {label:24s} ask p50 {a50:7.1f} ms p99 {a99:7.1f} ms   tell p50 {t50:7.1f} ms p99 {t99:7.1f} ms")
        phases = {"random": ("random", {}, 0), "regmix": ("regmix", {"surrogate": "linear"}, args.n_init)}
        rows = []
        for key in [x.strip() for x in args.phases.split(",") if x.strip()]:
            searcher, options, n_init = phases[key]
            r = run_phase(url, f"bench-{key}", searcher, options, n_init, args.clients, args.rounds, args.max_seconds)
            rows.append(r)
            print(f"\n[{r['phase']}] n_init={n_init}: {r['rounds']} ask/tell rounds in {r['wall_s']:.1f} s "
                  f"({r['rounds'] / r['wall_s']:.1f} rounds/s); trials in store {r['trials_in_store']}, "
                  f"ids dense 0..{r['trials_in_store'] - 1}: {r['ids_dense']}, model-phase trials {r['n_model']}")
            print(f"  check: lost {r['lost']}, duplicated {r['duplicated']}, client errors {len(r['errors'])}"
                  + (f" (first: {r['errors'][0]})" if r["errors"] else ""))
            print(f"  ask  latency p50 {r['ask_p50_ms']:8.1f} ms   p99 {r['ask_p99_ms']:8.1f} ms")
            print(f"  tell latency p50 {r['tell_p50_ms']:8.1f} ms   p99 {r['tell_p99_ms']:8.1f} ms")
        ok = all(r["lost"] == 0 and r["duplicated"] == 0 and r["ids_dense"] and not r["errors"] for r in rows)
        print(f"\n{'OK' if ok else 'FAILED'}: 0 lost / 0 duplicated {'held' if ok else 'did NOT hold'} in every phase")
        return 0 if ok else 1
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
