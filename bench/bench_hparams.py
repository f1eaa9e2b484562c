"""Does the lr / batch-size law fitted on small proxies predict a held-out size's best? (issue 20)

1. ``mixopt hparams-sweep`` (:func:`mixopt.analysis.hparams_sweep.run_sweep`) trains the lr x batch
   grid at every preset (default dense-3k, -6k, -14k, -37k at 100 tokens per non-embedding
   parameter, lr 0.005-0.08 on a x2 grid, batch 8/16/32 sequences of 128 by default: ``--batches``;
   ``--extra PRESETS:BATCHES`` adds batch sizes at some sizes only) on the natural mixture of
   ``bench/configs/hparams.yaml`` (pip text, BPE 1024), ``--seeds`` seeds per point (default 1, losses averaged).
2. For each size h in turn and each ``--optimum`` method: the Step-Law forms are fitted to the OTHER
   sizes' runs (:func:`mixopt.analysis.hparams.fit_hparams`; ``kept``: the release's 0.25 % kept set),
   and predict h's lr and batch; ``--seeds`` proxies are trained at that (lr, batch) (a sweep study of
   its own) and their mean loss compared with the best grid point of h. Target: within 0.5 % at every
   held-out size.
3. The constant factors that bring the published Step Law to these proxies
   (``lr_best = c_lr * StepLaw_lr(N, D)``, ``B_best = c_B * StepLaw_B(D)``: geometric means over
   the runs kept within 0.25 % of their size's best), over every size and over all but the largest
   (what ``mixopt.analysis.autohp.PROXY_LR_FACTOR`` / ``PROXY_BATCH_FACTOR`` hold; the largest size
   checks them), with the per-size ratios and what ``lr: auto`` gives.

    nice -n 10 .venv/bin/python bench/bench_hparams.py --work /tmp/hp   # ~1.5 h on 2 busy cores; resumable
    nice -n 5 .venv/bin/python bench/bench_hparams.py --work /tmp/hp3 --seeds 3   # every point 3 seeds, averaged
    # the grid grown until every size's best batch is inside it (or at batch 1), both fits, fresh seeds:
    nice -n 5 .venv/bin/python bench/bench_hparams.py --work /tmp/hp3 --seeds 3 --batches 4,8,16,32 \
        --extra dense-3k,dense-6k:2 --extra dense-3k:1 --optimum kept,surface --fresh-seeds 3

``--fresh-seeds K`` also trains each predicted point and each size's best grid point at K seeds none of
the sweep used, and prints their paired gap: the best grid point was chosen as the lowest of 20-30
noisy means, so on the sweep's own seeds it is flattered (the winner's curse), on fresh seeds not.

Prints the grid, the held-out table and the factors; everything is in ``$WORK/mlflow.db`` and
``$WORK/mixopt-out``. Re-running with the same ``--work`` reuses every trained run.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mixopt.analysis import autohp  # noqa: E402
from mixopt.analysis.hparams import fit_hparams, kept_runs, published_hparams  # noqa: E402
from mixopt.analysis.hparams_sweep import grid_doc, run_sweep  # noqa: E402
from mixopt.run.config import load_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FRESH_SEED = 1000  # --fresh-seeds train at seeds 1000, 1001, ...: none of the sweep's


def _sweep(cfg, args, **kw):
    return run_sweep(cfg, tokens_per_param=args.tokens_per_param, resume=True, bootstrap=20, seeds=args.seeds,
                     progress=lambda m: print(m, file=sys.stderr, flush=True), **kw)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "bench/configs/hparams.yaml"))
    ap.add_argument("--work", default=os.environ.get("WORK", "/tmp/mixopt-bench-hparams"))
    ap.add_argument("--presets", default="dense-3k,dense-6k,dense-14k,dense-37k")
    ap.add_argument("--lrs", default="0.005,0.01,0.02,0.04,0.08")
    ap.add_argument("--batches", default="8,16,32")
    ap.add_argument("--tokens-per-param", type=float, default=100.0)
    ap.add_argument("--seeds", type=int, default=1, help="seeds per grid point and per held-out point (losses averaged)")
    ap.add_argument("--extra", action="append", default=[], metavar="PRESETS:BATCHES",
                    help="more batch sizes at some sizes only, e.g. dense-3k,dense-6k:2 (a sweep study each, at the "
                         "main grid's token budget; repeatable)")
    ap.add_argument("--no-heldout", action="store_true", help="skip training at the predicted points")
    ap.add_argument("--optimum", default="kept", help="comma-separated fit_hparams optimum methods to compare: "
                    "kept (the release's) and/or surface (one loss surface over all runs)")
    ap.add_argument("--fresh-seeds", type=int, default=0,
                    help="also train each predicted point and each size's best grid point at this many NEW seeds "
                         f"({FRESH_SEED} on), paired: the gap free of the grid best's winner's curse")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    cfg = load_config(args.config, [f"--tracking_uri=sqlite:///{work}/mlflow.db", f"--output_dir={work}/mixopt-out"])
    presets = args.presets.split(",")
    doc = _sweep(cfg, args, presets=presets, lrs=args.lrs.split(","), batches=args.batches.split(","))
    import pandas as pd

    df = pd.read_csv(doc["files"]["runs"])
    for ext in args.extra:  # more batch sizes at some sizes: a sweep study per size at the main grid's budget
        which, _, bs = ext.partition(":")
        for h in which.split(","):
            [g] = [g for g in doc["grid"] if g["preset"] == h]
            more = _sweep(cfg, args, presets=[h], lrs=args.lrs.split(","), batches=bs.split(","), fit=False,
                          tokens=int(g["D"]), name=f"{cfg.study}-hparams-{h}-b{bs.replace(',', '-')}")
            df = pd.concat([df, pd.read_csv(more["files"]["runs"])], ignore_index=True)
    doc["grid"] = grid_doc(df)
    T = cfg.proxy.seq_len
    fresh_cfg = replace(cfg, proxy=replace(cfg.proxy, seed=FRESH_SEED))

    def train(h, lr, B, seeds, tokens, fresh):
        """Mean loss and per-seed losses of one point (a one-point sweep study of its own)."""
        name = f"{cfg.study}-heldout-{h}-lr{lr:g}-b{B}" + (f"-x{seeds}" if seeds > 1 else "")
        name += f"-fresh{FRESH_SEED}" if fresh else ""
        a = argparse.Namespace(**{**vars(args), "seeds": seeds})
        one = _sweep(fresh_cfg if fresh else cfg, a, presets=[h], lrs=[lr], batches=[B], name=name, fit=False,
                     tokens=tokens)
        runs = pd.read_csv(one["files"]["runs"])  # the sweep's runs table: one row per completed seed
        return one["grid"][0]["best"]["loss"], dict(zip(runs["seed"], runs["loss"]))

    methods = args.optimum.split(",")
    rows = []
    for g in doc["grid"]:
        h, b = g["preset"], g["best"]
        grid_fresh = None
        if args.fresh_seeds and not args.no_heldout:
            grid_fresh = train(h, b["lr"], b["batch_size"], args.fresh_seeds, int(g["D"]), True)[1]
        for m in methods:
            fit = fit_hparams(df[df["preset"] != h], bootstrap=0, source=f"sweep without {h}", optimum=m)
            p = fit.predict(g["N"], g["D"], seq_len=T)
            lr, B = float(f"{p.lr:.4g}"), max(1, round(p.batch_tokens / T))
            row = {"preset": h, "method": m, "N": g["N"], "D": g["D"], "best": b, "lr": lr, "B": B,
                   "loss": math.nan, "fresh": None}
            if not args.no_heldout:
                row["loss"] = train(h, lr, B, args.seeds, int(g["D"]), False)[0]
                if grid_fresh is not None:
                    per = train(h, lr, B, args.fresh_seeds, int(g["D"]), True)[1]
                    d = np.array([(per[k] - grid_fresh[k]) / grid_fresh[k] for k in sorted(per) if k in grid_fresh])
                    row["fresh"] = (float(np.mean(list(per.values()))), float(np.mean(list(grid_fresh.values()))),
                                    float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.nan)
            rows.append(row)
    print(f"\nHeld-out sizes: the law fitted on the other {len(presets) - 1} sizes predicts (lr, batch); a proxy "
          f"trained there ({args.seeds} seed(s), averaged) vs the best grid point (target: gap <= 0.5 %)")
    print(f"  {'preset':<10}{'optimum':<9}{'N':>8}{'D':>11}{'pred lr':>9}{'pred B':>7}{'loss':>9}   "
          f"{'grid best (lr, B)':<20}{'loss':>8}{'gap':>8}")
    for r in rows:
        b = r["best"]
        gap = (r["loss"] - b["loss"]) / b["loss"]
        print(f"  {r['preset']:<10}{r['method']:<9}{r['N']:>8,.0f}{r['D']:>11,.0f}{r['lr']:>9.4g}{r['B']:>7}"
              f"{r['loss']:>9.4f}   {'(' + format(b['lr'], 'g') + ', ' + str(b['batch_size']) + ')':<20}"
              f"{b['loss']:>8.4f}{gap:>+8.2%}")
    if any(r["fresh"] for r in rows):
        print(f"\nThe same on {args.fresh_seeds} fresh seeds ({FRESH_SEED} on; neither point was chosen on them), "
              "paired per seed: mean loss at the predicted point, at the grid best, gap ± s.e.")
        for r in rows:
            if r["fresh"]:
                lp, lb, d, se = r["fresh"]
                print(f"  {r['preset']:<10}{r['method']:<9}{lp:>9.4f}{lb:>9.4f}{d:>+9.2%} ± {se:.2%}")
    k = kept_runs(df.groupby(["N", "D", "lr", "batch_tokens"], as_index=False)["loss"].mean())  # seeds averaged
    pub = [published_hparams(n, d, seq_len=T) for n, d in zip(k["N"], k["D"])]
    r_lr = np.log(k["lr"].to_numpy()) - np.log([h.lr for h in pub])
    r_b = np.log(k["batch_tokens"].to_numpy()) - np.log([h.batch_tokens for h in pub])
    small = (k["N"] < k["N"].max()).to_numpy()
    print(f"\nPublished Step Law at these sizes, corrected by constant factors fitted on the {len(k)} kept grid points "
          f"(seeds averaged; within 0.25 % of their size's best) of {len(df)} runs:")
    print(f"  all sizes: c_lr = {math.exp(r_lr.mean()):.4g} (lr_best / StepLaw lr), c_B = {math.exp(r_b.mean()):.4g} "
          "(batch_tokens_best / StepLaw batch)")
    print(f"  all but the largest (mixopt.analysis.autohp's PROXY_LR_FACTOR {autohp.PROXY_LR_FACTOR:g}, PROXY_BATCH_"
          f"FACTOR {autohp.PROXY_BATCH_FACTOR:g}): c_lr = {math.exp(r_lr[small].mean()):.4g}, "
          f"c_B = {math.exp(r_b[small].mean()):.4g}")
    for g in doc["grid"]:
        h = published_hparams(g["N"], g["D"], seq_len=T)
        b = g["best"]
        print(f"  {g['preset']:<10} StepLaw lr {h.lr:.4g}, batch {h.batch_tokens:,.0f} tokens; best lr {b['lr']:g} "
              f"(x{b['lr'] / h.lr:.3f}), batch {b['batch_tokens']:,.0f} (x{b['batch_tokens'] / h.batch_tokens:.3f}); "
              f"`auto` gives lr {h.lr * autohp.PROXY_LR_FACTOR:.4g}, batch "
              f"{h.batch_tokens * autohp.PROXY_BATCH_FACTOR:,.0f} tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
