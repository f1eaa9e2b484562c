"""Proposal latency of ``bo`` and ``mfbo`` on the released RegMix runs (prints seconds; not a test).

``bo``: 500 observations over 17 domains (the first 500 rows of ``regmix_1m_train.csv``,
objective ``loss.pile_cc``), one ``suggest`` with q = 1 and with q = 4, default options.
"live": the ask at 500 observations in a running study, i.e. after the ask at 499 (which left
the scheduled GP fit in the process's cache: the warm start); "cold": the same ask in a fresh
process (cache emptied), which refits the hyperparameters it needs (at most CHAIN fits,
``mixopt.search.refit``), as a restarted study would.
``mfbo``: 200 observations over a 3-rung ladder with synthetic costs 1 : 8 : 64 (rung r's value
is the real loss plus 0.2 * (2 - r) and a rung-dependent tilt), q = 1. Imports and a warm-up
call are excluded; the figure is wall time of one proposal in a running study.

    .venv/bin/python bench/bench_bo_latency.py [--data ../shared/benchdata] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mixopt.core.mixture import Mixture, MixtureSpace  # noqa: E402
from mixopt.core.runs_table import read_runs_table  # noqa: E402
from mixopt.search import Observation, Rung, SearchContext, get_searcher  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "benchdata"


def _ctx(space: MixtureSpace, X: np.ndarray, y: np.ndarray, rungs=None, ladder=()) -> SearchContext:
    obs = tuple(Observation(i, Mixture.from_array(x, space.domains), "COMPLETE", float(v),
                            None if rungs is None else int(rungs[i])) for i, (x, v) in enumerate(zip(X, y)))
    return SearchContext(space, obs, 0, tuple(ladder))


def _time(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--objective", default="loss.pile_cc")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = ap.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    tr = read_runs_table(str(args.data / "regmix_1m_train.csv"), args.objective)
    X, y = tr.weights(), tr.metric(args.objective)
    keep = np.isfinite(y)
    X, y = X[keep], y[keep]
    space = MixtureSpace.build(tr.domains)
    print(f"torch threads {torch.get_num_threads()}; {space.dim} domains; objective {args.objective}")

    from mixopt.search import gp
    from mixopt.search.refit import clear_caches

    bo = get_searcher("bo")
    _time(lambda: bo.suggest(_ctx(space, X[:20], y[:20]), 1))                 # warm-up (imports)
    ctx = _ctx(space, X[:500], y[:500])
    clear_caches()
    dt, out = _time(lambda: bo.suggest(ctx, 1))
    print(f"bo    n_obs=500 q=1 cold (fresh process, cache empty): {dt:6.2f} s  ({gp.STATS['fits']} GP fits so far)")
    clear_caches()
    dt, _ = _time(lambda: bo.suggest(_ctx(space, X[:499], y[:499]), 1))
    print(f"bo    n_obs=499 q=1 (the ask before; fills the cache): {dt:6.2f} s")
    for q in (1, 4):
        dt, out = _time(lambda q=q: bo.suggest(ctx, q))
        print(f"bo    n_obs=500 q={q} live (warm start): {dt:6.2f} s  ({len(out)} mixtures)")
    dt, _ = _time(lambda: bo.recommend(ctx))
    print(f"bo    n_obs=500 recommend (warm start): {dt:6.2f} s")

    ladder = (Rung(0, {}, 1.0), Rung(1, {}, 8.0), Rung(2, {}, 64.0))
    rungs = np.array([0] * 140 + [1] * 40 + [2] * 20)
    ym = y[:200] + 0.2 * (2 - rungs) + 0.1 * (2 - rungs) * X[:200, 0]
    mf = get_searcher("mfbo")
    clear_caches()
    dt, out = _time(lambda: mf.suggest(_ctx(space, X[:200], ym, rungs, ladder), 1))
    print(f"mfbo  n_obs=200 (140/40/20 over 3 rungs) q=1 cold: {dt:6.2f} s  (rung {out[0].rung})")
    dt, out = _time(lambda: mf.suggest(_ctx(space, X[:200], ym, rungs, ladder), 1))
    print(f"mfbo  n_obs=200 q=1 live (warm start): {dt:6.2f} s  (rung {out[0].rung})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
