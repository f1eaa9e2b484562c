"""Does the best learning rate transfer across width under muP, and drift under the standard parametrization?

MoE proxies of one width family (``moe-w64``, ``moe-w128``, ``moe-w256``: 2 layers, 4 heads, 8 experts,
top-2, expert hidden 2 d_model) trained on an lr grid spaced x2, once with ``parametrization:
standard`` (GPT-2 init, one lr) and once with ``parametrization: mup`` (``mixopt.proxies.gpt``: hidden
init and Adam lr / width_mult, router as an output layer, logits x alpha / width_mult, attention 1/d;
base width 64), each a ``mixopt hparams-sweep`` study (:func:`mixopt.analysis.hparams_sweep.run_sweep`) of
``bench/configs/hparams.yaml`` (pip text, BPE 1024, natural mixture, mean loss over the 6 domains),
every run the same tokens and seed. muP's recipe first: its base-width hyperparameter, the read-out
multiplier alpha (``proxy.mup_output_mult``), is tuned on the lr grid at the base width alone
(``--output-mults``; ``--output-mult X`` skips that and uses X), then the widths are trained with it.
A study's lr grid is fixed when it is created: another ``--lrs`` needs another ``--work``.
Prints the loss grid and the best lr per width for both (target: the same best lr at every width under
muP, drifting under standard).

    nice -n 10 .venv/bin/python bench/bench_mup.py --work /tmp/mup      # ~25 min on 2 cores (6 lrs); resumable
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mixopt.analysis.hparams_sweep import run_sweep  # noqa: E402
from mixopt.core.spec import MUP_OUTPUT_MULT  # noqa: E402
from mixopt.run.config import load_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "bench/configs/hparams.yaml"))
    ap.add_argument("--work", default=os.environ.get("WORK", "/tmp/mixopt-bench-mup"))
    ap.add_argument("--presets", default="moe-w64,moe-w128,moe-w256")
    ap.add_argument("--lrs", default="0.00125,0.0025,0.005,0.01,0.02,0.04")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=393216, help="training tokens of every run")
    ap.add_argument("--output-mults", default="1,2,4,8,16", help="alpha values tried at the base width")
    ap.add_argument("--output-mult", type=float, default=None, help="use this alpha; no base-width tuning")
    ap.add_argument("--seed", type=int, default=None, help="proxy seed of every run (default: the config's)")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    cfg = load_config(args.config, [f"--tracking_uri=sqlite:///{work}/mlflow.db", f"--output_dir={work}/mixopt-out"])
    if args.seed is not None:
        cfg = replace(cfg, proxy=replace(cfg.proxy, seed=args.seed))
    presets, best = args.presets.split(","), {}
    tag = "" if args.seed is None else f"-s{args.seed}"  # one --work holds the studies of several seeds

    def sweep(param: str, alpha: float, on: list[str], name: str) -> dict:
        name += tag
        proxy = replace(cfg.proxy, parametrization=param, mup_output_mult=alpha if param == "mup" else MUP_OUTPUT_MULT)
        doc = run_sweep(replace(cfg, proxy=proxy), presets=on, lrs=args.lrs.split(","), batches=[args.batch],
                        tokens=args.tokens, name=name, resume=True, fit=False,
                        progress=lambda m: print(m, file=sys.stderr, flush=True))
        return {g["preset"]: g for g in doc["grid"]}

    alpha = args.output_mult
    if alpha is None:  # muP's base-width hyperparameter, tuned at the base width alone
        base = {a: sweep("mup", a, presets[:1], f"mup-bench-base-a{a:g}")[presets[0]]["best"]
                for a in map(float, args.output_mults.split(","))}
        alpha = min(base, key=lambda a: base[a]["loss"])
        print(f"\nmuP's read-out multiplier alpha at the base width ({presets[0]}): best lr (loss) per alpha")
        for a, b in base.items():
            print(f"  alpha {a:<6g} {b['lr']:g} ({b['loss']:.4f}){'   <- chosen' if a == alpha else ''}")
    best["standard"] = sweep("standard", 1.0, presets, "mup-bench-standard")
    best[f"mup (alpha {alpha:g})"] = sweep("mup", alpha, presets,
                                           "mup-bench-mup" if alpha == 1.0 else f"mup-bench-mup-a{alpha:g}")
    print(f"\nBest lr per width on an x2 grid ({args.lrs}), {args.tokens:,} tokens, batch {args.batch} x "
          f"{cfg.proxy.seq_len}; loss at the best lr (target: one best lr under muP, drifting under standard)")
    print(f"  {'parametrization':<20}" + "".join(f"{p:>22}" for p in presets) + "   distinct best lr")
    for param, rows in best.items():
        cells = [f"{rows[p]['best']['lr']:g} ({rows[p]['best']['loss']:.4f})" for p in presets if p in rows]
        print(f"  {param:<20}" + "".join(f"{c:>22}" for c in cells)
              + f"   {len({rows[p]['best']['lr'] for p in presets if p in rows})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
