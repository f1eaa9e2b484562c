"""``mixopt predict | replay | fit | transfer``: the analysis layer's subcommands."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from mixopt.analysis.autohp import resolve_config
from mixopt.analysis.fits import run_fit
from mixopt.analysis.hparams_cli import add_fit_arguments, cmd_fit_runs, parse_point, print_fit
from mixopt.analysis.predict import predict
from mixopt.analysis.replay import add_replay_parser, cmd_replay
from mixopt.analysis.transfer import run_transfer
from mixopt.core.errors import UserError
from mixopt.run.cli import config_from_args, no_extra, open_study_from_args, resolved


def add_parsers(sub) -> dict[str, Callable[[argparse.Namespace, list[str]], int]]:
    """Add this layer's subcommands; returns {command: handler(args, extra)}."""
    pr = sub.add_parser("predict", help="fit a surrogate on a runs table, report rank correlation on another")
    pr.add_argument("--train", required=True)
    pr.add_argument("--test", required=True)
    pr.add_argument("--objective", required=True, help="metric column, e.g. loss.pile_cc")
    pr.add_argument("--surrogate", default="lightgbm",
                    help="auto | bo | gp | lightgbm | linear | mixing_law (every searcher's model; "
                         "mixopt.search.surrogates)")
    pr.add_argument("--surrogate-option", action="append", default=[], metavar="KEY=VALUE",
                    help="surrogate option (value parsed as YAML), repeatable, e.g. warp=clr or restarts=2")
    pr.add_argument("--n-train", type=int)
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--json", action="store_true")

    fit = sub.add_parser("fit", help="scaling-law fits on a study's runs (logged to MLflow) or, kind hparams, "
                         "on a runs table")
    fit.add_argument("config", nargs="?", help="study YAML (names the study and store)")
    fit.add_argument("--study")
    fit.add_argument("--tracking-uri")
    fit.add_argument("--kind", default=None,
                     help="comma-separated: loss_scale (L = E + A/N^a + B/D^b per mixture), mixing_law (across scale), "
                     "moe_el (MoE efficiency leverage vs dense; needs dense and MoE rungs), hparams (lr and batch "
                     "size laws, Step Law forms); default loss_scale,mixing_law, or hparams with --runs")
    fit.add_argument("--target-params", type=float, help="N of the target scale (default 4x the largest rung)")
    fit.add_argument("--target-tokens", type=float, help="D of the target scale (default 4x the largest rung)")
    fit.add_argument("--bootstrap", type=int, default=100, help="bootstrap replicates for intervals")
    fit.add_argument("--json", action="store_true")
    add_fit_arguments(fit)

    tr = sub.add_parser("transfer", help="train the recommendations and baselines at a larger scale, several seeds; "
                        "paired comparison and a scaling-law prediction of each")
    tr.add_argument("config", nargs="?", help="study YAML of the finished study")
    tr.add_argument("--study")
    tr.add_argument("--tracking-uri")
    tr.add_argument("--seeds", type=int, default=3)
    tr.add_argument("--factor", type=float, default=4.0, help="x params and x tokens of the proxies")
    tr.add_argument("--scale", dest="factor_old", type=float, help=argparse.SUPPRESS)  # the old name of --factor
    tr.add_argument("--preset", help="explicit larger preset")
    tr.add_argument("--tokens", type=int, help="explicit token budget")
    tr.add_argument("--from", dest="sources", action="append", default=[], metavar="STUDY",
                    help="another finished study (same domains and objective) whose recommendation is an arm too "
                    "(repeatable); arms are then named by searcher")
    tr.add_argument("--rung", action="append", default=[], metavar="PRESET:TOKENS",
                    help="a smaller scale every arm is also trained at once (repeatable; >= 4 for a prediction): "
                    "L = E + A/N^a + B/D^b is fitted on the rungs and each arm's target loss predicted")
    tr.add_argument("--no-best", action="store_true", help="leave out the best proxy trial's own mixture")
    tr.add_argument("--mixture", action="append", default=[], help="YAML/JSON mixture to compare too, labelled by its "
                    "file name (repeatable)")
    tr.add_argument("--arm", action="append", default=[], metavar="LABEL:FILE",
                    help="a mixture file as an arm named LABEL, e.g. inferred:mixture.yaml from `mixopt infer-mixture` "
                    "(repeatable)")
    tr.add_argument("--name", help="the transfer study's name (default: <study>-transfer)")
    tr.add_argument("--resume", action="store_true")

    mc = sub.add_parser("merge-check", help="train random mixtures for real beside their merged scores (model-merging "
                        "proxies): rank correlation per objective, model size and seed fraction, with the compute")
    mc.add_argument("config", nargs="?", help="study YAML (its data, proxy and objective)")
    mc.add_argument("--mixtures", type=int, default=32, help="random mixtures trained and merged (default 32)")
    mc.add_argument("--seed-fraction", type=_seed_fraction, action="append", default=[], metavar="S",
                    help="the seed's share of the proxy's tokens, or auto (by the proxy's steps; repeatable; default: "
                         "the config's merge.seed_fraction)")
    mc.add_argument("--scale", type=float, action="append", default=[], metavar="L",
                    help="the merge's task-vector scale around the seed (repeatable; default: the config's merge.scale)")
    mc.add_argument("--power", type=float, action="append", default=[], metavar="P",
                    help="the merge coefficients' exponent: a mixture w is merged with weights w ** P, renormalized "
                         "(repeatable; default: the config's merge.power)")
    mc.add_argument("--debias", action="store_true", help="also score each mixture w by merging the continuation "
                    "mixture (w - s * base) / (1 - s) that, after the seed's share s on the base mixture, makes w "
                    "the whole training's mixture (rows marked debias)")
    mc.add_argument("--preset", action="append", default=[], help="proxy preset(s) to check (default: the config's)")
    mc.add_argument("--target", help="held-out target domain (default: the config's objective target)")
    mc.add_argument("--no-regmix", action="store_true", help="leave out RegMix's regression on the same compute")
    mc.add_argument("--ceiling", action="store_true", help="train the mixtures again with the next proxy seed: how "
                    "well trained proxies rank them against each other (the most any proxy can reach)")
    mc.add_argument("--resamples", type=int, default=3, help="resampled validation sets for a merged score's noise")
    mc.add_argument("--name", help="the check's study name (default: <study>-merge-check)")
    mc.add_argument("--study")
    mc.add_argument("--tracking-uri")
    mc.add_argument("--branch", action="store_true",
                    help="also train the mixtures as branches of each seed (the seed continued on the mixture, what "
                         "merge.branch trains): branches vs trained, and merged vs branches")
    mc.add_argument("--resume", action="store_true")
    mc.add_argument("--json", action="store_true")

    add_replay_parser(sub)
    return {"predict": _cmd_predict, "fit": _cmd_fit, "replay": cmd_replay, "transfer": _cmd_transfer,
            "merge-check": _cmd_merge_check}


def _seed_fraction(text: str) -> float | str:
    """``--seed-fraction``: ``auto`` or a number (range checked by the check)."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: allowed: auto or a number in (0, 1)") from None


def _cmd_merge_check(args, extra) -> int:
    from mixopt.analysis.merge_check import run_merge_check

    cfg = resolved(config_from_args(args, extra), resolve_config, args.config)  # `auto` lr / batch size
    if args.resamples < 0:
        raise UserError("merge-check --resamples: must be >= 0")
    doc = run_merge_check(cfg, mixtures=args.mixtures, seed_fractions=tuple(args.seed_fraction or [cfg.merge.seed_fraction]),
                          scales=tuple(args.scale or [cfg.merge.scale]), powers=tuple(args.power or [cfg.merge.power]),
                          presets=tuple(args.preset), target=args.target, regmix=not args.no_regmix, ceiling=args.ceiling,
                          debias=(False, True) if args.debias else (False,),
                          resamples=args.resamples, name=args.name, resume=args.resume, branch=args.branch,
                          progress=lambda m: print(m, file=sys.stderr))
    if args.json:
        print(json.dumps(doc))
    return 0


def _cmd_transfer(args, extra) -> int:
    cfg = resolved(config_from_args(args, extra), resolve_config, args.config)  # `auto` lr / batch size
    if args.factor_old is not None:
        print("mixopt transfer: --scale is now --factor (x params and x tokens)", file=sys.stderr)
        args.factor = args.factor_old
    run_transfer(cfg, seeds=args.seeds, factor=args.factor, preset=args.preset, tokens=args.tokens,
                 mixture_files=tuple(args.mixture), arm_files=tuple(args.arm), sources=tuple(args.sources),
                 rungs=tuple(args.rung),
                 best=not args.no_best, name=args.name, resume=args.resume)
    return 0


def _cmd_predict(args, extra) -> int:
    no_extra(extra)
    res = predict(args.train, args.test, args.objective, args.surrogate, n_train=args.n_train, seed=args.seed,
                  surrogate_options=_key_values(args.surrogate_option, "--surrogate-option"))
    if args.json:
        print(json.dumps(res))
    else:
        corr = (f"spearman {res['spearman']:.4f}  pearson {res['pearson']:.4f}" if res["spearman"] is not None
                else res["note"])
        print(f"surrogate {res['surrogate']} on {res['n_train']} training runs -> {res['n_test']} test runs "
              f"({res['objective']}): {corr}")
    return 0


def _key_values(items: list[str], flag: str) -> dict:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}`` (values parsed as YAML); UserError if malformed."""
    import yaml

    out: dict = {}
    for it in items:
        key, eq, raw = it.partition("=")
        if not eq or not key.strip():
            raise UserError(f"{flag}: {it!r} must be KEY=VALUE")
        try:
            out[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def _cmd_fit(args, extra) -> int:
    kinds = [k.strip() for k in (args.kind or ("hparams" if args.runs else "loss_scale,mixing_law")).split(",")
             if k.strip()]
    if args.runs:
        return cmd_fit_runs(args, kinds, extra)
    cfg, study = open_study_from_args(args, extra)
    if args.bootstrap < 0:
        raise UserError("fit --bootstrap: must be >= 0")
    target = None
    if args.target_params or args.target_tokens:
        if not (args.target_params and args.target_tokens):
            raise UserError("fit: give both --target-params and --target-tokens (or neither)")
        target = (args.target_params, args.target_tokens)
    if args.predict:
        target = parse_point(args.predict)
    res = run_fit(study, study.storage, kinds, target, args.bootstrap, cfg.output_dir,
                  progress=lambda m: print(m, file=sys.stderr), tolerance=args.tolerance, seq_len=args.seq_len,
                  optimum=args.optimum)
    if args.json:
        print(json.dumps(res))
        return 0
    for kind, r in res.items():
        if "skipped" in r:
            continue  # said on stderr already
        if kind == "loss_scale":
            held = ("n/a (too few runs to hold one out per mixture)" if r["heldout_rel_error_mean"] is None else
                    f"mean {r['heldout_rel_error_mean']:.2%}, max {r['heldout_rel_error_max']:.2%}")
            bound = [k for k in ("alpha", "beta") if r[f"{k}_on_bound"]]
            print(f"loss vs scale: L = E + A/N^{r['alpha']:.3f} + B/D^{r['beta']:.3f}"
                  f"{' (on a bound: ' + ', '.join(bound) + ')' if bound else ''}; held-out relative error {held}")
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
            held = r["heldout"]
            print("  held-out compute level: " + ("n/a (one compute level)" if held is None else
                  f"D={held['tokens']:.3g} tokens (C={held['compute'][0]:.3g}-{held['compute'][1]:.3g}), "
                  f"mean relative error {held['rel_error_mean']:.2%}") +
                  f"; the paper's law: mean relative error {r['published']['rel_error_mean']:.2%}")
        elif kind == "hparams":
            print_fit(r)
        else:
            best = ", ".join(f"{d}={w:.3f}" for d, w in r["best_mixture_at_target"].items())
            print(f"mixing law across {len(r['rungs'])} scales -> best mixture at the target: {best} "
                  f"(predicted {r['predicted_at_target']:.4f})")
    return 0
