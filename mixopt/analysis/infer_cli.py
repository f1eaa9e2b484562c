"""``mixopt infer-mixture``: which mixture of domains was a BPE tokenizer trained on?

Reads a Hugging Face ``tokenizer.json`` and a recipe (``pip``, ``debian`` or a folder with one
subfolder per domain), runs :func:`mixopt.analysis.infer_mixture.infer_mixture` and prints the
mixture with bootstrap intervals (a table, or JSON with ``--json``). ``--out FILE`` writes
``{mixture: {domain: weight}, intervals: ..., inferred_from: ...}`` as YAML, the format
:meth:`mixopt.core.mixture.Mixture.from_file` (``mixopt transfer --mixture FILE``) reads,
atomically and only once everything has succeeded.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path

import yaml

from mixopt.analysis.infer_mixture import SAMPLE_BYTES, SPLITS, InferredMixture, infer_mixture
from mixopt.core.errors import UserError
from mixopt.data.shards import write_atomic
from mixopt.run.cli import no_extra


def add_parsers(sub) -> dict[str, Callable[[argparse.Namespace, list[str]], int]]:
    """Add ``infer-mixture``; returns {command: handler(args, extra)}."""
    p = sub.add_parser("infer-mixture", help="infer the data mixture a BPE tokenizer was trained on from its merge "
                       "list (Hayase et al., arXiv 2407.16607)")
    p.add_argument("--tokenizer", required=True, help="a Hugging Face tokenizer.json with a BPE model")
    p.add_argument("--recipe", required=True, help="pip, debian or a folder with one subfolder per domain")
    p.add_argument("--merges", type=int, default=3000, help="T: the first T merges give constraints (default 3000)")
    p.add_argument("--sample-mb", type=float, default=SAMPLE_BYTES / 1e6,
                   help=f"MB of text sampled per domain (default {SAMPLE_BYTES / 1e6:g}; more is more accurate)")
    p.add_argument("--split", choices=SPLITS, default="all",
                   help="which documents: all, val (those a mixopt corpus holds out) or train (default all)")
    p.add_argument("--bootstrap", type=int, default=10,
                   help="document resamples for the intervals (default 10; 0: no intervals)")
    p.add_argument("--level", type=float, default=0.9, help="interval probability (default 0.9)")
    p.add_argument("--seed", type=int, default=0, help="which documents are sampled, and the resamples")
    p.add_argument("--cache-dir", help="cache of recipe downloads (default $MIXOPT_CACHE_DIR or ~/.cache/mixopt)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--out", help="write the mixture as YAML (what `mixopt transfer --mixture` reads)")
    return {"infer-mixture": cmd_infer_mixture}


def _out_path(out: str | None) -> Path | None:
    if out is None:
        return None
    path = Path(out).expanduser()
    if path.is_dir():
        raise UserError(f"infer-mixture --out {out}: is a folder; give a file name such as mixture.yaml")
    if not path.parent.is_dir():
        raise UserError(f"infer-mixture --out {out}: folder {path.parent} does not exist")
    return path


def format_result(res: InferredMixture, recipe: str) -> str:
    """The printed table: one line per domain with its weight and interval."""
    head = (f"inferred training mixture of {res.tokenizer} from its first {res.merges} merges "
            f"({res.missing} not in the samples); {recipe}: "
            f"{sum(res.sample_bytes.values()) / len(res.sample_bytes) / 1e6:.2f} MB/domain; "
            f"LP {res.rounds} rounds, slack {res.slack:.4g}; {res.seconds['total']:.1f} s")
    pct = f"{res.level:.0%} interval ({res.bootstrap} resamples)" if res.intervals else ""
    width = max(len(d) for d in res.mixture)
    lines = [head, f"  {'domain':<{width}}  {'weight':>7}  {pct}".rstrip()]
    for d, w in res.mixture.items():
        lo, hi = res.intervals.get(d, (math.nan, math.nan))
        span = f"  [{lo:.4f}, {hi:.4f}]" if d in res.intervals else ""
        lines.append(f"  {d:<{width}}  {w:>7.4f}{span}")
    return "\n".join(lines)


def cmd_infer_mixture(args: argparse.Namespace, extra: list[str]) -> int:
    no_extra(extra)
    out = _out_path(args.out)
    if not (args.sample_mb > 0 and math.isfinite(args.sample_mb)):
        raise UserError(f"infer-mixture --sample-mb: {args.sample_mb!r} is invalid; allowed: a number > 0")
    res = infer_mixture(args.tokenizer, args.recipe, merges=args.merges, sample_bytes=max(1, int(args.sample_mb * 1e6)),
                        split=args.split, bootstrap=args.bootstrap, level=args.level, seed=args.seed,
                        cache_dir=args.cache_dir)
    doc = res.to_dict()
    if out is not None:
        inferred_from = {k: doc[k] for k in ("tokenizer", "merges", "missing_merges", "sample_bytes", "level",
                                             "bootstrap", "lp_status")}
        body = {"mixture": doc["mixture"], "intervals": doc["intervals"],
                "inferred_from": {**inferred_from, "recipe": args.recipe, "split": args.split, "seed": args.seed,
                                  "method": "Hayase et al. 2024, arXiv 2407.16607 (mixopt infer-mixture)"}}
        write_atomic(out, yaml.safe_dump(body, sort_keys=False).encode("utf-8"))
    print(json.dumps(doc) if args.json else format_result(res, args.recipe))
    return 0
