"""The engine's and the transfer's GPU figures from one prepared command (issue 23), JSON lines + a table.

Prepare here (builds or reuses the corpus, copies it into an ignored folder to carry, <= 60 MB
with the source, and prints the device command)::

    python bench/gpu_suite.py --prepare build/gpu            # debian recipe, BPE 4096, 4 MB per domain

Run on the GPU node (torch, botorch, pandas, scikit-learn, tokenizers, pyyaml; no install of
mixopt, no ray/mlflow/lightgbm/safetensors/matplotlib, no network), from the checkout's root::

    PYTHONUNBUFFERED=1 python3 bench/gpu_suite.py --device cuda --corpus build/gpu/corpus --budget-s 540 --out "$OUT"

(with the device tool: carry ["build/gpu"], timeout_s 600; 52.7 MB of corpus + 1.5 MB of source travel).

Rehearse on CPU (the same code paths at toy size, a tiny corpus of its own; tests/bench)::

    python bench/gpu_suite.py --device cpu --tiny

Parts, each timed, each line ``{"part": ..., "kind": ..., ...}`` on stdout (and ``--out``/suite.jsonl):

a. engine (``gpu_suite_engine``): presets x packs, eager and compiled tokens/s, solo tokens/s,
   MFU against the bf16 peak measured here (and the datasheet's), compile time apart from the
   steady state, host syncs per step, peak memory; until ``--engine-share`` of the budget.
b. transfer (``gpu_suite_transfer``): a RegMix study of >= 64 proxies at >= 50 tokens per
   parameter, its recommendation, uniform and natural at ~10x the size with 3 paired seeds, the
   paired table as ``mixopt transfer`` prints it; sized from part (a)'s rates to fit the time left.
c. times of each part, the issue's targets checked, and the final table. A deadline is checked
   between packs, trials and steps; SIGTERM (``timeout``) also ends it with the table of what finished.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ (run as a script or through runpy)
from checkout import ROOT, use_checkout  # noqa: E402

T_START = time.perf_counter()
CARRY_LIMIT = 60_000_000  # bytes a device call may carry, with room under its 64 MiB


class Stopped(BaseException):
    """SIGTERM: stop now and report what finished (a BaseException: no ``except Exception`` on the way swallows it)."""


class Reporter:
    """JSON lines on stdout (and ``out/suite.jsonl``); progress lines on stderr (and ``out/progress.log``)."""

    def __init__(self, out: Path | None) -> None:
        self.out, self.lines = out, []
        if out:
            out.mkdir(parents=True, exist_ok=True)
            for f in ("suite.jsonl", "progress.log", "table.txt"):
                (out / f).write_text("")

    def emit(self, part: str, kind: str, **fields: Any) -> None:
        line = {"part": part, "kind": kind, "t": round(time.perf_counter() - T_START, 2), **fields}
        self.lines.append(line)
        text = json.dumps(_plain(line))
        print(text, flush=True)
        if self.out:
            with open(self.out / "suite.jsonl", "a") as f:
                f.write(text + "\n")

    def log(self, msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)
        if self.out:
            with open(self.out / "progress.log", "a") as f:
                f.write(msg + "\n")

    def of(self, part: str, kind: str) -> list[dict[str, Any]]:
        return [x for x in self.lines if x["part"] == part and x["kind"] == kind]


def _plain(x: Any) -> Any:
    """JSON-able: NaN and infinities as null, numpy scalars as numbers, tuples as lists."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


# --- preparing here ------------------------------------------------------------------------------
def tiny_corpus(folder: Path):
    """A toy corpus for the rehearsal: 3 domains of random words from distinct vocabularies, bytes tokenizer."""
    from mixopt.data import prepare_corpus

    words = {"code": "def return import class self for in if else while print lambda yield none".split(),
             "legal": "license warranty permission copyright holder liability notice software granted".split(),
             "prose": "the king and queen walked into a quiet garden where birds sang of summer rain".split()}
    rng = random.Random(0)
    for d, vocab in words.items():
        (folder / "docs" / d).mkdir(parents=True, exist_ok=True)
        for i in range(12):
            (folder / "docs" / d / f"doc{i:02d}.txt").write_text(" ".join(rng.choice(vocab) for _ in range(300)))
    return prepare_corpus(str(folder / "docs"), tokenizer="bytes", cache_dir=folder / "cache", progress=lambda _: None)


def prepare(args: argparse.Namespace) -> int:
    """``--prepare DIR``: the corpus copied into DIR/corpus (plain files), its size checked, the device command."""
    from mixopt.data import prepare_corpus

    dest = Path(args.prepare).resolve()
    corpus = prepare_corpus(args.recipe, tokenizer=args.tokenizer, vocab_size=args.vocab_size,
                            max_bytes_per_domain=int(args.max_mb_per_domain * 1_000_000))
    files = ["manifest.json"] + ([corpus.manifest["tokenizer"]["file"]] if corpus.manifest["tokenizer"].get("file")
                                 else []) + [f"{d}/{s}.bin" for d in corpus.domains for s in ("train", "val")]
    shutil.rmtree(dest / "corpus", ignore_errors=True)
    for f in files:
        (dest / "corpus" / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(corpus.path / f, dest / "corpus" / f)
    size = sum((dest / "corpus" / f).stat().st_size for f in files)
    source = _source_bytes()
    rel = dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else None
    print(f"corpus {corpus.path} ({len(corpus.domains)} domains, {sum(corpus.token_counts('train').values()):,} train "
          f"tokens, vocab {corpus.vocab_size}) -> {dest / 'corpus'}: {size / 1e6:.1f} MB; source {source / 1e6:.1f} MB")
    if size + source > CARRY_LIMIT:
        print(f"too large to carry: {(size + source) / 1e6:.1f} MB > {CARRY_LIMIT / 1e6:.0f} MB; lower "
              "--max-mb-per-domain", file=sys.stderr)
        return 2
    if rel is None or not _ignored(rel):
        print(f"note: {dest} should be a git-ignored folder inside {ROOT} (e.g. build/gpu) to be carried", file=sys.stderr)
    where = rel or dest
    print("device command (run from the checkout's root; carry " + json.dumps([str(where)]) + ", timeout_s 600):")
    print(f"  PYTHONUNBUFFERED=1 python3 bench/gpu_suite.py --device cuda --corpus {where}/corpus --budget-s 540 "
          "--out \"$OUT\"")
    return 0


def _source_bytes() -> int:
    """Bytes of the files that travel with the checkout (tracked or untracked, not ignored)."""
    try:
        names = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                               check=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        return 0
    return sum((ROOT / n).stat().st_size for n in names if n and (ROOT / n).is_file())


def _ignored(rel: Path) -> bool:
    try:
        return subprocess.run(["git", "check-ignore", "-q", str(rel)], cwd=ROOT).returncode == 0
    except OSError:
        return False


# --- the run --------------------------------------------------------------------------------------
def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    ap.add_argument("--corpus", help="a prepared corpus folder (default with --tiny: a toy corpus made here)")
    ap.add_argument("--budget-s", type=float, default=None, help="wall seconds for everything (default 540; tiny 300)")
    ap.add_argument("--out", help="folder for suite.jsonl, progress.log, table.txt")
    ap.add_argument("--tiny", action="store_true", help="toy sizes: the CPU rehearsal of every code path")
    ap.add_argument("--parts", default="engine,transfer")
    ap.add_argument("--presets", default=None, help="engine presets, most wanted first")
    ap.add_argument("--packs", default=None, help="engine pack sizes K")
    ap.add_argument("--engine-share", type=float, default=0.4, help="share of the budget the engine part may use")
    ap.add_argument("--compile", default=None, help="torch.compile backend, or 'off' (default: inductor on CUDA, "
                    "aot_eager on CPU)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: up to 16 on CUDA, 1 on CPU)")
    ap.add_argument("--max-epochs", type=float, default=4.0, help="repetition cap of the transfer's space (target's tokens)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--seq-len", type=int, default=None)
    ap.add_argument("--prepare", metavar="DIR", help="prepare the corpus to carry into DIR and print the device command")
    ap.add_argument("--recipe", default="debian")
    ap.add_argument("--tokenizer", default="bpe")
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--max-mb-per-domain", type=float, default=4.0)
    args = ap.parse_args(argv)
    tiny = args.tiny
    args.budget_s = args.budget_s or (300.0 if tiny else 540.0)
    args.presets = (args.presets or ("dense-3k,moe-0.1m" if tiny else "dense-1m,dense-10m,moe-1m,moe-3m,dense-0.1m")
                    ).split(",")
    args.packs = [int(k) for k in (args.packs or ("1,4" if tiny else "1,8,32,128")).split(",")]
    args.batch_size = args.batch_size or (4 if tiny else 16)
    args.seq_len = args.seq_len or (32 if tiny else 128)
    args.threads = args.threads or (min(16, os.cpu_count() or 1) if args.device == "cuda" else 1)
    args.compile = (args.compile or ("inductor" if args.device == "cuda" else "aot_eager"))
    args.compile = False if args.compile == "off" else args.compile
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    use_checkout()
    if args.prepare:
        return prepare(args)
    rep = Reporter(Path(args.out) if args.out else None)
    signal.signal(signal.SIGTERM, _on_term)
    times: dict[str, float] = {}
    state: dict[str, Any] = {"stopped": None}
    try:
        run(args, rep, times, state)
    except Stopped:
        state["stopped"] = "SIGTERM"
        rep.emit("suite", "stopped", reason="SIGTERM: the run's time limit")
    import gpu_suite_report

    t = time.perf_counter()
    text = gpu_suite_report.final(rep, args, times, state)
    times["report"] = time.perf_counter() - t
    rep.emit("suite", "times", **{f"{k}_s": v for k, v in times.items()}, total_s=time.perf_counter() - T_START,
             budget_s=args.budget_s, stopped=state["stopped"])
    print(text, flush=True)
    if rep.out:
        (rep.out / "table.txt").write_text(text + "\n")
    return 0


def _on_term(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second one ends the process
    raise Stopped()


def run(args: argparse.Namespace, rep: Reporter, times: dict[str, float], state: dict[str, Any]) -> None:
    t = time.perf_counter()
    import torch
    from gpu_suite_engine import run_engine
    from gpu_suite_transfer import Sizes, choose, run_transfer, sample_seconds

    from mixopt.data import Corpus

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    torch.set_num_threads(args.threads)
    end = T_START + args.budget_s
    tmp = None
    if args.corpus:
        corpus = Corpus.open(args.corpus)
    elif args.tiny:
        tmp = tempfile.TemporaryDirectory(prefix="gpu-suite-")
        corpus = tiny_corpus(Path(tmp.name))
    else:
        raise SystemExit("--corpus: give the prepared corpus folder (bench/gpu_suite.py --prepare DIR makes one)")
    state["device_name"] = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    rep.emit("suite", "setup", device=args.device, device_name=state["device_name"], torch=torch.__version__,
             cuda=torch.version.cuda, python=sys.version.split()[0], mixopt=str(ROOT), budget_s=args.budget_s,
             tiny=args.tiny, compile=args.compile, threads=args.threads, corpus=str(corpus.path),
             domains=len(corpus.domains), vocab=corpus.vocab_size, train_tokens=sum(corpus.token_counts().values()),
             not_imported=sorted(n for n in ("ray", "mlflow", "lightgbm", "safetensors") if n not in sys.modules),
             cpus=os.cpu_count())
    times["setup"] = time.perf_counter() - T_START  # imports, the corpus, the device
    res = None
    parts = args.parts.split(",")
    if "engine" in parts:
        t = time.perf_counter()
        eargs = argparse.Namespace(warmup=1 if args.tiny else 3, rounds=1 if args.tiny else 2,
                                   steps=2 if args.tiny else 10, vocab=corpus.vocab_size, seq_len=args.seq_len,
                                   batch_size=args.batch_size, dispatch="auto", compile=args.compile,
                                   peak_n=256 if args.tiny else None)
        try:
            engine_end = t + args.engine_share * (end - t)  # a share of what setup left
            res = run_engine(args.presets, args.packs, eargs, device, engine_end, bool(args.compile), rep.emit,
                             compiles_per_preset=1 if args.tiny else None)
        finally:
            times["engine"] = time.perf_counter() - t
        state["engine"] = res
    if "transfer" in parts and res is not None:
        t = time.perf_counter()
        try:
            sizes = (Sizes.tiny if args.tiny else Sizes)(batch_size=args.batch_size, seq_len=args.seq_len,
                                                          max_epochs=args.max_epochs)
            left = end - time.perf_counter() - (2.0 if args.tiny else 15.0)
            plan, aim, tried = choose(res, corpus, sizes, left, sample_seconds(corpus, args.batch_size, args.seq_len))
            rep.emit("transfer", "plan", seconds_left=left, chosen=plan.summary() if plan else None,
                     aim=aim.summary() if aim else None, candidates=tried)
            state["plan"], state["aim"] = plan, aim
            if plan is None:
                rep.emit("transfer", "stopped", reason="no candidate size is feasible on this corpus")
            else:
                state["transfer"] = run_transfer(corpus, plan, args.device, args.compile, args.threads,
                                                 end - (2.0 if args.tiny else 15.0), rep.emit, rep.log,
                                                 fits=plan.total_s <= left)
        finally:
            times["transfer"] = time.perf_counter() - t
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
