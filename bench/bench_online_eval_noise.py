"""How many validation sequences does an online mixer's evaluation need? (the engine's ``eval_sequences``)

One Aioli run at its published defaults from uniform on the ``pip`` recipe (its evaluations score 16
sequences per domain, which drive it); at every evaluation 64 sequences per domain (the first 16 of them
those 16) are also scored, per sequence. Offline, Aioli is replayed on the losses of the first 8, 16, 32
and all 64 sequences, and each round's mixture (Aioli's p^t) is compared with the 64-sequence one. Printed:
per round, how far p^t moved from the start (L1) and, per n, how far the n-sequence p^t lies from the
64-sequence p^t (L1).

    python bench/bench_online_eval_noise.py --preset dense-0.1m --tokens 2000000 --seed 0
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from mixopt.online import make_mixer  # noqa: E402
from mixopt.proxies import pack_train  # noqa: E402
from mixopt.proxies.train import eval_batches  # noqa: E402
from mixopt.run.config import load_config  # noqa: E402
from mixopt.run.plan import StudyPlan  # noqa: E402
from mixopt.study import InMemoryStorage  # noqa: E402

SIZES = (8, 16, 32, 64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="dense-0.1m")
    ap.add_argument("--tokens", type=int, default=2_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--recipe", default="pip")
    args = ap.parse_args()
    cfg = load_config(None, [f"--data.recipe={args.recipe}", "--data.vocab_size=1024", "--data.max_mb_per_domain=2",
                             f"--proxy.preset={args.preset}", f"--proxy.tokens={args.tokens}", "--proxy.seq_len=128",
                             "--proxy.batch_size=16", "--proxy.lr=0.004", "--proxy.eval_batches=4", "--proxy.evals=1"])
    corpus = StudyPlan.build(cfg, storage=InMemoryStorage()).open_corpus(lambda m: None)
    doms, n_max = list(corpus.domains), max(SIZES)
    big = {d: eval_batches(corpus, d, n_max // 16, 16, 128).reshape(n_max, 129) for d in doms}
    rec: list[np.ndarray] = []  # per evaluation: (D, 64) per-sequence losses
    real = pack_train.PackTrainer.evaluate_sequences

    def evaluate(self, batches):
        with torch.no_grad():
            self.pack.eval()
            rows = []
            for d in doms:
                tl = torch.empty(1, n_max * 128)
                self.pack(big[d][None, :, :-1], big[d][None, :, 1:], token_loss=tl)
                rows.append(tl.view(n_max, 128).mean(1).numpy())
            self.pack.train()
        rec.append(np.stack(rows))
        return real(self, batches)

    pack_train.PackTrainer.evaluate_sequences = evaluate  # the online evaluations
    start = {d: 1 / len(doms) for d in doms}
    spec = replace(cfg.proxy, online="aioli", online_options={"eval_sequences": 16}, seed=args.seed)
    req = {"trial_id": 0, "mixture": start, "spec": spec.to_dict(), "corpus_dir": str(corpus.path),
           "eval_domains": doms, "num_threads": 1, "device": "cpu"}
    (res,) = pack_train.run_pack([req])
    L = np.stack(rec)
    rounds: dict[int, np.ndarray] = {}
    for n in SIZES:
        m, e, ps = make_mixer("aioli", doms, start=start, study="noise"), 0, []
        for step in range(spec.steps):
            p = m.plan()
            if p.evaluate:
                m.observe(step, {d: float(L[e, i, :n].mean()) for i, d in enumerate(doms)}, kind="eval")
                e += 1
                p = m.plan()
            if not ps or p.domain_weights != ps[-1]:
                ps.append(p.domain_weights)
            m.observe(step, {}, kind="train")
        rounds[n] = np.array([[w[d] for d in doms] for w in ps[1:]])  # the start left out
    u = np.full(len(doms), 1 / len(doms))
    print(f"{args.preset}, {spec.steps} steps, seed {args.seed}: {L.shape[0]} evaluations, {len(rounds[n_max])} "
          f"Aioli updates; final mean loss {np.mean([res.losses[d] for d in doms]):.4f}")
    print("  p^t moved from the start (L1) per round:", " ".join(f"{x:.4f}" for x in np.abs(rounds[n_max] - u).sum(1)))
    for n in SIZES[:-1]:
        d = np.abs(rounds[n] - rounds[n_max]).sum(1)
        print(f"  {n:>2} sequences: L1 to the {n_max}-sequence p^t per round "
              + " ".join(f"{x:.4f}" for x in d) + f"   (max {d.max():.4f})")


if __name__ == "__main__":
    main()
