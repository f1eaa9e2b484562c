"""Wall time of the quickstart study on this machine, and the share spent outside proxy training.

Runs ``mixopt run examples/quickstart.yaml`` in-process (fresh SQLite store and output folder
in a temp dir; the cached corpus is reused unless --cold) and prints:
wall time, summed in-trial training seconds, and
outside share = 1 - training seconds / (workers * wall).

    .venv/bin/python bench/bench_quickstart.py [--trials 32] [--cold] [--proxy.preset=moe-0.1m ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mixopt.cli import run_study as run  # noqa: E402
from mixopt.run.config import load_config  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="examples/quickstart.yaml")
    ap.add_argument("--trials", type=int)
    ap.add_argument("--cold", action="store_true", help="prepare the corpus from scratch (temp cache)")
    args, overrides = ap.parse_known_args()  # the rest: --a.b=c config overrides
    args.overrides = overrides
    with tempfile.TemporaryDirectory() as tmp:
        ov = [f"--tracking_uri=sqlite:///{tmp}/mlflow.db", f"--output_dir={tmp}/out", *args.overrides]
        if args.trials:
            ov.append(f"--budget.trials={args.trials}")
        if args.cold:
            ov.append(f"--data.cache_dir={tmp}/cache")
        cfg = load_config(args.config, ov)
        t0 = time.perf_counter()
        out = run(cfg)
        wall = time.perf_counter() - t0
    w = cfg.executor.workers
    print(f"quickstart: {cfg.budget.trials} trials, {w} workers, wall {wall:.1f} s "
          f"({wall / 60:.1f} min); in-trial training {out.train_seconds:.1f} worker-s; "
          f"share of worker time outside proxy training {1 - out.train_seconds / (w * wall):.1%}")


if __name__ == "__main__":
    main()
