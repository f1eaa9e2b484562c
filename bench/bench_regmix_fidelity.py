"""RegMix surrogate fidelity on the released RegMix runs (prints a table; not a test).

Fits each surrogate on n runs of ``regmix_1m_train.csv`` (n < 512: the mean over seeded random
subsets, ``mixopt.analysis.predict``'s subset rule) and reports Spearman / Pearson of the predicted
``loss.pile_cc`` against the true one on the 1M-parameter and 60M-parameter test tables.
RegMix reports Spearman 0.99 (1M) / 0.986 (60M) for LightGBM at 512 runs.

    .venv/bin/python bench/bench_regmix_fidelity.py [--data ../shared/benchdata] [--seeds 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mixopt.analysis.predict import predict  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "benchdata"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with the regmix_*.csv tables")
    ap.add_argument("--objective", default="loss.pile_cc")
    ap.add_argument("--sizes", default="64,128,512", help="comma-separated training-set sizes")
    ap.add_argument("--seeds", type=int, default=5, help="random subsets averaged for n < all")
    ap.add_argument("--surrogates", default="lightgbm,linear")
    args = ap.parse_args(argv)

    train = args.data / "regmix_1m_train.csv"
    tests = {"1m": args.data / "regmix_1m_test.csv", "60m": args.data / "regmix_60m_test.csv"}
    for p in [train, *tests.values()]:
        if not p.exists():
            print(f"error: {p} not found (use --data)", file=sys.stderr)
            return 2
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"objective {args.objective}; train {train.name}; mean over {args.seeds} seeded subsets when n < 512")
    head = (f"{'surrogate':<10} {'n':>4} {'spearman 1m':>12} {'pearson 1m':>11} {'spearman 60m':>13} "
            f"{'pearson 60m':>12} {'s/call':>6}")
    print(head)
    print("-" * len(head))
    for sur in args.surrogates.split(","):
        for n in sizes:
            seeds = range(args.seeds) if n < 512 else [0]
            rows = {k: [] for k in tests}
            t0 = time.perf_counter()
            for s in seeds:
                for k, te in tests.items():
                    r = predict(str(train), str(te), args.objective, sur, n_train=n, seed=s)
                    rows[k].append((r["spearman"], r["pearson"]))
            dt = (time.perf_counter() - t0) / (len(seeds) * len(tests))
            m = {k: np.mean(v, axis=0) for k, v in rows.items()}
            sd = {k: np.std([x[0] for x in v]) for k, v in rows.items()}
            pm = lambda k, sd=sd, seeds=seeds: f" ±{sd[k]:.3f}" if len(seeds) > 1 else ""  # noqa: E731
            print(f"{sur:<10} {n:>4} {m['1m'][0]:>6.4f}{pm('1m'):>6} {m['1m'][1]:>11.4f} "
                  f"{m['60m'][0]:>7.4f}{pm('60m'):>6} {m['60m'][1]:>12.4f} {dt:>6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
