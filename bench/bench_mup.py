"""Does the best learning rate transfer across width under muP, and drift under the standard parametrization?

MoE proxies of one width family (``moe-w64``, ``moe-w128``, ``moe-w256``: 2 layers, 4 heads, 8 experts,
top-2, expert hidden 2 d_model) trained on an lr grid spaced x2, once with ``parametrization:
standard`` (GPT-2 init, one lr) and once with ``parametrization: mup`` (``mixopt.proxies.gpt``: hidden
init and Adam lr / width_mult, router as an output layer, logits / width_mult, attention 1/d; base
width 64), each a ``mixopt hparams-sweep`` study (:func:`mixopt.analysis.hparams_sweep.run_sweep`) of
``bench/configs/hparams.yaml`` (pip text, BPE 1024, natural mixture, mean loss over the 6 domains),
every run the same tokens and seed. Prints the loss grid and the best lr per width for both
(target: the same best lr at every width under muP, drifting under standard).

    nice -n 10 .venv/bin/python bench/bench_mup.py --work /tmp/mup      # ~40 min on 2 busy cores; resumable
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mixopt.analysis.hparams_sweep import run_sweep  # noqa: E402
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
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    cfg = load_config(args.config, [f"--tracking_uri=sqlite:///{work}/mlflow.db", f"--output_dir={work}/mixopt-out"])
    presets, best = args.presets.split(","), {}
    for param in ("standard", "mup"):
        pcfg = replace(cfg, proxy=replace(cfg.proxy, parametrization=param))
        doc = run_sweep(pcfg, presets=presets, lrs=args.lrs.split(","), batches=[args.batch], tokens=args.tokens,
                        name=f"mup-bench-{param}", resume=True, fit=False,
                        progress=lambda m: print(m, file=sys.stderr, flush=True))
        best[param] = {g["preset"]: g for g in doc["grid"]}
    print(f"\nBest lr per width on an x2 grid ({args.lrs}), {args.tokens:,} tokens, batch {args.batch} x "
          f"{cfg.proxy.seq_len}; loss at the best lr (target: one best lr under muP, drifting under standard)")
    print(f"  {'parametrization':<16}" + "".join(f"{p:>22}" for p in presets) + "   distinct best lr")
    for param, rows in best.items():
        cells = [f"{rows[p]['best']['lr']:g} ({rows[p]['best']['loss']:.4f})" for p in presets if p in rows]
        print(f"  {param:<16}" + "".join(f"{c:>22}" for c in cells)
              + f"   {len({rows[p]['best']['lr'] for p in presets if p in rows})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
