"""The GPU suite's final table (``bench/gpu_suite.py``): engine rows, the transfer's sizes and paired
table, the issue's targets (checked where measured; a CPU rehearsal checks none) and each part's time."""

from __future__ import annotations

import argparse
from typing import Any

REGMIX_PROXIES, REGMIX_TOKENS = 512, 1_000_000_000


def _n(x: Any, spec: str = ",.0f") -> str:
    return "-" if x is None else format(x, spec)


def _best(rows: list[dict[str, Any]], preset: str) -> tuple[float | None, int | None]:
    got = [(r["tokens_per_s"], r["K"]) for r in rows if r["preset"] == preset and r.get("tokens_per_s")]
    return max(got) if got else (None, None)


def targets(rows: list[dict[str, Any]], doc: dict[str, Any] | None, gpu: bool) -> list[dict[str, Any]]:
    """The issue's targets, each {"target", "value", "pass"} (pass None: not measured, or not on a GPU)."""
    out = []

    def add(text: str, value: Any, ok: bool | None, note: str = "") -> None:
        out.append({"target": text, "value": value, "pass": ok if gpu and value is not None else None, "note": note})

    d1, k1 = _best(rows, "dense-1m")
    add("dense-1m >= 10M tokens/s with packs", d1, d1 is not None and d1 >= 1e7, f"K={k1}" if k1 else "")
    mfus = [(r.get("mfu_spec") or r.get("mfu"), r["K"], "datasheet" if r.get("mfu_spec") else "measured peak")
            for r in rows if r["preset"] == "dense-10m" and r.get("mfu")]
    m = max(mfus) if mfus else None
    add("dense-10m >= 25 % of the bf16 peak", m and m[0], m is not None and m[0] >= 0.25,
        f"K={m[1]}, vs the {m[2]}" if m else "")
    for moe, dense in (("moe-1m", "dense-1m"), ("moe-3m", "dense-3m")):
        a, b = _best(rows, moe)[0], _best(rows, dense)[0]
        ratio = a / b if a and b else None
        add(f"{moe} >= 0.7x {dense} tokens/s (same active params)", ratio, ratio is not None and ratio >= 0.7,
            "" if ratio else f"{dense} not measured" if a else f"{moe} not measured")
    hours = REGMIX_PROXIES * REGMIX_TOKENS / d1 / 3600 if d1 else None
    add("RegMix 512 proxies x 1B tokens <= 24 GPU-hours (at dense-1m's best rate)", hours,
        hours is not None and hours <= 24)
    margin = (doc or {}).get("margin_over_better_baseline_in_se", {}).get("recommended")
    add("transfer: recommended beats the better baseline by >= 2 paired s.e.", margin,
        margin is not None and margin >= 2, f"better baseline: {(doc or {}).get('better_baseline')}" if doc else "")
    return out


def engine_table(rep, args: argparse.Namespace) -> list[str]:
    peak = rep.of("engine", "peak")
    if not peak:
        return ["engine: not run"]
    p = peak[0]
    spec = f", datasheet {p['spec_peak_flops'] / 1e12:,.0f} TFLOP/s" if p.get("spec_peak_flops") else ""
    lines = [f"engine on {p['device_name']}: peak {p['peak_flops'] / 1e12:,.1f} TFLOP/s measured ({p['peak']}){spec}; "
             f"B={p['batch_size']} T={p['seq_len']} V={p['vocab']}; tokens/s of all K members together",
             f"  {'preset':<11}{'K':>4}{'eager':>12}{'compiled':>12}{'solo':>11}{'x solo':>7}{'MFU':>7}{'sheet':>7}"
             f"{'compile s':>10}{'build s':>8}{'syncs':>6}{'GB':>6}  engine"]
    solo = {r["preset"]: r["tokens_per_s"] for r in rep.of("engine", "solo")}
    rows = sorted(rep.of("engine", "pack"), key=lambda r: (args.presets.index(r["preset"])
                                                           if r["preset"] in args.presets else 99, r["K"]))
    for r in rows:
        head = f"  {r['preset']:<11}{r['K']:>4}"
        if r.get("skipped") or r.get("error"):
            lines.append(head + f"  {r.get('skipped') or r.get('error')}")
            continue
        syncs = r.get("compiled_syncs_per_step", r.get("eager_syncs_per_step"))
        x = r["tokens_per_s"] / solo[r["preset"]] if solo.get(r["preset"]) else None
        note = r.get("compile_error") or r.get("compile_skipped") or ""
        lines.append(head + f"{_n(r.get('eager_tokens_per_s')):>12}{_n(r.get('compiled_tokens_per_s')):>12}"
                     f"{_n(solo.get(r['preset'])):>11}{_n(x, '.1f'):>7}{_n(r.get('mfu'), '.1%'):>7}"
                     f"{_n(r.get('mfu_spec'), '.1%'):>7}{_n(r.get('compile_s'), '.1f'):>10}{_n(r.get('build_s'), '.1f'):>8}"
                     f"{_n(syncs, 'd'):>6}{_n(r.get('peak_mem_gb'), '.1f'):>6}  {r.get('engine', '')}"
                     + (f"  ({note})" if note else ""))
    return lines


def transfer_lines(rep) -> list[str]:
    plan = rep.of("transfer", "plan")
    if not plan:
        return ["transfer: not run"]
    lines = []
    for label, s in (("chosen", plan[0]["chosen"]), ("aim", plan[0]["aim"])):
        if s:
            lines.append(f"transfer {label}: {s['n_proxies']} x {s['proxy']} ({s['proxy_params']:,} params) on "
                         f"{s['proxy_tokens']:,} tokens ({s['tokens_per_param']:.3g}/param, packs of {s['proxy_pack']}) "
                         f"-> {s['target']} ({s['params_ratio']:.1f}x params) on {s['target_tokens']:,} tokens "
                         f"({s['tokens_ratio']:.0f}x), {s['arms']} arms x {s['seeds']} seeds; predicted "
                         f"{s['predicted_s']['total']:,.0f} s (proxies {s['predicted_s']['proxies']:,.0f}, targets "
                         f"{s['predicted_s']['targets']:,.0f}); {s['data']}")
    for x in rep.of("transfer", "proxies"):
        lines.append(f"  proxies: {x['completed']}/{x['started']} completed in {x['seconds']:,.0f} s, pack "
                     f"{_n(x['pack_tokens_per_s'])} tok/s" + (f"; stopped: {x['stopped']}" if x.get("stopped") else ""))
    for x in rep.of("transfer", "target_seed"):
        lines.append(f"  target seed {x['seed']}: {x['seconds']:,.0f} s (predicted {x['predicted_s']:,.0f})"
                     + (f", failed: {x['errors']}" if x["errors"] else ""))
    lines += [f"  stopped: {x['reason']}" for x in rep.of("transfer", "stopped")]
    lines += [x["text"] for x in rep.of("transfer", "table")]
    return lines


def final(rep, args: argparse.Namespace, times: dict[str, float], state: dict[str, Any]) -> str:
    """The table printed last; emits the targets line."""
    rows = [r for r in rep.of("engine", "pack") if r.get("tokens_per_s")]
    gpu = args.device == "cuda"
    checks = targets(rows, state.get("transfer"), gpu)
    rep.emit("suite", "targets", checks=checks, gpu=gpu)
    lines = ["", "=" * 20 + f" GPU suite ({'CPU rehearsal, toy sizes' if args.tiny else args.device}) " + "=" * 20]
    lines += engine_table(rep, args) + [""] + transfer_lines(rep) + ["", "targets (issue 23)"
                                                                      + ("" if gpu else ": not checked on CPU")]
    for c in checks:
        v = c["value"]
        val = "-" if v is None else f"{v:,.3g}" if isinstance(v, float) else str(v)
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[c["pass"]]
        lines.append(f"  {verdict:<5}{c['target']}: {val}" + (f" ({c['note']})" if c["note"] else ""))
    lines.append("times: " + ", ".join(f"{k} {v:,.1f} s" for k, v in times.items())
                 + f"; budget {args.budget_s:,.0f} s" + (f"; stopped: {state['stopped']}" if state.get("stopped") else ""))
    return "\n".join(lines)
