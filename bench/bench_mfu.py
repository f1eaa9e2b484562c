"""MFU of the proxy training step on CPU: model FLOPs/s over a dense fp32 matmul's FLOPs/s.

Trains on random tokens with the real training step (``mixopt.proxies.train.train_step``, fused
AdamW, grad clip) after warm-up steps, and measures a large ``torch.mm`` with the same thread
count in the same run. Target: MFU >= 40% at d_model >= 128 with one thread (= one worker).

    .venv/bin/python bench/bench_mfu.py --threads 1 --steps 6 --presets dense-1m dense-3m
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mixopt.core.spec import ProxySpec  # noqa: E402
from mixopt.proxies.gpt import GPT, GPTConfig  # noqa: E402
from mixopt.proxies.model import lr_at, make_optimizer  # noqa: E402
from mixopt.proxies.train import train_step  # noqa: E402


def matmul_flops_per_s(n: int, repeats: int) -> float:
    """Best-of-``repeats`` fp32 FLOPs/s of an (n, n) @ (n, n) matmul."""
    a, b, out = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    torch.mm(a, b, out=out)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def train_flops_per_s(spec: ProxySpec, vocab: int, steps: int, warmup: int) -> tuple[GPT, float]:
    """Model FLOPs/s of the training step on random tokens -> (model, FLOPs/s)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_spec(spec, vocab))
    opt = make_optimizer(model, spec)
    data = torch.randint(0, vocab, (4, spec.batch_size, spec.seq_len + 1))  # a few batches
    for s in range(warmup + steps):
        if s == warmup:
            t0 = time.perf_counter()
        b = data[s % len(data)]
        train_step(model, opt, b[:, :-1], b[:, 1:], lr_at(s, spec)).item()
    tokens_per_s = steps * spec.batch_size * spec.seq_len / (time.perf_counter() - t0)
    return model, spec.flops_per_token(vocab) * tokens_per_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per preset")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--presets", nargs="+", default=["dense-1m", "dense-3m"])
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--mm-size", type=int, default=2048)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    peak = matmul_flops_per_s(args.mm_size, repeats=3)
    print(f"threads={args.threads} torch={torch.__version__} "
          f"matmul {args.mm_size}^3 fp32: {peak / 1e9:.1f} GFLOP/s")
    print(f"{'preset':<11}{'d':>5}{'params':>11}{'non-emb':>10}{'FLOPs/tok':>12}"
          f"{'tok/s':>9}{'GFLOP/s':>9}{'MFU':>7}")
    for preset in args.presets:
        spec = ProxySpec(preset=preset, seq_len=args.seq_len, batch_size=args.batch_size,
                         tokens=args.seq_len * args.batch_size * (args.steps + args.warmup))
        model, fps = train_flops_per_s(spec, args.vocab, args.steps, args.warmup)
        fpt = spec.flops_per_token(args.vocab)
        print(f"{preset:<11}{spec.d_model:>5}{spec.params(args.vocab):>11,}"
              f"{spec.non_embedding_params():>10,}{fpt:>12,}{fps / fpt:>9,.0f}"
              f"{fps / 1e9:>9.1f}{fps / peak:>7.1%}")


if __name__ == "__main__":
    main()
