"""Parallel efficiency of Ray workers: the same trials with 1 worker, then with 2, in one run.

efficiency = wall(1 worker) / (2 * wall(2 workers)); 1.0 is perfect scaling. Uses the real
corpus (the pip recipe, prepared once and cached) and the real trial function.

    .venv/bin/python bench/bench_ray_parallel.py --trials 6 --preset dense-0.5m --tokens 150000
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mixopt.core.spec import ProxySpec  # noqa: E402
from mixopt.run.config import load_config  # noqa: E402
from mixopt.run.executors import RayExecutor  # noqa: E402
from mixopt.run.loop import open_corpus  # noqa: E402


def wall_time(executor, requests) -> tuple[float, float]:
    """Submit at most ``capacity`` at a time, as the study loop does; -> (wall s, sum of train s)."""
    t0, train, todo = time.perf_counter(), 0.0, list(requests)
    while todo or executor.running():
        while todo and executor.running() < executor.capacity:
            r = todo.pop(0)
            executor.submit(r["trial_id"], r)
        for f in executor.wait():
            assert f.error is None, f.error
            train += f.result["train_seconds"]
    return time.perf_counter() - t0, train


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--preset", default="dense-0.5m")
    ap.add_argument("--tokens", type=int, default=150_000)
    ap.add_argument("--config", default="examples/quickstart.yaml", help="its data: section names the corpus")
    args = ap.parse_args()
    cfg = load_config(args.config)
    corpus = open_corpus(cfg)
    spec = ProxySpec(preset=args.preset, tokens=args.tokens, eval_batches=4, evals=1)
    rng = np.random.default_rng(0)
    reqs = [{"trial_id": i, "mixture": dict(zip(corpus.domains, rng.dirichlet(np.ones(len(corpus.domains))).tolist())),
             "spec": spec.to_dict(), "corpus_dir": str(corpus.path), "eval_domains": corpus.domains,
             "num_threads": 1, "device": "cpu"} for i in range(args.trials)]
    import ray

    walls = {}
    for workers in (1, 2):
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        ex = RayExecutor(replace(cfg.executor, workers=workers))
        wall_time(ex, reqs[:2])  # warm the worker processes (imports), not timed
        walls[workers] = wall_time(ex, reqs)
        ray.shutdown()
        print(f"workers={workers}: wall {walls[workers][0]:.1f} s for {args.trials} trials "
              f"(sum of in-trial training {walls[workers][1]:.1f} s)", flush=True)
    eff = walls[1][0] / (2 * walls[2][0])
    print(f"parallel efficiency 2 workers vs 1: {eff:.2f}  (speed-up {walls[1][0] / walls[2][0]:.2f}x, "
          f"{args.preset}, {args.tokens} tokens/trial, {args.trials} trials)")


if __name__ == "__main__":
    main()
