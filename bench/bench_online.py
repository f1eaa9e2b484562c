"""In-process cost of the online mixers' calls (prints milliseconds; not a test). Target: < 5 ms.

For each mixer at 6 and 18 domains, a loop of ``--steps`` training steps drives the protocol with
made-up losses (drawn before timing): ``plan()``, the evaluation report when one is due (Aioli:
LearnParams evaluations and the round's update), ``weights()`` and the step's train report. It
prints percentiles of

- ``observe+weights``: one ``observe`` (train or eval) plus the ``weights()`` that follows it;
- ``step``: every mixer call of one step together (plan, evaluation if due, weights, train report);
- ``update``: the evaluation report that ends a LearnParams (Aioli's estimate of A and new mixture);
- ``state``: ``state_dict()`` + ``json.dumps`` (what a checkpoint or an HTTP reply costs).

Each is timed twice: wall clock (``perf_counter``; on a busy machine its tail is other processes
preempting this one) and this process's CPU time (``process_time``: the calls' own cost, which
load does not inflate). The verdict uses the wall-clock p99.

Aioli runs at its published defaults at 6 domains; at 18 they do not fit (LearnParams would take
18*4*4 = 288 of 250 steps a round), so there ``update_steps`` is 500.

Over HTTP (``--http``): the same protocol against ``mixopt serve`` on loopback (a server in this
process, a ``mixopt.client.RemoteMixer``): one request per ``observe`` (it answers the next plan;
``weights()`` and ``plan()`` then cost nothing). Target: < 50 ms p99.

    nice -n 10 .venv/bin/python bench/bench_online.py [--steps 5000] [--http]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mixopt.online import make_mixer  # noqa: E402


def configs(k: int) -> list[tuple[str, dict]]:
    domains = [f"d{i}" for i in range(k)]
    ref = {d: 2.0 for d in domains}
    return [("static", {}), ("doremi", {"reference": ref}),
            ("aioli", {} if k * 16 < 250 else {"update_steps": 500})]


def run(name: str, k: int, options: dict, steps: int, seed: int = 0, client=None) -> dict[str, list[tuple[float, float]]]:
    """(wall ms, cpu ms) of every timed call, by what was timed (``client``: the mixer on a server)."""
    domains = [f"d{i}" for i in range(k)]
    mixer = make_mixer(name, domains, **options) if client is None else \
        client.create_mixer(f"{name}-{k}-{steps}-{seed}", name, domains, **options)
    rng = np.random.default_rng(seed)
    level = 4.0 - np.linspace(0, 1.5, steps + 1)[:, None] + rng.normal(0, 0.05, (steps + 1, k))
    reports = [dict(zip(domains, row.tolist())) for row in level]  # built before timing: the caller's cost
    out: dict[str, list[tuple[float, float]]] = {"observe+weights": [], "step": [], "update": [], "state": []}

    def now() -> tuple[int, int]:
        return time.perf_counter_ns(), time.process_time_ns()

    def since(t: tuple[int, int]) -> tuple[float, float]:
        w, c = now()
        return (w - t[0]) / 1e6, (c - t[1]) / 1e6

    for step in range(steps):
        t0 = now()
        plan = mixer.plan()
        if plan.evaluate:
            updates = mixer.stats()["updates"]
            t = now()
            mixer.observe(step, reports[step], kind="eval")
            mixer.weights()
            dt = since(t)
            out["observe+weights"].append(dt)
            if mixer.stats()["updates"] > updates:
                out["update"].append(dt)
            plan = mixer.plan()
        t = now()
        mixer.observe(step, reports[step + 1] if plan.report else {})
        mixer.weights()
        out["observe+weights"].append(since(t))
        out["step"].append(since(t0))
        if step % 250 == 0:
            t = now()
            json.dumps(mixer.state_dict())
            out["state"].append(since(t))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--http", action="store_true", help="through mixopt serve on loopback (target p99 < 50 ms)")
    args = ap.parse_args()
    client = server = None
    if args.http:
        from mixopt.client import Client
        from mixopt.serve.server import BackgroundServer
        from mixopt.study import InMemoryStorage

        server = BackgroundServer(InMemoryStorage()).start()
        client = Client(server.url)
    print(f"{'mixer':8} {'k':>3} {'what':16} {'calls':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
          f"{'cpu p50':>8} {'cpu p99':>8}  options")
    worst = 0.0
    for k in (6, 18):
        for name, options in configs(k):
            run(name, k, options, 300, client=client)  # warm-up
            res = run(name, k, options, args.steps, client=client)
            for what, xs in res.items():
                if not xs:
                    continue
                wall, cpu = np.array(xs).T
                p50, p99 = np.percentile(wall, [50, 99])
                c50, c99 = np.percentile(cpu, [50, 99])
                if what == "observe+weights":
                    worst = max(worst, p99)
                opts = {kk: v for kk, v in options.items() if kk != "reference"}
                print(f"{name:8} {k:>3} {what:16} {len(xs):>6} {p50:8.4f} {p99:8.4f} {wall.max():8.4f} "
                      f"{c50:8.4f} {c99:8.4f}  {opts or ''}")
    limit = 50 if args.http else 5
    print(f"worst wall-clock p99 of observe+weights{' over HTTP' if args.http else ''}: {worst:.4f} ms "
          f"(target < {limit} ms): {'met' if worst < limit else 'NOT met'}")
    if server is not None:
        server.stop()


if __name__ == "__main__":
    main()
