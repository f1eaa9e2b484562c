"""GP input warps compared by held-out Spearman (the table in ``mixopt.search.gp``'s docstring).

    python -W ignore bench/bench_gp_warps.py --seeds 3
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from mixopt.analysis.predict import predict
from mixopt.search.gp import WARPS


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "benchdata")
    ap.add_argument("--sizes", default="64,512")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--warps", default=",".join(WARPS))
    ap.add_argument("--max-fit-rows", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    print(f"{'warp':<6} {'n':>4} {'spearman 1m':>12} {'spearman 60m':>13} {'s/fit':>6}")
    for warp in a.warps.split(","):
        for n in (int(v) for v in a.sizes.split(",")):
            seeds = range(a.seeds) if n < 512 else [0]
            res = {"1m": [], "60m": []}
            t0 = time.perf_counter()
            for sd in seeds:
                for key in res:
                    r = predict(str(a.data / "regmix_1m_train.csv"), str(a.data / f"regmix_{key}_test.csv"),
                                "loss.pile_cc", "gp", n_train=n, seed=sd,
                                surrogate_options={"warp": warp, "max_fit_rows": a.max_fit_rows})
                    res[key].append(r["spearman"])
            dt = (time.perf_counter() - t0) / (2 * len(seeds))
            print(f"{warp:<11} {n:>4} {np.mean(res['1m']):>12.4f} {np.mean(res['60m']):>13.4f} {dt:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
