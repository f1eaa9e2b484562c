"""``mixopt data prepare | run | recommend | runs export``: the run layer's subcommands.

Config overrides (``--a.b=c``) are pulled out of the arguments first (:func:`split_overrides`);
user mistakes raise :class:`~mixopt.core.errors.UserError` (one line, exit 2).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from typing import Any

from mixopt.core.errors import UserError
from mixopt.core.runs_table import write_runs_table
from mixopt.run.config import StudyConfig, load_config, to_yaml
from mixopt.run.loop import run
from mixopt.run.outputs import CardMaker, Plotter, summary_table
from mixopt.run.plan import StudyPlan
from mixopt.run.target import describe_auto
from mixopt.study import load_study

#: subcommands whose arguments may carry ``--a.b=c`` config overrides
OVERRIDABLE = ("run", "data", "recommend", "runs", "fit", "transfer", "merge-check", "hparams-sweep")


#: gives a config's ``auto`` hyperparameters their numbers (``mixopt.analysis.autohp.resolve_config``)
Resolver = Callable[[StudyConfig], StudyConfig]


def add_parsers(sub, plotters: Sequence[Plotter] = (), resolve: Resolver | None = None,
                card: CardMaker | None = None) -> dict[str, Callable[[argparse.Namespace, list[str]], int]]:
    """Add this layer's subcommands; returns {command: handler(args, overrides)}. The command line passes
    in what the layers above provide: the study plots, the resolver of ``auto`` hyperparameters and the
    run card's maker."""
    data = sub.add_parser("data", help="corpus commands")
    dsub = data.add_subparsers(dest="data_cmd", required=True)  # nested parsers are of the CLI's class
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
    r.add_argument("--study", help="study name (overrides the config's)")
    r.add_argument("--tracking-uri", help="MLflow URI (default: the config's, $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")

    rc = sub.add_parser("recommend", help="recommend a mixture from a study in the store")
    rc.add_argument("config", nargs="?", help="study YAML (names the study and store)")
    rc.add_argument("--study", help="study name (overrides the config's)")
    rc.add_argument("--tracking-uri", help="MLflow URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    rc.add_argument("--json", action="store_true")

    runs = sub.add_parser("runs", help="runs-table commands")
    rsub = runs.add_subparsers(dest="runs_cmd", required=True)  # nested parsers are of the CLI's class
    ex = rsub.add_parser("export", help="write a study's trials as a runs table (CSV or Parquet)")
    ex.add_argument("config", nargs="?")
    ex.add_argument("--study")
    ex.add_argument("--tracking-uri")
    ex.add_argument("--out", required=True, help="file.csv or file.parquet")
    ex.add_argument("--merged", action="store_true", help="write the mixtures scored by merging experts instead "
                    "(model-merging proxies: never trials, a table of their own)")
    return {"data": _cmd_prepare, "run": lambda a, e: _cmd_run(a, e, plotters, resolve, card),
            "recommend": lambda a, e: _cmd_recommend(a, e, card),
            "runs": _cmd_export}


#: command-line flags that set a config key: (argparse dest, dotted key, flag)
_FLAG_KEYS = (("trials", "budget.trials", "--trials"), ("study", "study", "--study"),
              ("tracking_uri", "tracking_uri", "--tracking-uri"), ("recipe", "data.recipe", "--recipe"),
              ("tokenizer", "data.tokenizer", "--tokenizer"), ("vocab_size", "data.vocab_size", "--vocab-size"),
              ("max_mb_per_domain", "data.max_mb_per_domain", "--max-mb-per-domain"),
              ("cache_dir", "data.cache_dir", "--cache-dir"))


def config_from_args(args: argparse.Namespace, extra: list[str]):
    """The study config of a command: its YAML, the ``--a.b=c`` overrides, then the flags it was given."""
    flags = {key: (getattr(args, dest), flag) for dest, key, flag in _FLAG_KEYS
             if getattr(args, dest, None) not in (None, "")}
    return load_config(args.config, list(extra), flags)


def _cmd_prepare(args, extra) -> int:
    cfg = config_from_args(args, extra)
    corpus = StudyPlan.build(cfg, check_exists=False, source=args.config).open_corpus()
    counts = corpus.token_counts("train")
    val = corpus.token_counts("val")
    print(f"corpus: {corpus.path}")
    print(f"{'domain':<14}{'train tokens':>14}{'val tokens':>12}")
    for d in corpus.domains:
        print(f"{d:<14}{counts[d]:>14,}{val[d]:>12,}")
    return 0


def resolved(cfg: StudyConfig, resolve: Resolver | None, source: str | None) -> StudyConfig:
    """``cfg`` with its ``auto`` hyperparameters resolved (errors name the config file)."""
    if resolve is None:
        return cfg
    try:
        return resolve(cfg)
    except UserError as e:
        raise type(e)(f"{source}: {e}" if source and not str(e).startswith(str(source)) else str(e)) from None


def _cmd_run(args, extra, plotters: Sequence[Plotter] = (), resolve: Resolver | None = None,
             card: CardMaker | None = None) -> int:
    cfg = resolved(config_from_args(args, extra), resolve, args.config)
    if args.dry_run:
        domains = StudyPlan.build(cfg, check_exists=False, source=args.config).domains
        print(to_yaml(cfg), end="")
        print("\n".join(describe_auto(cfg.hparams)))
        print(f"# corpus domains: {', '.join(domains)}")
        print(f"# tracking: {cfg.resolved_tracking_uri()}\n# outputs: {cfg.output_dir}/{cfg.study}/")
        return 0
    out = run(cfg, resume=args.resume, plotters=plotters, source=args.config, card=card)
    return 130 if out.interrupted else 0


def open_study_from_args(args, extra):
    cfg = config_from_args(args, extra)
    return cfg, load_study(cfg.study, cfg.resolved_tracking_uri())


def _cmd_recommend(args, extra, card: CardMaker | None = None) -> int:
    cfg, study = open_study_from_args(args, extra)
    rec = study.recommend()
    doc: dict[str, Any] = {"study": study.name, "mixture": rec.mixture.to_dict(), "predicted_objective": rec.predicted}
    made = card(cfg, study, rec) if card is not None else None
    if made is not None:
        doc["card"] = made.doc
    if args.json:
        print(json.dumps(doc))
    else:
        print(summary_table(study, rec, card=made))
    return 0


def _cmd_export(args, extra) -> int:
    _, study = open_study_from_args(args, extra)
    df = study.merged_scores() if args.merged else study.to_dataframe()
    if args.merged and df.empty:
        raise UserError(f"runs export --merged: study {study.name!r} has no merged scores (no merge: section ran)")
    write_runs_table(df, args.out)
    print(f"wrote {len(df)} {'merged scores' if args.merged else 'runs'} to {args.out}")
    return 0


def no_extra(extra: list[str]) -> None:
    if extra:
        raise UserError(f"unrecognized arguments: {' '.join(extra)}")


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


