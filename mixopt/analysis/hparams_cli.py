"""``mixopt hparams`` and ``mixopt fit --kind hparams --runs TABLE``: lr and batch size laws on the CLI.

``mixopt hparams --params N --tokens D [--seq-len T] [--moe KEY=VALUE,...] [--json]`` prints the
Step Law's learning rate and batch size (:func:`mixopt.analysis.hparams.published_hparams`). With
``--moe``, N is the MoE's **total** non-embedding parameter count (the Step Law paper fits MoE at total N;
its released MoE runs, total N 2.15e9 at every sparsity, have their best lr nearer the law at total N than
at active N: mean |log ratio| 0.27 vs 0.99), and the MoE's efficiency leverage and dense-equivalent compute
are printed from arXiv 2507.17702 (:func:`mixopt.analysis.scaling_laws.moe_leverage`), with that paper's
own MoE lr/batch law by compute as a cross-check (:func:`mixopt.analysis.hparams.moe_hparams`).

``mixopt fit --kind hparams --runs TABLE.csv [--predict N:D] [--tolerance X] [--bootstrap B] [--json]``
fits the same forms to a runs table (:func:`mixopt.analysis.hparams.fit_hparams`) and writes nothing;
``mixopt fit study.yaml --kind hparams`` fits a study's trials (``mixopt.analysis.fits``).
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable

from mixopt.analysis.hparams import (
    DEFAULT_OPTIMUM,
    DEFAULT_TOLERANCE,
    OPTIMA,
    STEP_LAW_SEQ_LEN,
    HparamFit,
    Hparams,
    fit_hparams,
    moe_hparams,
    published_hparams,
    read_table,
)
from mixopt.analysis.scaling_laws import MoeLeverage, moe_leverage
from mixopt.core.errors import UserError

_SUFFIX = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}
_MOE_KEYS = ("active", "experts", "top_k", "shared", "granularity")


def parse_count(text: str, flag: str) -> float:
    """``"1e9"``, ``"1.3B"``, ``"300M"``, ``"2T"`` -> float > 0; UserError naming ``flag`` otherwise."""
    m = re.fullmatch(r"\s*([0-9.]+(?:e[+-]?[0-9]+)?)\s*([kmbgt]?)\s*", str(text), flags=re.IGNORECASE)
    try:
        value = float(m.group(1)) * _SUFFIX.get(m.group(2).lower(), 1.0) if m else float("nan")
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise UserError(f"{flag}: {text!r}; allowed: a number > 0, e.g. 1e9 or 1.3B (suffixes K, M, B, T)")
    return value


def parse_point(text: str, flag: str = "--predict") -> tuple[float, float]:
    """``"N:D"`` -> (N, D), e.g. ``"1e9:2e10"`` or ``"1B:20B"``."""
    n, sep, d = str(text).partition(":")
    if not sep:
        raise UserError(f"{flag}: {text!r} must be N:D (non-embedding params : tokens), e.g. 1e9:2e10")
    return parse_count(n, f"{flag} N"), parse_count(d, f"{flag} D")


def _shared(raw: str) -> float:
    try:
        v = float(raw)
    except ValueError:
        v = -1.0
    if not 0 <= v < float("inf"):
        raise UserError(f"--moe shared: {raw.strip()!r}; allowed: a number of shared experts >= 0")
    return v


def parse_moe(text: str) -> dict[str, float]:
    """``active=8.5e8,experts=384,top_k=12,shared=1,granularity=10.7`` -> dict (shared defaults to 0)."""
    out: dict[str, float] = {"shared": 0.0}
    for item in str(text).split(","):
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or key not in _MOE_KEYS:
            raise UserError(f"--moe: {item.strip()!r}; allowed keys: {', '.join(_MOE_KEYS)} as KEY=VALUE, "
                            "e.g. active=8.5e8,experts=384,top_k=12,shared=1,granularity=10.7")
        out[key] = _shared(raw) if key == "shared" else parse_count(raw, f"--moe {key}")
    missing = [k for k in ("active", "experts", "top_k", "granularity") if k not in out]
    if missing:
        raise UserError(f"--moe: missing {', '.join(missing)}; give active (non-embedding params per token), "
                        "experts, top_k, granularity (2 d_model / d_expert) and optionally shared")
    if out["top_k"] > out["experts"]:
        raise UserError(f"--moe top_k: {out['top_k']:g} exceeds experts = {out['experts']:g}")
    return out


def add_parsers(sub) -> dict[str, Callable[[argparse.Namespace, list[str]], int]]:
    """Add ``hparams``; returns {command: handler(args, extra)}."""
    p = sub.add_parser("hparams", help="learning rate and batch size for a target size from the Step Law "
                       "(arXiv 2503.04715); with --moe also its efficiency leverage (arXiv 2507.17702)")
    p.add_argument("--params", required=True, metavar="N",
                   help="non-embedding parameters of the target (total for an MoE), e.g. 1e9 or 1.3B")
    p.add_argument("--tokens", required=True, metavar="D", help="training tokens, e.g. 1e11 or 100B")
    p.add_argument("--seq-len", type=int, default=STEP_LAW_SEQ_LEN, help="tokens per sequence (batch in sequences)")
    p.add_argument("--moe", metavar="KEY=VALUE,...",
                   help="the target is an MoE: active=N_ACTIVE,experts=E,top_k=K,granularity=G[,shared=S] "
                        "(G = 2 d_model / d_expert as in arXiv 2507.17702); lr/batch use the total N")
    p.add_argument("--json", action="store_true")
    return {"hparams": cmd_hparams}


def add_fit_arguments(fit: argparse.ArgumentParser) -> None:
    """The ``fit`` options of kind hparams."""
    fit.add_argument("--runs", metavar="TABLE", help="kind hparams: fit a runs table (CSV/Parquet; columns N, D, lr, "
                     "batch_tokens, loss) instead of a study; writes nothing")
    fit.add_argument("--predict", metavar="N:D", help="kind hparams: the fitted lr and batch_tokens at N params, D tokens")
    fit.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                     help="kind hparams: runs within this relative loss of their (N, D) group's best count as optimal "
                     "(default 0.0025, the Step Law release's)")
    fit.add_argument("--optimum", choices=OPTIMA, default=DEFAULT_OPTIMUM,
                     help="kind hparams: how each size's optimum is read: kept (the runs within --tolerance of the best, "
                     "the Step Law release's) or surface (one quadratic loss surface in log lr and log batch over "
                     "every run: better on noisy grids around a bowl-shaped optimum, worse where a size's best lies "
                     f"on the grid's edge, see the README); default {DEFAULT_OPTIMUM}")
    fit.add_argument("--seq-len", type=int, default=STEP_LAW_SEQ_LEN, help="kind hparams: for batch in sequences")


def _hparams_lines(h: Hparams, title: str) -> list[str]:
    lines = [f"{title} at N = {h.N:.4g} non-embedding params, D = {h.D:.4g} tokens:",
             f"  learning rate  {h.lr:.4g}   (90% {h.lr_interval[0]:.4g} - {h.lr_interval[1]:.4g})",
             f"  batch size     {h.batch_tokens:,.0f} tokens per step = {h.batch_sequences} sequences of {h.seq_len}"
             f"   (90% {h.batch_tokens_interval[0]:,.0f} - {h.batch_tokens_interval[1]:,.0f} tokens)"]
    if not h.in_range:
        lines.append(f"  note: {h.message}")
    return lines


def _moe_lines(lev: MoeLeverage, ling: Hparams) -> list[str]:
    lines = ["MoE: lr and batch above use the total non-embedding params (the Step Law fits MoE at total N)",
             f"  activation ratio {lev.activation_ratio:.2%}, granularity {lev.granularity:.3g}, "
             f"compute M*D = {lev.compute:.3g} FLOPs (forward, non-embedding)",
             f"  efficiency leverage {lev.el:.3g} (arXiv 2507.17702): worth a dense model of "
             f"{lev.dense_active_params:.3g} params, {lev.dense_compute:.3g} FLOPs"]
    if not lev.in_range:
        lines.append(f"  note: {lev.message}")
    lines.append(f"  cross-check, the same paper's MoE law (Eq. 3, by compute): lr {ling.lr:.4g}, batch "
                 f"{ling.batch_tokens:,.0f} tokens = {ling.batch_sequences} sequences of {ling.seq_len}")
    if not ling.in_range:
        lines.append(f"  note: {ling.message}")
    return lines


def cmd_hparams(args, extra) -> int:
    if extra:
        raise UserError(f"unrecognized arguments: {' '.join(extra)}")
    N, D = parse_count(args.params, "--params"), parse_count(args.tokens, "--tokens")
    if args.seq_len < 1:
        raise UserError(f"--seq-len: {args.seq_len}; allowed: an integer >= 1")
    lev = ling = None
    if args.moe:
        m = parse_moe(args.moe)
        if m["active"] > N:
            raise UserError(f"--moe active: {m['active']:.4g} exceeds --params {N:.4g} (N is the total for an MoE)")
        ratio = (m["top_k"] + m["shared"]) / (m["experts"] + m["shared"])
        lev = moe_leverage(m["active"], ratio, m["granularity"], D)
        ling = moe_hparams(m["active"], D, seq_len=args.seq_len)
    h = published_hparams(N, D, seq_len=args.seq_len)
    if args.json:
        print(json.dumps({"hparams": h.to_dict(), "moe": lev.to_dict() if lev else None,
                          "moe_hparams": ling.to_dict() if ling else None}))
        return 0
    print("\n".join(_hparams_lines(h, "Step Law (arXiv 2503.04715)") + (_moe_lines(lev, ling) if lev else [])))
    return 0


def fit_result(fit: HparamFit, point: tuple[float, float] | None, seq_len: int) -> dict:
    """The JSON of a hparams fit (``predicted`` when a point is given)."""
    out = {"kind": "hparams", **fit.to_dict()}
    if point is not None:
        out["predicted"] = fit.predict(*point, seq_len=seq_len).to_dict()
    return out


def print_fit(r: dict) -> None:
    """The text summary of :func:`fit_result`'s dict."""
    iv = r["intervals_90"]
    fixed = f"; held at the Step Law's value: {', '.join(r['fixed'])}" if r["fixed"] else ""
    how = (f"within {r['tolerance']:.2%} of the best of each of {r['n_groups']} (N, D) groups"
           if r.get("optimum", "kept") == "kept" else f"one loss surface over {r['n_groups']} (N, D) groups")
    print(f"hparams law on {r['n_kept']} of {r['n_runs']} runs ({how}; {r['sizes']} sizes; {r['bootstrap']} bootstrap "
          f"replicates){fixed}")
    print(f"  lr           = {r['lr']['coef']:.4g} * N^{r['lr']['n_exp']:.3f} * D^{r['lr']['d_exp']:.3f}   "
          f"(90%: N exp {iv['lr.n_exp'][0]:.3f} - {iv['lr.n_exp'][1]:.3f}, "
          f"D exp {iv['lr.d_exp'][0]:.3f} - {iv['lr.d_exp'][1]:.3f})")
    print(f"  batch_tokens = {r['batch_tokens']['coef']:.4g} * D^{r['batch_tokens']['d_exp']:.3f}   "
          f"(90%: D exp {iv['batch.d_exp'][0]:.3f} - {iv['batch.d_exp'][1]:.3f})")
    for note in r["notes"]:
        print(f"  note: {note}")
    if "predicted" in r:
        p = r["predicted"]
        h = Hparams(**{**p, "lr_interval": tuple(p["lr_interval"]),
                       "batch_tokens_interval": tuple(p["batch_tokens_interval"])})
        print("\n".join(_hparams_lines(h, "fitted law")))


def cmd_fit_runs(args, kinds: list[str], extra: list[str]) -> int:
    """``mixopt fit --runs TABLE``: kind hparams on a runs table; prints, writes nothing."""
    if extra:
        raise UserError(f"unrecognized arguments: {' '.join(extra)}")
    if kinds != ["hparams"]:
        raise UserError(f"fit --runs: --kind {','.join(kinds)}; a runs table is fitted with --kind hparams only "
                        "(the other kinds read a study)")
    if args.config or args.study:
        raise UserError("fit --runs: give a runs table or a study (config / --study), not both")
    if args.bootstrap < 0:
        raise UserError("fit --bootstrap: must be >= 0")
    point = parse_point(args.predict) if args.predict else None
    fit = fit_hparams(read_table(args.runs), args.tolerance, args.bootstrap, source=args.runs, optimum=args.optimum)
    res = fit_result(fit, point, args.seq_len)
    if args.json:
        print(json.dumps(res))
    else:
        print_fit(res)
    return 0


__all__ = ["add_fit_arguments", "add_parsers", "cmd_fit_runs", "cmd_hparams", "fit_result", "parse_count", "parse_moe",
           "parse_point", "print_fit"]
