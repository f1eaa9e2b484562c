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

Speed on pools we do not have (issue 24: ``mixing_law`` 120 x 10 on 256 runs x 19 domains in
<= 300 s, 120 x 8 on 512 x 64 in <= 600 s, ``--workers 2``): ``--standin 256x19`` / ``--standin
512x64`` replays on a seeded synthetic pool of that shape drawn from a mixing law fitted on
``admire_ift_3b.csv`` / ``olmix_dclm.csv`` (see ``replay_pools.standin_pool``). ``--compare
LABEL=FILE:CLASS`` adds a searcher class loaded from a file (e.g. the previous
``search/mixing_law.py``, saved with ``git show HEAD:search/mixing_law.py > /tmp/mixing_law_old.py``),
replayed on the same seeds, so old and new code are timed in one run:

    nice -n 10 .venv/bin/python bench/bench_replay.py --standin 256x19 --budget 120 --seeds 10 --init 0 \
        --searchers mixing_law --workers 2
    nice -n 10 .venv/bin/python bench/bench_replay.py --standin 512x64 --budget 120 --seeds 8 --init 0 \
        --searchers mixing_law --workers 2

Time one searcher per call (``elapsed`` below is the whole replay's wall time: the figure the
targets are about); ``wall s`` in the table is the sum of the searcher's per-seed seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

sys.path.insert(0, str(Path(__file__).resolve().parent))

from replay_pools import load_searcher_file, standin_pool  # noqa: E402

from mixopt.analysis.replay import format_table, replay_pool, replay_table  # noqa: E402

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
    ap.add_argument("--maximize", action="store_true", help="the objective is a score (higher is better)")
    ap.add_argument("--workers", type=int, default=1, help="processes replaying seeds in parallel")
    ap.add_argument("--standin", default=None, metavar="ROWSxDOMAINS",
                    help="replay on a synthetic stand-in pool of this shape (256x19, 512x64) instead of --table")
    ap.add_argument("--compare", action="append", default=[], metavar="LABEL=FILE:CLASS",
                    help="also replay a searcher class loaded from a file, under LABEL (repeatable)")
    args = ap.parse_args(argv)
    for item in args.compare:
        label, _, spec = item.partition("=")
        load_searcher_file(label, spec)
    names = args.searchers or ",".join(SEARCHERS + [n for n in ("bo",) if _optional(n)])
    names = ",".join([names] + [item.partition("=")[0] for item in args.compare])
    progress = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    if args.standin:
        W, v, domains, how = standin_pool(args.data, args.standin)
        res = replay_pool(W, v, domains, names, args.budget, args.seeds, args.init, workers=args.workers,
                          progress=progress)
        what = how
    else:
        runs = args.data / args.table
        if not runs.exists():
            print(f"error: {runs} not found (use --data)", file=sys.stderr)
            return 2
        res = replay_table(str(runs), args.objective, names, args.budget, args.seeds, args.init, args.maximize,
                           workers=args.workers, progress=progress)
        what = f"{runs.name} ({args.objective}{', maximized' if args.maximize else ''})"
    print(f"replay {what}; budget {args.budget}, {args.seeds} seeds, init {args.init}, {args.workers} worker(s); "
          f"elapsed {time.perf_counter() - t0:.0f} s")
    print(format_table(res, args.budget))
    for label, r in res.items():
        print(f"# {label}: evals_to_top1 per seed {r['evals_to_top1']}, top5 {r['evals_to_top5']}, "
              f"seconds (sum over seeds) {r['wall_s']:.1f} wall, {r['cpu_s']:.1f} CPU")
    ratios = {k: r["evals_to_top1_median"] / res["random"]["evals_to_top1_median"] for k, r in res.items()}
    best = min((k for k in ratios if k != "random"), key=ratios.get)
    print(f"best: {best} at {ratios[best]:.2f} x random's evaluations to the top 1% (aim <= 0.20)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
