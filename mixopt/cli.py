"""Command line: ``mixopt data prepare | run | predict | replay | recommend | runs export | fit |
transfer | dashboard | ui | serve``.

This module only composes each layer's own subcommands (``mixopt.run.cli``,
``mixopt.analysis.cli``, ``mixopt.dashboards.cli``, ``mixopt.serve.cli``). User mistakes print
one line ``mixopt: error: ...`` and exit with code 2.
"""

from __future__ import annotations

import argparse
import sys

from mixopt.analysis import cli as analysis_cli
from mixopt.analysis import hparams_cli, hparams_sweep, infer_cli
from mixopt.analysis.autohp import resolve_config
from mixopt.analysis.card import make_card
from mixopt.core.errors import UserError
from mixopt.dashboards import cli as dashboards_cli
from mixopt.dashboards.plots import study_plots
from mixopt.run import cli as run_cli
from mixopt.run.config import StudyConfig
from mixopt.run.loop import RunOutcome, run
from mixopt.serve import cli as serve_cli


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        raise UserError(f"{self.prog}: {message}")


def _parser() -> tuple[argparse.ArgumentParser, dict]:
    p = _Parser(prog="mixopt", description="Data-mixture optimization for LM pre-training.")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    handlers = {}
    handlers.update(run_cli.add_parsers(sub, plotters=[study_plots], resolve=resolve_config, card=make_card))
    handlers.update(analysis_cli.add_parsers(sub))
    handlers.update(infer_cli.add_parsers(sub))
    handlers.update(hparams_cli.add_parsers(sub))
    handlers.update(hparams_sweep.add_parsers(sub))
    handlers.update(dashboards_cli.add_parsers(sub))
    handlers.update(serve_cli.add_parsers(sub))
    return p, handlers


def run_study(cfg: StudyConfig, **kwargs) -> RunOutcome:
    """``mixopt run`` from Python: :func:`mixopt.run.loop.run` with the config's ``auto`` hyperparameters
    resolved, the study plots drawn and the run card written at the end."""
    return run(resolve_config(cfg), plotters=[study_plots], card=make_card, **kwargs)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in run_cli.OVERRIDABLE:
            argv, overrides = run_cli.split_overrides(argv)
        else:
            overrides = []
        parser, handlers = _parser()
        args, extra = parser.parse_known_args(argv)
        return handlers[args.cmd](args, overrides + extra)
    except UserError as e:
        print(f"mixopt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
