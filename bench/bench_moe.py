"""MoE proxy throughput in active-FLOPs/s as a fraction of the dense proxy's, at equal active params.

Pairs a dense preset with an MoE preset on the same backbone (d_model, layers, heads) whose
active non-embedding params match within a few percent, and times the real training step
(``mixopt.proxies.train.train_step``: forward, aux losses, backward, clip, fused AdamW) on random
tokens with the same seq_len, batch and thread count. Each model is timed in ``--rounds``
alternating rounds of ``--steps`` steps after warm-up; the best round counts (the CPU is
shared). Target: ratio >= 0.7.

    .venv/bin/python bench/bench_moe.py --threads 1 --steps 5 --rounds 3 --pairs dense-1m:moe-1m
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mixopt.core.spec import ProxySpec  # noqa: E402
from mixopt.proxies.model import build_model, lr_at, make_optimizer  # noqa: E402
from mixopt.proxies.train import train_step  # noqa: E402


class Timed:
    """A model, its optimizer and a few random batches; ``run(n)`` -> seconds for n steps."""

    def __init__(self, spec: ProxySpec, vocab: int) -> None:
        torch.manual_seed(0)
        self.spec, self.model = spec, build_model(spec, vocab)
        self.opt = make_optimizer(self.model, spec)
        self.data = torch.randint(0, vocab, (4, spec.batch_size, spec.seq_len + 1))
        self.step = 0

    def run(self, n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            b = self.data[self.step % len(self.data)]
            train_step(self.model, self.opt, b[:, :-1], b[:, 1:], lr_at(self.step, self.spec)).item()
            self.step += 1
        return time.perf_counter() - t0


def row(name: str, spec: ProxySpec, vocab: int, tok_s: float) -> str:
    fpt = spec.flops_per_token(vocab)
    return (f"{name:<11}{spec.params(vocab):>11,}{spec.active_params(vocab):>11,}"
            f"{spec.active_non_embedding_params():>11,}{fpt:>12,}{tok_s:>9,.0f}{fpt * tok_s / 1e9:>9.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--pairs", nargs="+", default=["dense-1m:moe-1m"], help="DENSE:MOE preset pairs")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--capacity-factor", type=float, default=0.0, help="MoE capacity (0 = none)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads={args.threads} torch={torch.__version__} B={args.batch_size} T={args.seq_len} "
          f"V={args.vocab} capacity_factor={args.capacity_factor}")
    for pair in args.pairs:
        dense_name, moe_name = pair.split(":")
        common = dict(seq_len=args.seq_len, batch_size=args.batch_size, tokens=args.seq_len * args.batch_size)
        dense = Timed(ProxySpec(preset=dense_name, **common), args.vocab)
        moe = Timed(ProxySpec(preset=moe_name, capacity_factor=args.capacity_factor, **common), args.vocab)
        s = moe.spec
        print(f"\n{pair}: d={s.d_model} L={s.n_layer} E={s.n_experts} top_k={s.top_k} G={s.granularity} "
              f"shared={s.shared_expert}  active non-emb {s.active_non_embedding_params():,} vs dense "
              f"{dense.spec.non_embedding_params():,} "
              f"({s.active_non_embedding_params() / dense.spec.non_embedding_params() - 1:+.1%})")
        best = {"dense": float("inf"), "moe": float("inf")}
        for t in (dense, moe):
            t.run(args.warmup)
        for _ in range(args.rounds):  # alternate, so both see the same background load
            best["dense"] = min(best["dense"], dense.run(args.steps))
            best["moe"] = min(best["moe"], moe.run(args.steps))
        tokens = args.steps * args.batch_size * args.seq_len
        tok_s = {k: tokens / v for k, v in best.items()}
        print(f"{'model':<11}{'params':>11}{'active':>11}{'act.non-e':>11}{'FLOPs/tok':>12}"
              f"{'tok/s':>9}{'GFLOP/s':>9}")
        print(row(dense_name, dense.spec, args.vocab, tok_s["dense"]))
        print(row(moe_name, moe.spec, args.vocab, tok_s["moe"]))
        ratio = (moe.spec.flops_per_token(args.vocab) * tok_s["moe"]) / (dense.spec.flops_per_token(args.vocab)
                                                                         * tok_s["dense"])
        print(f"active-FLOPs/s ratio MoE/dense: {ratio:.2f}  (aim >= 0.7)")


if __name__ == "__main__":
    main()
