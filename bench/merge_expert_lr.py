"""Does the experts' learning rate after the hand-off change how merged scores rank mixtures?

Retrains the experts of an expert set that ``mixopt merge-check`` trained (same seed file, same data,
same steps) with the lr held constant after the seed's last step, at the schedule's value there
(``handoff``) or at the peak lr (``peak``; MergeMix, arXiv 2601.17858, trains its experts at a constant
lr), instead of continuing the cosine decay (what mixopt does); then scores the check's trained
mixtures by merging (``theta_seed + scale * sum_i w_i (theta_i - theta_seed)``) and prints the Spearman
correlation with the trained losses per scale, for the mean over domains and the held-out target.

    python bench/merge_expert_lr.py --store sqlite:////tmp/mc37/mlflow.db --study merge-check-37k-s0 \\
        --experts ~/.cache/mixopt/experts/8c7aab2ac1d97e27 --corpus ~/.cache/mixopt/corpus/debian-bpe-1024-b3e61c55 \\
        --mode handoff --work /tmp/expert-lr                # ~5 min of expert training on 2 cores, then ~1 min
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mixopt.core.experts import SEED_FILE, ExpertsSpec, expert_file  # noqa: E402
from mixopt.data.corpus import Corpus  # noqa: E402
from mixopt.proxies import merge  # noqa: E402
from mixopt.study import get_storage  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True, help="the merge-check's tracking URI")
    ap.add_argument("--study", required=True, help="the merge-check study (its trained mixtures)")
    ap.add_argument("--experts", required=True, help="the expert set's folder (experts.json, seed.safetensors)")
    ap.add_argument("--corpus", required=True, help="the corpus folder the experts were trained on")
    ap.add_argument("--mode", choices=("schedule", "handoff", "peak"), default="handoff")
    ap.add_argument("--target", default="pydocs")
    ap.add_argument("--scales", default="1,1.25,1.5,2")
    ap.add_argument("--work", default="/tmp/mixopt-expert-lr")
    args = ap.parse_args()
    src = Path(args.experts).expanduser()
    es = ExpertsSpec.from_dict(json.loads((src / "experts.json").read_text())["experts"])
    corpus = Corpus.open(Path(args.corpus).expanduser())
    folder = src if args.mode == "schedule" else Path(args.work) / f"{args.mode}-{src.name}"
    if not (folder / expert_file(es.domains[-1])).is_file():
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / SEED_FILE, folder / SEED_FILE)
        schedule = merge.lr_at
        if args.mode == "handoff":
            merge.lr_at = lambda step, spec: schedule(min(step, es.seed_steps), spec)
        else:
            merge.lr_at = lambda step, spec: spec.lr if step >= es.seed_steps else schedule(step, spec)
        try:
            r = merge.train_experts({"experts": es.to_dict(), "corpus_dir": str(corpus.path), "out_dir": str(folder),
                                     "train": list(es.domains), "num_threads": 2, "device": "cpu"})
        finally:
            merge.lr_at = schedule
        print(f"experts trained ({args.mode} lr) in {r['seconds']:.0f} s", flush=True)
    trials = [t for t in get_storage(args.store).trials(args.study) if t.ok and t.label.startswith("check")]
    W = np.array([[t.mixture.to_dict().get(d, 0.0) for d in es.domains] for t in trials])
    L = np.array([[t.losses[d] for d in corpus.domains] for t in trials])
    j = list(corpus.domains).index(args.target)
    print(f"{len(trials)} trained mixtures of {args.study}; experts: {args.mode} lr after the hand-off")
    for scale in (float(s) for s in args.scales.split(",")):
        M = np.array(merge.merged_losses({"experts": es.to_dict(), "dir": str(folder), "mixtures": W.tolist(),
                                          "corpus_dir": str(corpus.path), "scale": scale, "num_threads": 2})["losses"])
        print(f"  scale {scale:g}: Spearman mean over domains {stats.spearmanr(M.mean(1), L.mean(1)).statistic:.3f}, "
              f"{args.target} {stats.spearmanr(M[:, j], L[:, j]).statistic:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
