"""Command line: ``mixopt data prepare | run | predict | replay | recommend | runs export | fit |
transfer | dashboard | ui``.

User mistakes print one line ``mixopt: error: ...`` and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from mixopt.errors import UserError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        raise UserError(f"{self.prog}: {message}")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="mixopt", description="Data-mixture optimization for LM pre-training.")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    data = sub.add_parser("data", help="corpus commands")
    dsub = data.add_subparsers(dest="data_cmd", required=True, parser_class=_Parser)
    prep = dsub.add_parser("prepare", help="build (or reuse) the cached token corpus")
    prep.add_argument("config", nargs="?", help="study YAML (its data: section is used)")
    prep.add_argument("--recipe", help="pip (default), debian, or a folder with one subfolder per domain")
    prep.add_argument("--tokenizer", choices=["bpe", "bytes"])
    prep.add_argument("--vocab-size", type=int)
    prep.add_argument("--max-mb-per-domain", type=float)
    prep.add_argument("--cache-dir")

    r = sub.add_parser("run", help="run a study: proxies on Ray, tracked in MLflow, then recommend")
    r.add_argument("config", nargs="?", help="study YAML (default: embedded defaults)")
    r.add_argument("--dry-run", action="store_true", help="print the resolved config and space; run nothing")
    r.add_argument("--resume", action="store_true", help="continue the study of this name from its store")
    r.add_argument("--trials", type=int, help="shorthand for --budget.trials=N")

    pr = sub.add_parser("predict", help="fit a surrogate on a runs table, report rank correlation on another")
    pr.add_argument("--train", required=True)
    pr.add_argument("--test", required=True)
    pr.add_argument("--objective", required=True, help="metric column, e.g. loss.pile_cc")
    pr.add_argument("--surrogate", default="lightgbm")
    pr.add_argument("--n-train", type=int)
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--json", action="store_true")

    rc = sub.add_parser("recommend", help="recommend a mixture from a study in the store")
    rc.add_argument("config", nargs="?", help="study YAML (names the study and store)")
    rc.add_argument("--study", help="study name (overrides the config's)")
    rc.add_argument("--tracking-uri", help="MLflow URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    rc.add_argument("--json", action="store_true")

    fit = sub.add_parser("fit", help="scaling-law fits on a study's runs; logged to MLflow")
    fit.add_argument("config", nargs="?", help="study YAML (names the study and store)")
    fit.add_argument("--study")
    fit.add_argument("--tracking-uri")
    fit.add_argument("--kind", default="loss_scale,mixing_law",
                     help="comma-separated: loss_scale (L = E + A/N^a + B/D^b per mixture), mixing_law (across scale), "
                     "moe_el (MoE efficiency leverage vs dense; needs dense and MoE rungs)")
    fit.add_argument("--target-params", type=float, help="N of the target scale (default 4x the largest rung)")
    fit.add_argument("--target-tokens", type=float, help="D of the target scale (default 4x the largest rung)")
    fit.add_argument("--bootstrap", type=int, default=100, help="bootstrap replicates for intervals")
    fit.add_argument("--json", action="store_true")

    tr = sub.add_parser("transfer", help="train the recommendation and baselines at a larger scale, several seeds")
    tr.add_argument("config", nargs="?", help="study YAML of the finished study")
    tr.add_argument("--study")
    tr.add_argument("--tracking-uri")
    tr.add_argument("--seeds", type=int, default=3)
    tr.add_argument("--scale", type=float, default=4.0, help="x params and x tokens of the proxies")
    tr.add_argument("--preset", help="explicit larger preset")
    tr.add_argument("--tokens", type=int, help="explicit token budget")
    tr.add_argument("--mixture", action="append", default=[], help="YAML/JSON mixture to compare too (repeatable)")
    tr.add_argument("--resume", action="store_true")

    from mixopt.replay import add_replay_parser

    add_replay_parser(sub)

    from dashboards.cli import add_dashboard_parser, add_ui_parser

    add_dashboard_parser(sub)
    add_ui_parser(sub)

    runs = sub.add_parser("runs", help="runs-table commands")
    rsub = runs.add_subparsers(dest="runs_cmd", required=True, parser_class=_Parser)
    ex = rsub.add_parser("export", help="write a study's trials as a runs table (CSV or Parquet)")
    ex.add_argument("config", nargs="?")
    ex.add_argument("--study")
    ex.add_argument("--tracking-uri")
    ex.add_argument("--out", required=True, help="file.csv or file.parquet")
    return p


def _config(args: argparse.Namespace, extra: list[str]):
    from mixopt.config import load_config

    overrides = list(extra)
    if getattr(args, "trials", None) is not None:
        overrides.append(f"--budget.trials={args.trials}")
    if getattr(args, "study", None):
        overrides.append(f"--study={args.study}")
    if getattr(args, "tracking_uri", None):
        overrides.append(f"--tracking_uri={args.tracking_uri}")
    return load_config(args.config, overrides)


def _cmd_prepare(args, extra) -> int:
    from mixopt.runner import open_corpus

    for flag, key in (("recipe", "recipe"), ("tokenizer", "tokenizer"), ("vocab_size", "vocab_size"),
                      ("max_mb_per_domain", "max_mb_per_domain"), ("cache_dir", "cache_dir")):
        v = getattr(args, flag)
        if v is not None:
            extra.append(f"--data.{key}={v}")
    args.trials = None
    cfg = _config(args, extra)
    corpus = open_corpus(cfg)
    counts = corpus.token_counts("train")
    val = corpus.token_counts("val")
    print(f"corpus: {corpus.path}")
    print(f"{'domain':<14}{'train tokens':>14}{'val tokens':>12}")
    for d in corpus.domains:
        print(f"{d:<14}{counts[d]:>14,}{val[d]:>12,}")
    return 0


def _cmd_run(args, extra) -> int:
    from mixopt.config import to_yaml

    cfg = _config(args, extra)
    if args.dry_run:
        from mixopt.runner import precheck

        domains = precheck(cfg)
        print(to_yaml(cfg), end="")
        print(f"# corpus domains: {', '.join(domains)}")
        print(f"# tracking: {cfg.resolved_tracking_uri()}\n# outputs: {cfg.output_dir}/{cfg.study}/")
        return 0
    from mixopt.runner import run

    run(cfg, resume=args.resume)
    return 0


def _cmd_predict(args, extra) -> int:
    _no_extra(extra)
    from mixopt.predict import predict

    res = predict(args.train, args.test, args.objective, args.surrogate, n_train=args.n_train, seed=args.seed)
    if args.json:
        print(json.dumps(res))
    else:
        print(f"surrogate {res['surrogate']} on {res['n_train']} training runs -> {res['n_test']} test runs "
              f"({res['objective']}): spearman {res['spearman']:.4f}  pearson {res['pearson']:.4f}")
    return 0


def _open(args, extra):
    cfg = _config(args, extra)
    from mixopt.study import load_study

    return cfg, load_study(cfg.study, cfg.resolved_tracking_uri())


def _cmd_recommend(args, extra) -> int:
    args.trials = None
    cfg, study = _open(args, extra)
    rec = study.recommend()
    doc: dict[str, Any] = {"study": study.name, "mixture": rec.mixture.to_dict(), "predicted_objective": rec.predicted}
    if args.json:
        print(json.dumps(doc))
    else:
        from mixopt.report import summary_table

        print(summary_table(study, rec))
    return 0


def _cmd_export(args, extra) -> int:
    args.trials = None
    from mixopt.runs_table import write_runs_table

    _, study = _open(args, extra)
    df = study.to_dataframe()
    write_runs_table(df, args.out)
    print(f"wrote {len(df)} runs to {args.out}")
    return 0


def _cmd_fit(args, extra) -> int:
    from mixopt.fitting import run_fit
    from mixopt.tracking import MlflowStorage

    args.trials = None
    cfg, study = _open(args, extra)
    if args.bootstrap < 0:
        raise UserError("fit --bootstrap: must be >= 0")
    target = None
    if args.target_params or args.target_tokens:
        if not (args.target_params and args.target_tokens):
            raise UserError("fit: give both --target-params and --target-tokens (or neither)")
        target = (args.target_params, args.target_tokens)
    res = run_fit(study, MlflowStorage(cfg.resolved_tracking_uri(), create=False),
                  [k.strip() for k in args.kind.split(",") if k.strip()], target, args.bootstrap, cfg.output_dir,
                  progress=lambda m: print(m, file=sys.stderr))
    if args.json:
        print(json.dumps(res))
        return 0
    for kind, r in res.items():
        if "skipped" in r:
            continue  # said on stderr already
        if kind == "loss_scale":
            held = ("n/a (too few runs to hold one out per mixture)" if r["heldout_rel_error_mean"] is None else
                    f"mean {r['heldout_rel_error_mean']:.2%}, max {r['heldout_rel_error_max']:.2%}")
            print(f"loss vs scale: L = E + A/N^{r['alpha']:.3f} + B/D^{r['beta']:.3f}; held-out relative error {held}")
            print(f"  {'mixture':<14}{'E':>9}{'held-out err':>14}  predicted at N={r['target_params']:.3g}, "
                  f"D={r['target_tokens']:.3g} (90% CI)")
            for m in r["mixtures"]:
                lo, hi = m["pred_target_90ci"]
                err = "n/a" if m["heldout_rel_error"] is None else f"{m['heldout_rel_error']:.2%}"
                print(f"  {m['label']:<14}{m['E']:>9.4f}{err:>14}  {m['pred_target']:.4f} "
                      f"[{lo:.4f}, {hi:.4f}]")
        elif kind == "moe_el":
            print(f"MoE efficiency leverage: {r['form']}; a={r['a']:.3f} d={r['d']:.3f} beta={r['beta']:.3f} "
                  f"gamma={r['gamma']:.3f}; mean relative error {r['rel_error_mean']:.2%} over {len(r['runs'])} runs")
        else:
            best = ", ".join(f"{d}={w:.3f}" for d, w in r["best_mixture_at_target"].items())
            print(f"mixing law across {len(r['rungs'])} scales -> best mixture at the target: {best} "
                  f"(predicted {r['predicted_at_target']:.4f})")
    return 0


def _cmd_transfer(args, extra) -> int:
    from mixopt.transfer import run_transfer

    args.trials = None
    cfg = _config(args, extra)
    run_transfer(cfg, seeds=args.seeds, scale=args.scale, preset=args.preset, tokens=args.tokens,
                 mixture_files=tuple(args.mixture), resume=args.resume)
    return 0


def _no_extra(extra: list[str]) -> None:
    if extra:
        raise UserError(f"unrecognized arguments: {' '.join(extra)}")


_COMMANDS = {"data": _cmd_prepare, "run": _cmd_run, "predict": _cmd_predict, "recommend": _cmd_recommend,
             "runs": _cmd_export, "fit": _cmd_fit, "transfer": _cmd_transfer}
_TOP_KEYS = {"seed", "tracking_uri", "output_dir", "ladder", "objective"}


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """Pull ``--a.b=c`` / ``--a.b c`` config overrides out before argparse sees them (argparse
    would take a value with spaces, or the word after ``--a.b``, for the config path)."""
    rest, overrides, i = [], [], 0
    while i < len(argv):
        a = argv[i]
        key = a[2:].split("=", 1)[0] if a.startswith("--") else ""
        if key and ("." in key or key in _TOP_KEYS):
            if "=" in a or i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                overrides.append(a)
            else:
                overrides.append(f"{a}={argv[i + 1]}")
                i += 1
        else:
            rest.append(a)
        i += 1
    return rest, overrides


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in ("run", "data", "recommend", "runs", "fit", "transfer"):
            argv, overrides = split_overrides(argv)
        else:
            overrides = []
        args, extra = _parser().parse_known_args(argv)
        extra = overrides + extra
        if args.cmd in _COMMANDS:
            return _COMMANDS[args.cmd](args, extra)
        if args.cmd == "replay":
            from mixopt.replay import cmd_replay

            return cmd_replay(args, extra)
        _no_extra(extra)
        from dashboards.cli import cmd_dashboard, cmd_ui

        return cmd_dashboard(args) if args.cmd == "dashboard" else cmd_ui(args)
    except UserError as e:
        print(f"mixopt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
