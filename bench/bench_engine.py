"""Batched proxy engine: aggregate tokens/s and MFU of K proxies per step vs one proxy per process.

For each preset, times today's path (one proxy: ``build_model`` + ``make_optimizer`` +
``train_step`` with its per-step ``.item()``, as ``run_trial`` trains) and the pack engine
(``mixopt.proxies.pack_train.PackTrainer``: K members, one forward/backward, per-member clip and
AdamW, no host sync per step) at each K, on random tokens (no corpus), same device, threads,
preset, batch and sequence length. MFU is model FLOPs/s (``flops_per_token`` x tokens/s, all K
together) over a matmul peak measured in the same run: fp32 ``torch.mm`` on CPU, bf16 on CUDA.
The last columns project RegMix's sweep (512 proxies x 1B tokens) in device-hours at the
measured rate (GPU-hours on CUDA; on CPU, hours of this many threads).

Timing: for each (preset, K) solo and pack steps alternate for ``--rounds`` rounds of
``--steps`` steps. On CPU every step is timed: "best step" is the least disturbed step (the
machine's speed when idle; the solo best is over all of a preset's solo steps, which favours
solo) and "median step" the typical one on a busy host (where every core runs a worker, as
one-proxy-per-process does: memory-bound kernels then slow down most). "x CPU-t" is the
best-step ratio in process-CPU seconds (least sensitive to preemption; JSON has the rates).
On CUDA a rate is the mean over a round with one sync at its end (the engine overlaps host and
device). MFU and RegMix hours use the best step (CPU) or the mean (CUDA). Setup is timed apart
from the steady state: ``build_s`` (the pack built from K solo inits), ``first_step_s`` (its first
step alone: on CUDA ``torch.compile`` traces and compiles there) and ``compile_s`` (that first
step less one steady step). A preset's packs stop at the first K that runs out of memory (the
larger ones are reported as not run). On CPU the whole run
keeps freed large blocks in glibc's heap (``reuse_large_allocations``, what the engine does on
CPU), solo included ("mallopt" in the header). On CPU, each dense preset gets a ceiling line:
the tokens/s of its matmul and attention kernels alone at its shapes (``kernel_bound``): no
engine can gain more over solo on this core.

Needs torch and numpy only (imports mixopt.core / mixopt.proxies straight from the checkout
when mixopt is not installed, e.g. on a bare GPU machine):

    python bench/bench_engine.py --device cpu --threads 1 --packs 1,16 --presets dense-0.1m,dense-1m,moe-1m --steps 3
    python bench/bench_engine.py --device cuda --json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
REGMIX_PROXIES, REGMIX_TOKENS = 512, 1_000_000_000


def _import_engine() -> None:
    """Import mixopt.proxies; on a bare machine map the checkout's folders like setuptools does."""
    try:
        import mixopt.proxies.pack_train  # noqa: F401
        return
    except ImportError:
        for name in [m for m in sys.modules if m == "mixopt" or m.startswith("mixopt.")]:
            del sys.modules[name]
    for name, path in (("mixopt", ROOT / "mixopt"), ("mixopt.proxies", ROOT / "proxies")):
        mod = types.ModuleType(name)
        mod.__path__ = [str(path)]  # a namespace: skips mixopt/__init__ (study, pandas, ...)
        sys.modules[name] = mod
    import mixopt.proxies.pack_train  # noqa: F401


_import_engine()
from mixopt.core.spec import ProxySpec  # noqa: E402
from mixopt.proxies.model import build_model, lr_at, make_optimizer  # noqa: E402
from mixopt.proxies.pack_train import PackTrainer, reuse_large_allocations  # noqa: E402
from mixopt.proxies.train import train_step  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Clock:
    """Wall and process-CPU seconds since ``start()`` (CPU time: robust to a shared, busy host)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def start(self) -> None:
        sync(self.device)
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self) -> tuple[float, float]:
        sync(self.device)
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def matmul_peak(device: torch.device, repeats: int = 10, n: int | None = None) -> tuple[float, float, str]:
    """Best-of-``repeats`` FLOPs/s of a square matmul: fp32 2048^3 on CPU, bf16 8192^3 on CUDA (or n^3).

    On CUDA each of the ``repeats`` samples is 10 back-to-back matmuls with one sync (a lone
    8192^3 matmul takes about a millisecond on an H100, the size of a sync's own cost).
    -> (FLOPs per wall second, FLOPs per process-CPU second, what was measured).
    """
    size, dt = (2048, torch.float32) if device.type == "cpu" else (8192, torch.bfloat16)
    n = n or size
    per = 1 if device.type == "cpu" else 10
    a, b = torch.randn(n, n, device=device, dtype=dt), torch.randn(n, n, device=device, dtype=dt)
    out = torch.mm(a, b)
    for _ in range(3 * per - 1):  # clocks and caches up
        torch.mm(a, b, out=out)
    clock, wall, cpu = Clock(device), float("inf"), float("inf")
    for _ in range(repeats):
        clock.start()
        for _ in range(per):
            torch.mm(a, b, out=out)
        w, c = clock.stop()
        wall, cpu = min(wall, w / per), min(cpu, c / per)
    return 2 * n**3 / wall, 2 * n**3 / cpu, f"{str(dt).removeprefix('torch.')} mm {n}^3"


def kernel_bound(model: torch.nn.Module, spec: ProxySpec, repeats: int = 10) -> float | None:
    """Tokens/s one CPU step would reach if it were nothing but its matmul and attention kernels.

    Times, forward + backward at the model's own shapes (B*T rows): ``F.linear`` for each of its
    ``nn.Linear`` layers (tied lm-head included) and ``F.scaled_dot_product_attention`` (causal,
    the kernel both paths use) per layer, best of ``repeats``. Norms, activations, the softmax of
    the cross-entropy and the optimizer count as free, so no engine can beat this on this core.
    None for MoE (expert matmuls take data-dependent shapes).
    """
    if any(p.dim() == 3 for p in model.parameters()):
        return None
    F, N = torch.nn.functional, spec.batch_size * spec.seq_len
    shapes = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    total = 0.0
    for i, o in set(shapes):
        x, w, g = torch.randn(N, i, requires_grad=True), torch.randn(o, i, requires_grad=True), torch.randn(N, o)
        total += _best(lambda: F.linear(x, w).backward(g), repeats) * shapes.count((i, o))  # noqa: B023
    hs = spec.d_model // spec.n_head
    q, k, v = (torch.randn(spec.batch_size, spec.n_head, spec.seq_len, hs, requires_grad=True) for _ in range(3))
    g = torch.randn_like(q)
    total += _best(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(g), repeats) * spec.n_layer
    return N / total


def _best(fn: Callable[[], None], repeats: int) -> float:
    """Least wall seconds of one call over ``repeats`` (after two untimed calls), on CPU."""
    cpu = torch.device("cpu")
    timed(fn, 2, cpu)
    return min(w for w, _ in timed(fn, repeats, cpu))


def bench_spec(preset: str, args: argparse.Namespace, seed: int = 0) -> ProxySpec:
    steps = args.warmup + args.rounds * args.steps
    return ProxySpec(preset=preset, seq_len=args.seq_len, batch_size=args.batch_size,
                     tokens=args.seq_len * args.batch_size * steps, seed=seed)


def timed(step: Callable[[], None], n: int, device: torch.device) -> list[tuple[float, float]]:
    """Run ``step`` n times -> [(wall, CPU) seconds per step].

    CPU: one sample per step. CUDA: one sample, total / n, with one sync at the end (the engine
    overlaps host and GPU; a sync per step would hide that).
    """
    clock = Clock(device)
    if device.type == "cuda":
        clock.start()
        for _ in range(n):
            step()
        wall, cpu = clock.stop()
        return [(wall / n, cpu / n)]
    out = []
    for _ in range(n):
        clock.start()
        step()
        out.append(clock.stop())
    return out


def rates(samples: list[tuple[float, float]], tokens: int) -> dict[str, float]:
    """Tokens/s of the best and the median step, by wall clock and by process CPU time."""
    wall, cpu = sorted(w for w, _ in samples), sorted(c for _, c in samples)
    return {"best": tokens / wall[0], "median": tokens / wall[len(wall) // 2],
            "cpu_best": tokens / cpu[0], "cpu_median": tokens / cpu[len(cpu) // 2]}


class Solo:
    """Today's path: one model, fused AdamW, clip, ``.item()`` per step (as ``run_trial`` trains)."""

    def __init__(self, preset: str, args: argparse.Namespace, device: torch.device) -> None:
        self.spec = bench_spec(preset, args)
        torch.manual_seed(0)
        self.model = build_model(self.spec, args.vocab).to(device)
        self.opt = make_optimizer(self.model, self.spec)
        self.data = torch.randint(0, args.vocab, (2, self.spec.batch_size, self.spec.seq_len + 1), device=device)
        self.i = 0
        self.tokens_per_step = self.spec.batch_size * self.spec.seq_len

    def step(self) -> None:
        b = self.data[self.i % len(self.data)]
        train_step(self.model, self.opt, b[:, :-1], b[:, 1:], lr_at(min(self.i, self.spec.steps - 1), self.spec)).item()
        self.i += 1


class Pack:
    """The pack engine at K members (seeds 0..K-1) on random tokens."""

    def __init__(self, preset: str, K: int, args: argparse.Namespace, device: torch.device) -> None:
        if hasattr(torch, "_dynamo"):
            torch._dynamo.reset()  # a fresh compile cache per pack (no recompile limit across packs)
        self.trainer = PackTrainer([bench_spec(preset, args, seed=k) for k in range(K)], args.vocab, device,
                                   dispatch=args.dispatch, compile=args.compile)
        self.data = torch.randint(0, args.vocab, (2, K, args.batch_size, args.seq_len + 1), device=device)
        self.i = 0
        self.tokens_per_step = K * args.batch_size * args.seq_len

    def step(self) -> None:
        b = self.data[self.i % len(self.data)]
        self.trainer.step(b[..., :-1], b[..., 1:])  # no host sync
        self.i += 1

    @property
    def label(self) -> str:
        t = self.trainer
        dispatch = next((b.moe.dispatch for b in t.pack.blocks if hasattr(b, "moe")), "-")
        return f"{dispatch}/{'compiled' if t._compiled is not None else 'eager'}"


def measure(preset: str, K: int, solo: Solo, args: argparse.Namespace, device: torch.device
            ) -> tuple[list[tuple[float, float]], list[tuple[float, float]], str, dict[str, float]]:
    """Alternate rounds of solo and pack steps -> (solo samples, pack samples, engine label, setup times).

    Setup times (seconds): ``build_s`` builds the pack (K solo inits copied in, moved to the device),
    ``first_step_s`` is its first step alone (on CUDA: tracing and compiling the step, then running it).
    """
    t0 = time.perf_counter()
    pack = Pack(preset, K, args, device)
    build_s = time.perf_counter() - t0
    first_step_s = timed(pack.step, 1, device)[0][0] if device.type == "cuda" else sum(
        w for w, _ in timed(pack.step, 1, device))
    if args.warmup > 1:
        timed(pack.step, args.warmup - 1, device)  # the rest of the warm-up
    timed(solo.step, args.warmup, device)
    s_samples, p_samples = [], []
    for _ in range(args.rounds):
        s_samples += timed(solo.step, args.steps, device)
        p_samples += timed(pack.step, args.steps, device)
    return s_samples, p_samples, pack.label, {"build_s": build_s, "first_step_s": first_step_s}


def pack_tokens(K: int, args: argparse.Namespace) -> int:
    return K * args.batch_size * args.seq_len


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--presets", default="dense-0.1m,dense-1m,dense-10m,moe-1m,moe-3m")
    ap.add_argument("--packs", default="1,8,32,128", help="pack sizes K, comma-separated")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per round")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 1 CPU, 3 CUDA)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating solo / pack rounds per (preset, K)")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--dispatch", default="auto", help="MoE dispatch: auto, grouped, loop, dense")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="torch.compile the pack forward (default: on CUDA only)")
    ap.add_argument("--json", action="store_true", help="one JSON object per (preset, K) line")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.warmup is None:
        args.warmup = 1 if device.type == "cpu" else 3
    packs = [int(k) for k in args.packs.split(",")]
    peak, peak_cpu, peak_what = matmul_peak(device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads"
    unit = "GPU-h" if device.type == "cuda" else "CPU-h"
    # what the engine does on CPU; done first so that solo runs under it too
    mallopt = device.type == "cpu" and reuse_large_allocations()
    if not args.json:
        print(f"{name}, torch {torch.__version__}, peak {peak_what}: {peak / 1e9:,.1f} GFLOP/s; B={args.batch_size} "
              f"T={args.seq_len} V={args.vocab}, {args.rounds} x {args.steps} timed steps per (preset, K)"
              f"{', mallopt' if mallopt else ''}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        what = "best step" if device.type == "cpu" else "mean"
        print(f"{'':16}{what + ' tok/s':^29}{'median step tok/s' if device.type == 'cpu' else '':^29}")
        print(f"{'preset':<11}{'K':>5}{'pack':>11}{'solo':>11}{'x':>7}" + (f"{'pack':>11}{'solo':>11}{'x':>7}{'x CPU-t':>8}"
              if device.type == "cpu" else "") + f"{'MFU':>7}{'solo':>7}{'RegMix ' + unit:>13}{'solo':>11}  engine")
    for preset in args.presets.split(","):
        solo = Solo(preset, args, device)
        fpt = solo.spec.flops_per_token(args.vocab)
        timed(solo.step, args.warmup, device)
        solo_samples = timed(solo.step, args.steps, device)
        bound = kernel_bound(solo.model, solo.spec) if device.type == "cpu" else None
        results: dict[int, tuple[list, str, dict] | str] = {}
        for K in packs:
            if any(isinstance(r, str) for r in results.values()):  # a larger pack would not fit either
                results[K] = "not run: a smaller pack ran out of memory"
                continue
            try:
                s, p, label, setup = measure(preset, K, solo, args, device)
                solo_samples += s
                results[K] = (p, label, setup)
            except torch.OutOfMemoryError as e:
                results[K] = f"out of memory: {str(e).splitlines()[0]}"
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        sr = rates(solo_samples, solo.tokens_per_step)  # every solo step of this preset
        for K in packs:
            row = {"preset": preset, "device": args.device, "device_name": name, "K": K,
                   "threads": torch.get_num_threads(), "flops_per_token": fpt, "peak_flops": peak,
                   "peak": peak_what, "solo_tokens_per_s": sr["best"], "solo_mfu": fpt * sr["best"] / peak,
                   "solo_regmix_hours": REGMIX_PROXIES * REGMIX_TOKENS / sr["best"] / 3600,
                   "tokens_per_s": None, "mfu": None, "kernel_bound_tokens_per_s": bound}
            if device.type == "cpu":
                row |= {"solo_tokens_per_s_median": sr["median"], "solo_tokens_per_cpu_s": sr["cpu_best"],
                        "peak_flops_per_cpu_s": peak_cpu, "solo_cpu_mfu": fpt * sr["cpu_best"] / peak_cpu}
            if isinstance(results[K], str):
                row["error"] = results[K]
            else:
                samples, label, setup = results[K]
                pr = rates(samples, pack_tokens(K, args))
                tps = pr["best"]
                row |= {"tokens_per_s": tps, "speedup": tps / sr["best"], "mfu": fpt * tps / peak,
                        "regmix_hours": REGMIX_PROXIES * REGMIX_TOKENS / tps / 3600, "engine": label,
                        **setup, "compile_s": max(0.0, setup["first_step_s"] - pack_tokens(K, args) / tps)}
                if device.type == "cpu":
                    row |= {"tokens_per_s_median": pr["median"], "speedup_median": pr["median"] / sr["median"],
                            "tokens_per_cpu_s": pr["cpu_best"], "speedup_cpu_time": pr["cpu_best"] / sr["cpu_best"],
                            "cpu_mfu": fpt * pr["cpu_best"] / peak_cpu}
            if args.json:
                print(json.dumps(row), flush=True)
            elif row["tokens_per_s"] is None:
                print(f"{preset:<11}{K:>5}  {row['error']}", flush=True)
            else:
                med = (f"{pr['median']:>11,.0f}{sr['median']:>11,.0f}{pr['median'] / sr['median']:>7.2f}"
                       f"{row['speedup_cpu_time']:>8.2f}" if device.type == "cpu" else "")
                print(f"{preset:<11}{K:>5}{tps:>11,.0f}{sr['best']:>11,.0f}{row['speedup']:>7.2f}{med}"
                      f"{row['mfu']:>7.1%}{row['solo_mfu']:>7.1%}{row['regmix_hours']:>13,.0f}"
                      f"{row['solo_regmix_hours']:>11,.0f}  {label}, first step {row['first_step_s']:.2f} s",
                      flush=True)
        if bound and not args.json:
            print(f"{'':16}{preset} ceiling: its matmul + attention kernels alone (fwd + bwd at its shapes, "
                  f"timed here) run {bound:,.0f} tok/s = {bound / sr['best']:.2f}x solo ({fpt * bound / peak:.0%} MFU)",
                  flush=True)


if __name__ == "__main__":
    main()
