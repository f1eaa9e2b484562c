"""Replay searchers against the released RegMix runs (prints a table; not a test).

Each searcher picks, one row at a time, which of the 512 runs of ``regmix_1m_train.csv`` to
"train" next (``mixopt replay``'s pool mode) and we count the rows evaluated until one of the
best 1% (5 rows) / 5% (25 rows) by ``loss.pile_cc`` is found; median over seeds, and the ratio
to ``random`` measured in the same run. Issue 3's aim: the best searcher at <= 1/5 of random's
evaluations to the top 1%. ``bo`` is included when it is registered and loads.

    .venv/bin/python bench/bench_replay.py [--data ../shared/benchdata] [--budget 100] [--seeds 5] [--init 8]

Speed (``--table regmix_1m_test.csv``: 256 runs, 17 domains): one searcher per call, e.g.

    .venv/bin/python bench/bench_replay.py --table regmix_1m_test.csv --budget 120 --seeds 10 --init 0 \
        --searchers bo --workers 2

``--workers`` replays seeds in parallel processes (same figures for any number); per-seed
progress goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mixopt.analysis.replay import format_table, replay_table  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "benchdata"
SEARCHERS = ["random", "regmix", "regmix:surrogate=lightgbm", "regmix:surrogate=gp", "regmix:surrogate=linear",
             "mixing_law"]


def _optional(name: str) -> bool:
    import mixopt.search

    if name not in mixopt.search.available():
        return False
    try:
        mixopt.search.get_searcher(name)
        return True
    except Exception as e:  # a searcher still being written, or its library missing
        print(f"# {name} skipped: {type(e).__name__}: {e}", file=sys.stderr)
        return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--objective", default="loss.pile_cc")
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--init", type=int, default=8)
    ap.add_argument("--searchers", default=None, help="override the list (mixopt replay --searcher syntax)")
    ap.add_argument("--table", default="regmix_1m_train.csv", help="runs table under --data used as the pool")
    ap.add_argument("--workers", type=int, default=1, help="processes replaying seeds in parallel")
    args = ap.parse_args(argv)
    runs = args.data / args.table
    if not runs.exists():
        print(f"error: {runs} not found (use --data)", file=sys.stderr)
        return 2
    names = args.searchers or ",".join(SEARCHERS + [n for n in ("bo",) if _optional(n)])
    t0 = time.perf_counter()
    res = replay_table(str(runs), args.objective, names, args.budget, args.seeds, args.init, workers=args.workers,
                       progress=lambda m: print(m, file=sys.stderr, flush=True))
    print(f"replay {runs.name} ({args.objective}), budget {args.budget}, {args.seeds} seeds, "
          f"init {args.init}, {args.workers} worker(s); {time.perf_counter() - t0:.0f} s wall")
    print(format_table(res, args.budget))
    for label, r in res.items():
        print(f"# {label}: evals_to_top1 per seed {r['evals_to_top1']}, top5 {r['evals_to_top5']}")
    ratios = {k: r["evals_to_top1_median"] / res["random"]["evals_to_top1_median"] for k, r in res.items()}
    best = min((k for k in ratios if k != "random"), key=ratios.get)
    print(f"best: {best} at {ratios[best]:.2f} x random's evaluations to the top 1% (aim <= 0.20)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
