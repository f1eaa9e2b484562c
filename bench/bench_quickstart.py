"""Wall time of the quickstart study on this machine, and the share spent outside proxy training.

Runs ``mixopt run examples/quickstart.yaml`` in-process (fresh SQLite store and output folder
in a temp dir; the cached corpus is reused unless --cold) and prints:
wall time, summed in-trial training seconds, and
outside share = 1 - training seconds / (workers * wall).

``--compare`` runs it twice in one go, first with the reference trial function (one
``nn.Module`` per trial, ``mixopt.proxies.train:run_trial``, the default before the batched
engine) and then with the default (the engine, ``mixopt.proxies.pack_train:run_one``), and
prints the wall-time ratio and how far what the study reports moved: the initial-design trials
(same mixtures, same seeds in both runs) by their largest objective difference, and each run's
recommendation (the searcher's later proposals follow the trials it was told, so they can part).

    .venv/bin/python bench/bench_quickstart.py [--trials 32] [--cold] [--compare] [--proxy.preset=moe-0.1m ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mixopt.cli import run_study as run  # noqa: E402
from mixopt.run.config import load_config  # noqa: E402
from mixopt.run.executors import TRIAL_FN, make_executor  # noqa: E402

REFERENCE_FN = "mixopt.proxies.train:run_trial"


def once(args: argparse.Namespace, fn: str) -> tuple[float, object, object]:
    """-> (wall seconds, config, RunOutcome) of one quickstart run with trial function ``fn``."""
    with tempfile.TemporaryDirectory() as tmp:
        ov = [f"--tracking_uri=sqlite:///{tmp}/mlflow.db", f"--output_dir={tmp}/out", *args.overrides]
        if args.trials:
            ov.append(f"--budget.trials={args.trials}")
        if args.cold:
            ov.append(f"--data.cache_dir={tmp}/cache")
        cfg = load_config(args.config, ov)
        t0 = time.perf_counter()
        out = run(cfg, executor=make_executor(cfg.executor, fn))
        wall = time.perf_counter() - t0
    w = cfg.executor.workers
    print(f"quickstart ({fn}): {cfg.budget.trials} trials, {w} workers, wall {wall:.1f} s "
          f"({wall / 60:.1f} min); in-trial training {out.train_seconds:.1f} worker-s; "
          f"share of worker time outside proxy training {1 - out.train_seconds / (w * wall):.1%}", flush=True)
    return wall, cfg, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="examples/quickstart.yaml")
    ap.add_argument("--trials", type=int)
    ap.add_argument("--cold", action="store_true", help="prepare the corpus from scratch (temp cache, each run)")
    ap.add_argument("--compare", action="store_true", help=f"also run with {REFERENCE_FN} first; print the ratio")
    args, overrides = ap.parse_known_args()  # the rest: --a.b=c config overrides
    args.overrides = overrides
    if not args.compare:
        once(args, TRIAL_FN)
        return
    (w_ref, _, ref), (w_new, _, new) = once(args, REFERENCE_FN), once(args, TRIAL_FN)
    init = {t.trial_id: t for t in ref.study.trials if t.phase == "init" and t.ok}
    diffs = [abs(t.value - init[t.trial_id].value) for t in new.study.trials
             if t.phase == "init" and t.ok and t.trial_id in init and t.mixture == init[t.trial_id].mixture]
    print(f"wall: engine {w_new:.1f} s / reference {w_ref:.1f} s = {w_new / w_ref:.2f}; "
          f"in-trial training {new.train_seconds / ref.train_seconds:.2f}")
    if diffs:
        print(f"initial design: {len(diffs)} trials with the same mixture in both runs, objective differs by "
              f"at most {max(diffs):.2e} (median {sorted(diffs)[len(diffs) // 2]:.2e})")
    for name, o in (("reference", ref), ("engine", new)):
        best, pred = o.study.best(), o.recommendation.predicted
        print(f"{name}: recommendation predicted {'-' if pred is None else f'{pred:.4f}'}; best trial "
              f"{best.trial_id} {best.value:.4f}")


if __name__ == "__main__":
    main()
