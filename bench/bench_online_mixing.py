"""Offline search vs online mixing on one corpus and budget (issue 19's benchmark; prints the tables).

Arms, each trained at the same proxy size and token budget with seeds 0..S-1 (seed s = the same
initialisation and sampler seed in every arm, so differences are paired):

* ``stratified`` (uniform), ``natural`` (proportional to the available tokens): fixed mixtures;
* ``regmix``: the recommendation of a RegMix study of the same corpus (``--regmix-trials`` proxies at
  the same size), fixed;
* ``aioli``: Aioli online from uniform (its published defaults, except as printed);
* ``doremi``: DoReMi as published: a reference model (the ``stratified`` seed-0 run, its per-domain
  validation losses), a DoReMi proxy of the same size trained online from uniform (Group DRO on the
  excess loss, reweighting each example's loss), then the model is trained on the proxy's averaged
  domain weights, a fixed mixture (seed s's model on seed s's proxy's weights);
* ``doremi-proxy``: that DoReMi proxy itself (trained on the reweighted loss; not what DoReMi ships,
  shown because the online run is what ``proxy: {online: doremi}`` trains);
* ``aioli-regmix``: Aioli online from the RegMix recommendation (a "restricted" start).

Reported per size: mean +- s.e. of the mean validation loss over every domain and of the held-out
target's loss, paired differences against stratified (and whether the arm is no worse in every seed),
and the cost: evaluations and LearnParams steps of the online mixers, the share of the run's wall time
their evaluations and bookkeeping took, and the proxy trainings each arm needed before the run.

    python bench/bench_online_mixing.py                      # pip recipe, pydocs held out, 2 sizes, 3 seeds
    python bench/bench_online_mixing.py --sizes dense-0.1m:2000000 --seeds 2 --regmix-trials 16   # quicker
    python bench/bench_online_mixing.py --arms doremi          # stratified and DoReMi only (no RegMix study)
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from mixopt.analysis.transfer import paired  # noqa: E402
from mixopt.core.mixture import Mixture  # noqa: E402
from mixopt.run.config import BudgetConfig, SearchConfig, load_config  # noqa: E402
from mixopt.run.executors import make_executor  # noqa: E402
from mixopt.run.loop import execute, run  # noqa: E402
from mixopt.run.plan import StudyPlan  # noqa: E402
from mixopt.study import InMemoryStorage  # noqa: E402

ARMS = ("stratified", "natural", "regmix", "aioli", "doremi", "doremi-proxy", "aioli-regmix")


def base_config(args, work: Path, preset: str, tokens: int):
    over = [f"--data.recipe={args.recipe}", f"--data.vocab_size={args.vocab}", f"--data.max_mb_per_domain={args.mb}",
            f"--proxy.preset={preset}", f"--proxy.tokens={tokens}", "--proxy.seq_len=128", "--proxy.batch_size=16",
            f"--proxy.lr={args.lr}", "--proxy.eval_batches=4", "--proxy.evals=1", f"--objective.target={args.target}",
            "--executor.kind=ray", "--executor.workers=2", f"--output_dir={work / 'out'}"]
    return load_config(None, over)


def arm_runs(args, cfg, store, size: str, regmix_mix: Mixture | None) -> tuple[dict, dict]:
    """Train every arm x seed (``args.arms``); -> {arm: {seed: (mean, target, metrics)}}, {arm: extra info}."""
    plan = StudyPlan.build(replace(cfg, study=f"online-{size}", search=SearchConfig("random", {}, 0)), storage=store)
    corpus = plan.open_corpus(lambda m: None)
    space = plan.build_space(corpus.token_counts("train"))
    base = plan.baselines(space)
    mixes = {"stratified": base["uniform"], "natural": base["natural"], "regmix": regmix_mix, "aioli": base["uniform"],
             "doremi-proxy": base["uniform"], "aioli-regmix": regmix_mix}
    first = [a for a in mixes if a in args.arms or (a == "doremi-proxy" and "doremi" in args.arms)]
    ex = make_executor(cfg.executor)
    study = plan.open_study(space, queue=[("stratified", base["uniform"], replace(cfg.proxy, seed=0))])
    execute(replace(plan.cfg, budget=BudgetConfig(trials=1)), study, corpus, ex, lambda m: None, shutdown=False)
    ref = {d: study.trials[0].losses[d] for d in space.domains}  # DoReMi's reference: the stratified seed-0 run
    aioli = dict(args.aioli_options)
    specs = {"aioli": replace(cfg.proxy, online="aioli", online_options=aioli),
             "aioli-regmix": replace(cfg.proxy, online="aioli", online_options=aioli),
             "doremi-proxy": replace(cfg.proxy, online="doremi", online_options={"reference": ref})}
    for arm in first:
        for s in range(args.seeds):
            if arm == "stratified" and s == 0:
                continue
            study.enqueue(mixes[arm], replace(specs.get(arm, cfg.proxy), seed=s), arm)
    execute(replace(plan.cfg, budget=BudgetConfig(trials=len(study.trials))), study, corpus, ex, print, shutdown=False)
    if "doremi" in args.arms:  # DoReMi's output: each proxy's averaged weights, trained as a fixed mixture
        for t in [t for t in study.trials if t.label == "doremi-proxy" and t.ok]:
            avg = Mixture({d: t.metrics[f"online_average.{d}"] for d in space.domains})
            print(f"{size}: doremi seed {t.spec.seed} averaged weights "
                  + ", ".join(f"{d} {w:.3f}" for d, w in sorted(avg.items(), key=lambda kv: -kv[1])), flush=True)
            study.enqueue(avg, replace(cfg.proxy, seed=t.spec.seed), "doremi")
    execute(replace(plan.cfg, budget=BudgetConfig(trials=len(study.trials))), study, corpus, ex, print)
    order = [a for a in ARMS if a in first or a in args.arms]
    out: dict[str, dict[int, tuple[float, float, dict]]] = {a: {} for a in order}
    domains = list(corpus.domains)
    for t in study.trials:
        if t.ok:
            mean = float(np.mean([t.losses[d] for d in domains]))
            out[t.label][t.spec.seed] = (mean, t.losses[args.target], t.metrics)
    return out, {"reference": ref}


def report(size: str, res: dict, regmix_trials: int, seeds: int) -> str:
    lines = [f"\n{size}: mean over domains / held-out target (lower is better), {seeds} paired seeds",
             f"  {'arm':<14}{'mean':>18}{'target':>18}{'vs stratified (mean)':>34}{'every seed':>11}"
             f"{'target diff':>20}{'evals':>7}{'LP steps':>9}{'overhead':>9}{'trainings before':>17}"]
    strat_m = {s: v[0] for s, v in res["stratified"].items()}
    strat_t = {s: v[1] for s, v in res["stratified"].items()}
    for arm, runs in res.items():
        if len(runs) < seeds:  # failed trials: the log above says why
            lines.append(f"  {arm:<14}failed in {seeds - len(runs)} of {seeds} seeds (see the trial lines above)")
            if not runs:
                continue
        m = {s: v[0] for s, v in runs.items()}
        t = {s: v[1] for s, v in runs.items()}

        def ms(d: dict) -> str:
            a = np.array(list(d.values()))
            return f"{a.mean():.4f} ± {a.std(ddof=1) / math.sqrt(len(a)):.4f}" if len(a) > 1 else f"{a.mean():.4f}"

        met = [v[2] for v in runs.values()]
        evals = np.mean([x.get("online_evals", 0) for x in met])
        lp = np.mean([x.get("online_learn_steps", 0) for x in met])
        over = np.mean([x.get("online_seconds", 0.0) / x["seconds"] for x in met])
        before = {"regmix": regmix_trials, "aioli-regmix": regmix_trials, "doremi": 2, "doremi-proxy": 1}.get(arm, 0)
        if arm == "stratified":
            dm = dt = "-"
            every = ""
        else:
            pm, pt = paired(m, strat_m), paired(t, strat_t)
            dm = (f"{pm['diff']:+.4f} ± {pm['sem']:.4f} ({abs(pm['diff']) / pm['sem']:.1f} se "
                  f"{'better' if pm['diff'] < 0 else 'worse'})") if pm["sem"] > 0 else f"{pm['diff']:+.4f}"
            dt = f"{pt['diff']:+.4f} ± {pt['sem']:.4f}"
            every = "yes" if all(m[s] <= strat_m[s] for s in m if s in strat_m) else "no"
        lines.append(f"  {arm:<14}{ms(m):>18}{ms(t):>18}{dm:>34}{every:>11}{dt:>20}{evals:>7.0f}{lp:>9.0f}"
                     f"{over:>9.1%}{before:>17}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="pip")
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--mb", type=float, default=4.0, help="data.max_mb_per_domain")
    ap.add_argument("--target", default="pydocs", help="held-out domain")
    ap.add_argument("--sizes", default="dense-0.1m:2000000,dense-0.5m:2000000", help="PRESET:TOKENS,...")
    ap.add_argument("--lr", type=float, default=0.004)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--regmix-trials", type=int, default=24)
    ap.add_argument("--arms", default=",".join(ARMS), help=f"ARM,... of {', '.join(ARMS)} (stratified always)")
    ap.add_argument("--aioli-options", default="", help="KEY=VALUE,... (default: Aioli's published defaults)")
    ap.add_argument("--work", help="folder for the stores and outputs (default: a new temp folder)")
    args = ap.parse_args()
    args.aioli_options = {k: float(v) if "." in v else int(v) for k, v in
                          (kv.split("=") for kv in args.aioli_options.split(",") if kv)}
    args.arms = {"stratified", *args.arms.split(",")}
    if args.arms - set(ARMS):
        ap.error(f"--arms: unknown {', '.join(sorted(args.arms - set(ARMS)))}; allowed: {', '.join(ARMS)}")
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-online-"))
    print(f"work folder: {work}; aioli options: {args.aioli_options or 'published defaults'}")
    tables = []
    for item in args.sizes.split(","):
        preset, tokens = item.split(":")
        t0 = time.time()
        cfg = base_config(args, work, preset, int(tokens))
        store = InMemoryStorage()
        rcfg = replace(cfg, study=f"regmix-{preset}", search=SearchConfig("regmix", {}, max(8, args.regmix_trials // 2)),
                       budget=BudgetConfig(trials=args.regmix_trials))
        rec = None
        if args.arms & {"regmix", "aioli-regmix"}:
            rec = run(rcfg, storage=store, progress=lambda m: None).recommendation.mixture
            print(f"{preset}: regmix recommendation {dict(sorted(rec.items(), key=lambda kv: -kv[1])[:3])} "
                  f"({time.time() - t0:.0f} s)", flush=True)
        res, _ = arm_runs(args, cfg, store, preset, rec)
        tables.append(report(preset, res, args.regmix_trials, args.seeds))
        print(tables[-1], flush=True)
        print(f"{preset}: {time.time() - t0:.0f} s", flush=True)
    print("\n".join(tables))


if __name__ == "__main__":
    main()
