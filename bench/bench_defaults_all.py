"""Searchers on every shared table, beside a plain GP + LogEI baseline (prints tables; not a test).

Each table of ``--data`` is replayed as a pool (``mixopt replay``'s pool mode; init 0, so each
searcher's own initial design counts; budget ``min(--budget, rows)``; ``--seeds`` seeds) and we
print the median evaluations to reach the top 1% (a single row on the 76-128-run tables) per
table and searcher, with ``gp_logei`` (BoTorch ``SingleTaskGP`` + analytic
``LogExpectedImprovement`` over the remaining rows after 8 random rows: ``replay_pools.GPLogEI``)
beside them. Targets (issue 24): the default searcher (``bo`` with its default options) needs
no more evaluations than GP + LogEI on every table, and the best searcher at most two thirds.

Tables and objectives (``score.*`` is maximized: the replay negates it, so every searcher
minimizes ``-score``)::

    regmix_1m_train / regmix_1m_test / regmix_60m_test   loss.pile_cc         (family regmix)
    admire_ift_3b / admire_ift_7b                        score.avg_id+ood max (family admire)
    olmix_dclm                                           objective.mean_bpb   (family olmix)

``--cv`` chooses among the ``--candidates`` by leave-one-family-out: for each family, the
candidate with the lowest mean log(evaluations / GP + LogEI's) on the *other* families' tables is
picked and its figures on the held-out family are printed. Seeds stop at their first top-1% row
(``replay_pool(stop_at_top1=True)``: the figures are exact, the compute far less).
``--reuse DIR`` keeps each (table, searcher, budget, seeds) result as JSON and reads it back on
the next run (delete a file after changing that searcher's code).

    nice -n 10 .venv/bin/python bench/bench_defaults_all.py --seeds 10 --workers 2
    nice -n 10 .venv/bin/python bench/bench_defaults_all.py --seeds 10 --workers 2 --cv \\
        --candidates "bo,bo:warp=sqrt,bo:min_fit=8,bo:refit=always,bo:warp=none,regmix,regmix:acquisition=ei"
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from replay_pools import budget_for, load_searcher_file, standin_pool  # noqa: E402

from mixopt.analysis.replay import parse_searchers, replay_pool  # noqa: E402
from mixopt.core.runs_table import read_runs_table  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "benchdata"
TABLES = {  # name -> (file, objective, maximize, family)
    "regmix_1m_train": ("regmix_1m_train.csv", "loss.pile_cc", False, "regmix"),
    "regmix_1m_test": ("regmix_1m_test.csv", "loss.pile_cc", False, "regmix"),
    "regmix_60m_test": ("regmix_60m_test.csv", "loss.pile_cc", False, "regmix"),
    "admire_ift_3b": ("admire_ift_3b.csv", "score.avg_id+ood", True, "admire"),
    "admire_ift_7b": ("admire_ift_7b.csv", "score.avg_id+ood", True, "admire"),
    "olmix_dclm": ("olmix_dclm.csv", "objective.mean_bpb", False, "olmix"),
}
BASELINE = "gp_logei"
DEFAULT = "bo"
SEARCHERS = "regmix,regmix:surrogate=lightgbm,bo,mixing_law"


def load_pool(data: Path, name: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """W (n, k), values to minimize (n,), domains of table ``name`` (or ``standin:RxK``)."""
    if name.startswith("standin:"):
        W, v, domains, _ = standin_pool(data, name.split(":", 1)[1])
        return W, v, domains
    file, objective, maximize, _ = TABLES[name]
    t = read_runs_table(str(data / file), objective=objective)
    v = t.metric(objective)
    return t.weights(), -v if maximize else v, t.domains


def run_table(data: Path, name: str, specs: list, budget: int, seeds: int, workers: int,
              reuse: Path | None) -> dict[str, dict]:
    """{label: {"top1": [per seed], "top5": [...], "wall_s": s}} for one table, reusing kept results."""
    W, v, domains = load_pool(data, name)
    b = budget_for(len(W), budget)
    out: dict[str, dict] = {}
    todo = []
    for spec in specs:
        path = reuse / f"{name}__{spec[0].replace('/', '_')}__b{b}_s{seeds}.json" if reuse else None
        if path is not None and path.exists():
            out[spec[0]] = json.loads(path.read_text())
        else:
            todo.append(spec)
    if todo:
        res = replay_pool(W, v, domains, todo, b, seeds, 0, workers=workers, stop_at_top1=True,
                          progress=lambda m: "finished" in m and print(f"  {name}: {m}", file=sys.stderr, flush=True))
        for spec in todo:
            r = res[spec[0]]
            out[spec[0]] = {"top1": r["evals_to_top1"], "top5": r["evals_to_top5"], "wall_s": r["wall_s"],
                            "cpu_s": r["cpu_s"]}
            if reuse:
                reuse.mkdir(parents=True, exist_ok=True)
                (reuse / f"{name}__{spec[0].replace('/', '_')}__b{b}_s{seeds}.json").write_text(
                    json.dumps(out[spec[0]]))
    return {lab: r | {"budget": b, "rows": len(W), "k": W.shape[1]} for lab, r in out.items()}


def med(r: dict, key: str = "top1") -> float:
    return float(np.median(r[key]))


def print_table(results: dict[str, dict[str, dict]], labels: list[str]) -> None:
    w = max(12, *(len(lab) + 1 for lab in labels))
    print(f"{'table':<18}{'rows x k':>9}{'budget':>7}" + "".join(f"{lab:>{w}}" for lab in labels)
          + f"{'default/GP':>11}{'best/GP':>9}  best")
    fails = []
    for name, res in results.items():
        any_r = next(iter(res.values()))
        base = med(res[BASELINE])
        cells = "".join(f"{med(res[lab]):>{w}g}" for lab in labels)
        others = [lab for lab in labels if lab not in (BASELINE, "random")]
        best = min(others, key=lambda lab: med(res[lab]))
        d = med(res[DEFAULT]) / base if DEFAULT in res else math.nan
        bb = med(res[best]) / base
        print(f"{name:<18}{any_r['rows']:>5}x{any_r['k']:<3}{any_r['budget']:>7}{cells}{d:>11.2f}{bb:>9.2f}  {best}")
        if d > 1.0:
            fails.append(f"{name}: default {DEFAULT} at {d:.2f} x GP + LogEI (target <= 1)")
        if bb > 2 / 3:
            fails.append(f"{name}: best searcher {best} at {bb:.2f} x GP + LogEI (target <= 0.67)")
    print("(median over seeds of the evaluations, the searcher's own initial design included, to reach the "
          "top 1% of the pool; budget + 1 = not reached)")
    def cpu(r: dict) -> float:
        return r.get("cpu_s", r["wall_s"]) / len(r["top1"])

    print("CPU seconds per seed until the top 1% (mean over tables): "
          + ", ".join(f"{lab} {np.mean([cpu(res[lab]) for res in results.values()]):.1f}" for lab in labels))
    print("targets: " + ("all met" if not fails else "NOT met: " + "; ".join(fails)))


def cross_validate(results: dict[str, dict[str, dict]], candidates: list[str]) -> None:
    """Leave-one-family-out choice among ``candidates`` by mean log(evaluations / GP + LogEI's)."""
    fam = {name: TABLES[name][3] for name in results if name in TABLES}

    def score(lab: str, names: list[str]) -> float:
        return float(np.mean([math.log(med(results[n][lab]) / med(results[n][BASELINE])) for n in names]))

    print("\nleave-one-family-out (mean log ratio to GP + LogEI; lower is better):")
    for held in sorted(set(fam.values())):
        train = [n for n in fam if fam[n] != held]
        test = [n for n in fam if fam[n] == held]
        ranked = sorted(candidates, key=lambda lab: score(lab, train))
        pick = ranked[0]
        print(f"  choose on {', '.join(train)}: " + ", ".join(f"{lab} {score(lab, train):+.2f}" for lab in ranked))
        print(f"    -> {pick}; held-out {held}: " + ", ".join(
            f"{n} {med(results[n][pick]):g} vs GP+LogEI {med(results[n][BASELINE]):g}" for n in test)
              + " (candidates on it: " + ", ".join(f"{lab} {score(lab, test):+.2f}" for lab in candidates) + ")")
    allt = list(fam)
    print("  all tables: " + ", ".join(f"{lab} {score(lab, allt):+.2f}" for lab in
                                       sorted(candidates, key=lambda lab: score(lab, allt))))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--tables", default=",".join(TABLES), help="names from the list above, or standin:256x19 ...")
    ap.add_argument("--searchers", default=SEARCHERS, help="mixopt replay --searcher syntax (gp_logei is added)")
    ap.add_argument("--candidates", default=None, help="with --cv: the searchers to choose a default among")
    ap.add_argument("--cv", action="store_true", help="leave-one-family-out choice among --candidates")
    ap.add_argument("--budget", type=int, default=120)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--reuse", type=Path, default=None, help="keep / read back per-searcher results here")
    ap.add_argument("--compare", action="append", default=[], metavar="LABEL=FILE:CLASS",
                    help="also replay a searcher class loaded from a file, under LABEL (see bench_replay.py)")
    args = ap.parse_args(argv)
    for item in args.compare:
        load_searcher_file(*item.split("=", 1))
    names = ",".join([args.searchers] + [item.split("=", 1)[0] for item in args.compare])
    specs = parse_searchers(f"{names},{BASELINE}")
    if args.candidates:       # parsed on its own: a candidate may repeat one of --searchers
        specs += parse_searchers(args.candidates)
    seen: set[str] = set()
    specs = [s for s in specs if not (s[0] in seen or seen.add(s[0]))]
    labels = [s[0] for s in specs]
    t0 = time.perf_counter()
    results = {}
    for name in args.tables.split(","):
        if not name.startswith("standin:") and not (args.data / TABLES[name][0]).exists():
            print(f"error: {args.data / TABLES[name][0]} not found (use --data)", file=sys.stderr)
            return 2
        results[name] = run_table(args.data, name, specs, args.budget, args.seeds, args.workers, args.reuse)
        print(f"# {name}: " + "  ".join(f"{lab}={med(r):g} {r['top1']}" for lab, r in results[name].items()),
              flush=True)
    print(f"\nevaluations to the top 1% (median of {args.seeds} seeds, init 0); {time.perf_counter() - t0:.0f} s")
    print_table(results, labels)
    if args.cv:
        cands = [s[0] for s in parse_searchers(args.candidates or args.searchers) if s[0] != "random"]
        cross_validate(results, cands)
    return 0


if __name__ == "__main__":
    sys.exit(main())
