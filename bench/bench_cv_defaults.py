"""Choose searcher defaults by replay on tables OTHER than the headline one (prints a table; not a test).

The headline figure (evaluations to the top 1% of ``regmix_1m_train.csv``, ``bench_replay.py``)
must not be tuned on. Candidate settings (initial design size ``min_fit``, acquisition, ...) are
replayed instead on ``regmix_1m_test.csv`` and ``regmix_60m_test.csv`` (256 runs each, 17 domains)
as pools, for several objectives (per-domain validation losses), and ranked by the mean over
(table, objective) of the median evaluations to the top 1% (then top 5%), init 0: the
searcher's own initial design counts. Each table/objective is one ``replay_pool`` call (all
candidates, ``--workers`` processes).

    .venv/bin/python bench/bench_cv_defaults.py --candidates "regmix:min_fit=4,regmix:min_fit=8" \\
        [--objectives loss.pile_cc,loss.github] [--budget 40] [--seeds 5] [--workers 2]

Measured (two runs, ``--objectives loss.pile_cc,loss.github --budget 25 --seeds 5 --workers 2``,
2-core box shared with other jobs; mean over the 4 table/objective pairs of the median
evaluations to the top 1% / top 5%; 26 = not within the budget):

    candidate                                   top1%   top5%
    regmix:surrogate=mixing_law  (min_fit 4)     5.75    5.00
    mixing_law:min_fit=4                         7.50    5.25
    bo:min_fit=3                                 8.25    4.75
    mixing_law:min_fit=6                         8.50    7.25
    bo:min_fit=4                                 9.50    6.25
    mixing_law:min_fit=8                         9.75    9.00
    regmix:min_fit=3             (auto: GP)     11.25    6.75
    regmix                       (auto, mean, min_fit 4)  11.75  7.00
    regmix:acquisition=ei                       11.75    7.25
    bo:min_fit=6                                11.75    9.00
    regmix:acquisition=lcb                      12.25    7.50
    regmix:min_fit=8                            14.00   10.50
    regmix:acquisition=thompson                 21.50   11.75
    random                                      26.00   18.75

Hence the defaults: ``bo`` min_fit 3 (was 10), ``mixing_law`` min_fit 4 (was k + 2 = 19), ``regmix``
min_fit 4 with the ``mean`` acquisition (an explicit acquisition did not help the GP; a small
initial design did). (mixing_law:min_fit=4 above ran before its between-refit step used two
local starts instead of one.)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mixopt.analysis.replay import parse_searchers, replay_pool  # noqa: E402
from mixopt.core.runs_table import read_runs_table  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "benchdata"
TABLES = ("regmix_1m_test.csv", "regmix_60m_test.csv")
OBJECTIVES = "loss.pile_cc,loss.github,loss.wikipedia_en,loss.arxiv"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--candidates", required=True, help="mixopt replay --searcher syntax")
    ap.add_argument("--objectives", default=OBJECTIVES)
    ap.add_argument("--tables", default=",".join(TABLES))
    ap.add_argument("--budget", type=int, default=40)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    specs = parse_searchers(args.candidates)
    labels = [s[0] for s in specs]
    top1: dict[str, list[float]] = {lab: [] for lab in labels}
    top5: dict[str, list[float]] = {lab: [] for lab in labels}
    t0 = time.perf_counter()
    for table in args.tables.split(","):
        for obj in args.objectives.split(","):
            t = read_runs_table(str(args.data / table), objective=obj)
            res = replay_pool(t.weights(), t.metric(obj), t.domains, specs, args.budget, args.seeds, 0,
                              workers=args.workers,
                              progress=lambda m: "finished" in m and print(m, file=sys.stderr, flush=True))
            print(f"# {table} {obj}: " + "  ".join(f"{lab}={r['evals_to_top1_median']:g}/{r['evals_to_top5_median']:g}"
                                                  for lab, r in res.items()), flush=True)
            for lab, r in res.items():
                top1[lab].append(r["evals_to_top1_median"])
                top5[lab].append(r["evals_to_top5_median"])
    print(f"cross-validation on {args.tables} x {args.objectives}: budget {args.budget}, {args.seeds} seeds, "
          f"init 0; {time.perf_counter() - t0:.0f} s")
    print(f"{'candidate':<60}{'mean top1%':>11}{'mean top5%':>11}")
    for lab in sorted(labels, key=lambda lab: (np.mean(top1[lab]), np.mean(top5[lab]))):
        print(f"{lab:<60}{np.mean(top1[lab]):>11.2f}{np.mean(top5[lab]):>11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
