"""Part (a) of the GPU suite (``bench/gpu_suite.py``): the batched engine's speed per preset and pack size.

Reuses ``bench_engine``: ``Solo`` (one proxy as ``run_trial`` trains it: fp32, a host sync per step),
``Pack`` (``PackTrainer`` on random tokens), ``timed``, ``rates`` and ``matmul_peak`` (the bf16 peak
measured on the device). Per (preset, K) one pack is built (``build_s``) and timed eager, then
compiled: its first compiled step alone (``compile_s`` = that step less one steady step) and the
steady state. tokens/s is the mean over the timed steps with one sync at their end (CUDA), or
the best step (CPU). On CUDA one more step of each runs under ``torch.cuda.set_sync_debug_mode``
and counts the host syncs it makes (``*_syncs_per_step``; the engine's step should make none).
MFU is model FLOPs/s over the measured matmul peak (``mfu``) and over the datasheet's dense bf16
peak where the device is known (``mfu_spec``).

Time: presets run in the order given (the most wanted first), each K largest first, so a pack
that runs out of memory is reported and the smaller ones still run. Every preset's eager sweep
is reserved before any optional compile: the first K that fits gets compiled while the later
presets' sweeps still fit before the part's deadline, the others only while the later presets'
first compiles fit too (costs not timed yet are guessed: 5 % eager MFU, 10 ns per parameter built,
45 s per compile on CUDA). What did not fit is reported as skipped, with the reason.
"""

from __future__ import annotations

import argparse
import gc
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import bench_engine as be
import torch

#: datasheet dense bf16 peaks (FLOP/s) by device name, first match wins (NVIDIA H100/H200/A100 datasheets)
SPEC_BF16 = (("H200 NVL", 835e12), ("H200", 989e12), ("GH200", 989e12), ("H100 NVL", 835e12),
             ("H100 PCIe", 756e12), ("H100", 989e12), ("H800", 989e12), ("A100", 312e12))
COMPILE_GUESS_S = {"cuda": 45.0, "cpu": 8.0}  # a compile's cost before one was timed in this run


def spec_peak(device_name: str) -> float | None:
    """The datasheet dense bf16 FLOP/s of a known GPU name, else None."""
    return next((v for k, v in SPEC_BF16 if k in device_name), None)


def count_syncs(step: Callable[[], None], device: torch.device) -> int | None:
    """Host syncs one call of ``step`` makes (CUDA's sync debug mode; None on CPU)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    return sum("synchroniz" in str(w.message).lower() for w in caught)


def _dynamo_counts() -> tuple[int, int]:
    """(graphs compiled, graph breaks) so far in this process, from dynamo's counters."""
    from torch._dynamo.utils import counters

    return int(counters["stats"].get("unique_graphs", 0)), int(sum(counters["graph_break"].values()))


@dataclass
class EngineResult:
    """What part (a) measured: ``rows`` (one per (preset, K), measured or not), solo rates, the peak."""

    device: str
    device_name: str
    peak_flops: float
    spec_peak_flops: float | None
    vocab: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    solo: dict[str, float] = field(default_factory=dict)
    compile_errors: list[str] = field(default_factory=list)

    def measured(self, compiled: bool) -> dict[str, dict[int, float]]:
        """{preset: {K: tokens/s}} of the packs timed eager (or compiled)."""
        key = "compiled_tokens_per_s" if compiled else "eager_tokens_per_s"
        out: dict[str, dict[int, float]] = {}
        for r in self.rows:
            if r.get(key):
                out.setdefault(r["preset"], {})[r["K"]] = r[key]
        return out

    def compile_seconds(self) -> float | None:
        """The longest compile timed in this run (None: none was)."""
        times = [r["compile_s"] for r in self.rows if r.get("compile_s") is not None]
        return max(times) if times else None


class Estimator:
    """Guesses the cost in seconds of what is not measured yet, from what is (on the safe side)."""

    BUILD_PER, MFU = 1e-8, 0.05  # seconds per (member x parameter) built, eager MFU: before anything is timed

    def __init__(self, res: EngineResult, eargs: argparse.Namespace, device: torch.device) -> None:
        self.res, self.eargs, self.device = res, eargs, device
        self.builds: list[tuple[float, float]] = []  # (members x parameters, seconds) of each pack built
        self.mfu: dict[int, float] = {}  # K -> the lowest eager MFU timed at that pack size

    def learn(self, row: dict[str, Any]) -> None:
        if row.get("build_s"):
            self.builds.append((row["K"] * be.bench_spec(row["preset"], self.eargs).params(self.res.vocab), row["build_s"]))
        if row.get("eager_mfu"):
            self.mfu[row["K"]] = min(self.mfu.get(row["K"], 1.0), row["eager_mfu"])

    def compile_s(self) -> float:
        return 1.2 * (self.res.compile_seconds() or COMPILE_GUESS_S[self.device.type])

    def eager_s(self, preset: str, K: int) -> float:
        """Build + warm-up + timed steps + the sync check of one (preset, K): the build scaled from the build
        timed nearest in size, the steps at the eager MFU timed at the nearest pack size."""
        spec = be.bench_spec(preset, self.eargs)
        near = min(self.mfu, key=lambda k: abs(math.log(k / K)), default=None)
        mfu = self.mfu[near] if near is not None else self.MFU
        step = K * spec.batch_size * spec.seq_len * spec.flops_per_token(self.res.vocab) / (mfu * self.res.peak_flops)
        steps = self.eargs.warmup + self.eargs.rounds * self.eargs.steps + 1
        size = K * spec.params(self.res.vocab)
        near = min(self.builds, key=lambda b: abs(math.log(b[0] / size)), default=(1.0, self.BUILD_PER))
        return near[1] * size / near[0] + steps * step

    def sweep_s(self, preset: str, packs: list[int]) -> float:
        """A preset's solo and eager packs."""
        return sum(self.eager_s(preset, K) for K in packs) + self.eager_s(preset, 1)


def _pack_args(eargs: argparse.Namespace) -> argparse.Namespace:
    """bench_engine's args with a schedule long enough for an eager and a compiled measurement."""
    need = 2 * eargs.warmup + 2 * eargs.rounds * eargs.steps + 4
    return argparse.Namespace(**{**vars(eargs), "rounds": math.ceil((need - eargs.warmup) / eargs.steps)})


def _steady(step: Callable[[], None], n: int, device: torch.device, tokens: int) -> float:
    """Tokens/s of ``n`` steps: the mean with one sync at the end (CUDA), the best step (CPU)."""
    return be.rates(be.timed(step, n, device), tokens)["best"]


def measure_pack(preset: str, K: int, eargs: argparse.Namespace, device: torch.device, compile_on: bool,
                 res: EngineResult) -> dict[str, Any]:
    """Build one pack, time it eager and (``compile_on``) compiled -> its row (see the module docstring)."""
    row: dict[str, Any] = {"preset": preset, "K": K}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    pack = be.Pack(preset, K, _pack_args(eargs), device)
    row["build_s"] = time.perf_counter() - t0
    trainer, n, tokens = pack.trainer, eargs.rounds * eargs.steps, be.pack_tokens(K, eargs)
    fpt = be.bench_spec(preset, eargs).flops_per_token(res.vocab)
    compiled, trainer._compiled = trainer._compiled, None  # eager first, on the same pack
    be.timed(pack.step, eargs.warmup, device)
    row["eager_tokens_per_s"] = _steady(pack.step, n, device, tokens)
    row["eager_mfu"] = fpt * row["eager_tokens_per_s"] / res.peak_flops
    row["eager_syncs_per_step"] = count_syncs(pack.step, device)
    if compile_on and compiled is not None:
        trainer._compiled = compiled
        graphs0, breaks0 = _dynamo_counts()
        first = sum(w for w, _ in be.timed(pack.step, 1, device))
        if trainer._compiled is None:
            row["compile_error"] = trainer.compile_error
            res.compile_errors.append(f"{preset} K={K}: {trainer.compile_error}")
        else:
            be.timed(pack.step, max(1, eargs.warmup - 1), device)
            rate = _steady(pack.step, n, device, tokens)
            graphs1, breaks1 = _dynamo_counts()
            row |= {"compiled_tokens_per_s": rate, "compiled_mfu": fpt * rate / res.peak_flops,
                    "first_step_s": first, "compile_s": max(0.0, first - tokens / rate),
                    "graphs": graphs1 - graphs0, "graph_breaks": breaks1 - breaks0,
                    "compiled_syncs_per_step": count_syncs(pack.step, device)}
    elif compile_on:
        row["compile_error"] = "not compiled (torch.compile unavailable)"
    best = row.get("compiled_tokens_per_s") or row["eager_tokens_per_s"]
    row |= {"tokens_per_s": best, "mfu": fpt * best / res.peak_flops, "engine": pack.label,
            "flops_per_token": fpt, "speedup_vs_solo": best / res.solo[preset] if res.solo.get(preset) else None}
    if res.spec_peak_flops:
        row["mfu_spec"] = fpt * best / res.spec_peak_flops
    if device.type == "cuda":
        row["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 1e9
    return row


def _free(device: torch.device) -> None:
    """Drop what a measurement left: compiled graphs, freed blocks held by the allocator."""
    if hasattr(torch, "_dynamo"):
        torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure_solo(preset: str, eargs: argparse.Namespace, device: torch.device) -> float:
    solo = be.Solo(preset, eargs, device)
    be.timed(solo.step, eargs.warmup, device)
    return _steady(solo.step, eargs.rounds * eargs.steps, device, solo.tokens_per_step)


def run_engine(presets: list[str], packs: list[int], eargs: argparse.Namespace, device: torch.device, end: float,
               compile_on: bool, emit: Callable[..., None], compiles_per_preset: int | None = None) -> EngineResult:
    """Part (a) until ``end`` (a ``time.perf_counter()``): rows emitted as they are measured.

    ``compiles_per_preset``: at most this many compiled measurements per preset (None: as time allows).
    """
    peak, _, what = be.matmul_peak(device, n=getattr(eargs, "peak_n", None))
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads"
    res = EngineResult(device.type, name, peak, spec_peak(name) if device.type == "cuda" else None, eargs.vocab)
    emit("engine", "peak", device_name=name, peak_flops=peak, peak=what, spec_peak_flops=res.spec_peak_flops,
         batch_size=eargs.batch_size, seq_len=eargs.seq_len, vocab=eargs.vocab, compile=compile_on)
    est = Estimator(res, eargs, device)
    order = sorted(packs, reverse=True)
    for i, preset in enumerate(presets):
        sweeps = sum(est.sweep_s(p, order) for p in presets[i + 1:])  # promised to the later presets
        if time.perf_counter() + est.eager_s(preset, 1) + sweeps > end:
            for K in order:
                emit("engine", "pack", preset=preset, K=K, skipped="time: the engine part's deadline")
            continue
        res.solo[preset] = measure_solo(preset, eargs, device)
        emit("engine", "solo", preset=preset, tokens_per_s=res.solo[preset],
             mfu=be.bench_spec(preset, eargs).flops_per_token(res.vocab) * res.solo[preset] / peak)
        _free(device)
        fitted, compiled = False, 0  # a pack of this preset ran: its further compiles are optional
        for j, K in enumerate(order):
            sweeps = sum(est.sweep_s(p, order) for p in presets[i + 1:])
            compiles = est.compile_s() * len(presets[i + 1:]) if compile_on else 0.0
            now, eager = time.perf_counter(), est.eager_s(preset, K)
            if now + eager + sweeps > end:
                row = {"preset": preset, "K": K, "skipped": "time: the engine part's deadline"}
            else:
                slack = end - now - eager - sum(est.eager_s(preset, k) for k in order[j + 1:]) - sweeps - est.compile_s()
                capped = compiles_per_preset is not None and compiled >= compiles_per_preset
                want = compile_on and not capped and slack >= (compiles if fitted else 0.0)
                compiled += want
                try:
                    row = measure_pack(preset, K, eargs, device, want, res)
                    fitted = True
                    if compile_on and not want:
                        row["compile_skipped"] = (f"{compiles_per_preset} compile(s) per preset" if capped
                                                  else "time: kept for the later presets")
                except torch.OutOfMemoryError as e:
                    row = {"preset": preset, "K": K, "error": f"out of memory: {str(e).splitlines()[0][:200]}"}
                _free(device)
            res.rows.append(row)
            est.learn(row)
            emit("engine", "pack", **row)
    return res
