"""``mixopt transfer``: does the mixture found with small proxies win at a larger scale?

Arms, each trained at the target scale (by default the smallest preset with >= ``factor`` x the
proxies' (active) non-embedding params, and ``factor`` x their tokens; or an explicit preset and
token budget) with ``seeds`` seeds:

* the recommendation of the study, and of every ``--from`` study (same domains and objective;
  labelled ``recommended`` when there is one study, else by searcher, or by study name when two
  share a searcher);
* ``best-trial``: the best finished proxy trial's own mixture, over those studies;
* ``uniform`` and ``natural`` (proportional to the available tokens), projected into the space;
* any user mixture files.

Seed ``s`` is the same model initialisation and the same sampler seed in every arm, so the
differences between arms are paired. With ``rungs`` (``--rung PRESET:TOKENS``, smaller than the
target) every arm is also trained once at each rung, ``L = E + A/N^alpha + B/D^beta`` is fitted to
the rung runs only (exponents shared across the arms, :mod:`mixopt.analysis.scaling_laws`) and
each arm's target loss is predicted before it is compared with the measurement.

The report (printed, ``transfer.json``, ``transfer.png`` and an MLflow run of role ``transfer`` in
the ``<study>-transfer`` experiment) gives per arm the mean +- s.e. over seeds and the predicted
loss; paired differences against uniform and natural (mean +- s.e. over seeds, paired t-test);
for every other arm its margin over the better baseline in paired standard errors; and the
fit's exponents with bootstrap 90 % intervals and whether they sit on their bounds.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from mixopt.analysis.autohp import resolve_derived
from mixopt.analysis.scaling_laws import EXPONENT_BOUNDS, bootstrap_fits, fit_loss_scale, on_bound
from mixopt.core.errors import AlreadyExistsError, ConfigError, MixtureError, UserError
from mixopt.core.mixture import Mixture
from mixopt.core.names import check_study_name
from mixopt.core.spec import DENSE_PRESETS, MOE_PRESETS, ProxySpec
from mixopt.run.config import BudgetConfig, SearchConfig, StudyConfig, SweepConfig
from mixopt.run.loop import execute
from mixopt.run.plan import StudyPlan
from mixopt.study import Storage, Study, get_storage, load_study

BASELINES = ("uniform", "natural")
BEST = "best-trial"


def larger_spec(spec: ProxySpec, factor: float, preset: str | None = None, tokens: int | None = None) -> ProxySpec:
    """The smallest preset of the same family with >= factor x the (active) non-embedding params, and
    factor x the tokens (unless given)."""
    if preset is None:
        family = MOE_PRESETS if spec.arch == "moe" else DENSE_PRESETS
        need = factor * spec.active_non_embedding_params()
        fitting = sorted((spec.with_preset(p).active_non_embedding_params(), p) for p in family
                         if spec.with_preset(p).active_non_embedding_params() >= need)
        if not fitting:
            raise UserError(f"transfer: no {spec.arch} preset has {factor:g}x the "
                            f"{spec.active_non_embedding_params():,} (active) non-embedding params of "
                            f"{spec.preset!r}; pass --preset or a smaller --factor")
        preset = fitting[0][1]
    return spec.with_preset(preset, tokens=int(tokens or math.ceil(factor * spec.tokens)))


def parse_rung(text: str, base: ProxySpec) -> ProxySpec:
    """``PRESET:TOKENS`` (e.g. ``dense-3k:320000``) -> the base spec on that preset and budget."""
    preset, sep, tok = str(text).partition(":")
    try:
        tokens = int(tok.replace("_", ""))
    except ValueError:
        tokens = 0
    if not sep or not preset or tokens < 1:
        raise UserError(f"transfer --rung {text!r}: expected PRESET:TOKENS with a positive integer token "
                        "budget, e.g. dense-3k:320000")
    try:
        return base.with_preset(preset, tokens=tokens)
    except ConfigError as e:
        raise UserError(f"transfer --rung {text!r}: {e}") from None


def parse_arm(text: str) -> tuple[str | None, str]:
    """``--arm LABEL:FILE`` (or ``--mixture FILE``, labelled by the file name) -> (label or None, file)."""
    label, sep, path = str(text).partition(":")
    if not sep or not label or not path:
        raise UserError(f"transfer --arm {text!r}: expected LABEL:FILE, e.g. inferred:mixture.yaml")
    return label, path


def source_arms(src: Study, others: Sequence[Study], best: bool = True) -> dict[str, dict[str, Any]]:
    """The searched arms: each study's recommendation (+ the best proxy trial's mixture), as
    {label: {"mixture", "proxy" (the searcher's predicted or the trial's measured proxy loss), "from"}}."""
    studies = [src, *others]
    for o in others:
        if tuple(o.space.domains) != tuple(src.space.domains):
            raise UserError(f"transfer --from {o.name}: its domains ({', '.join(o.space.domains)}) differ from "
                            f"{src.name!r}'s ({', '.join(src.space.domains)})")
        if dict(o.objective.weights) != dict(src.objective.weights):
            raise UserError(f"transfer --from {o.name}: its objective ({o.objective.description}) differs from "
                            f"{src.name!r}'s ({src.objective.description})")
    if len({s.name for s in studies}) != len(studies):
        raise UserError("transfer --from: a study is named twice")
    if len(studies) == 1:
        labels = ["recommended"]
    else:
        names = [s.searcher_name for s in studies]
        labels = names if len(set(names)) == len(names) else [s.name for s in studies]
    arms: dict[str, dict[str, Any]] = {}
    for lab, st in zip(labels, studies):
        rec = st.recommend()
        arms[lab] = {"mixture": rec.mixture, "proxy": None if rec.predicted is None else float(rec.predicted),
                     "from": st.name}
    bests = [(t, s) for s in studies if (t := s.best()) is not None]
    if best and bests:
        t, s = min(bests, key=lambda ts: ts[0].value)
        origin = f"{s.name} trial {t.trial_id}"
        same = [lab for lab, a in arms.items() if np.allclose(a["mixture"].as_array(src.space.domains),
                                                              t.mixture.as_array(src.space.domains), atol=1e-9)]
        if same:  # a recommendation that is the best trial's mixture: trained once, said in the report
            arms[same[0]]["same_as"] = f"{BEST} ({origin})"
        else:
            arms[BEST] = {"mixture": t.mixture, "proxy": float(t.value), "from": origin}
    return arms


def run_transfer(cfg: StudyConfig, *, seeds: int = 3, factor: float = 4.0, preset: str | None = None,
                 tokens: int | None = None, mixture_files: tuple[str, ...] = (), arm_files: tuple[str, ...] = (),
                 sources: tuple[str, ...] = (),
                 rungs: tuple[str, ...] = (), best: bool = True, name: str | None = None, resume: bool = False,
                 executor=None, progress: Callable[[str], None] = print, scale: float | None = None) -> dict[str, Any]:
    """Train every arm at the target scale (and the rungs) as study ``name`` (default
    ``<study>-transfer``), then :func:`transfer_table`. ``mixture_files`` are arms labelled by file name,
    ``arm_files`` ``LABEL:FILE`` arms (e.g. ``inferred:mixture.yaml`` from ``mixopt infer-mixture``); weight
    a file puts on a held-out target domain is dropped and the rest renormalized."""
    if scale is not None:
        warnings.warn("run_transfer(scale=...) is now run_transfer(factor=...)", DeprecationWarning, stacklevel=2)
        factor = scale
    if seeds < 1 or factor <= 0:
        raise UserError("transfer: --seeds must be >= 1 and --factor > 0")
    tname = check_study_name(name, "transfer --name") if name is not None else f"{cfg.study}-transfer"
    if tname in (cfg.study, *sources):
        raise UserError(f"transfer --name {tname}: that is a source study; the transfer study needs a name of its own")
    uri = cfg.resolved_tracking_uri()
    store = get_storage(uri, create=False)
    src = load_study(cfg.study, store)
    others = []
    for name in sources:
        if store.load_meta(name) is None:
            raise UserError(f"transfer --from {name}: no such study in {uri}")
        others.append(load_study(name, store))
    base = src.spec or cfg.proxy
    spec = larger_spec(base, factor, preset, tokens)
    rung_specs = [parse_rung(r, base) for r in rungs]
    # `lr: auto` / `batch_size: auto` on the proxies: the target and every rung get the law's numbers at their size
    (spec,), auto_target = resolve_derived(cfg, [spec], "transfer.target", store)
    rung_specs, auto_rungs = resolve_derived(cfg, rung_specs, "transfer.rungs", store)
    for r, rs in zip(rungs, rung_specs):
        if rs.flops_per_token(1) * rs.tokens >= spec.flops_per_token(1) * spec.tokens:
            raise UserError(f"transfer --rung {r}: not smaller than the target ({spec.preset}, {spec.tokens:,} "
                            "tokens); rungs are the smaller scales the target loss is predicted from")
    if len({(s.preset, s.tokens) for s in rung_specs}) != len(rung_specs):
        raise UserError("transfer --rung: a rung is given twice")
    arms = source_arms(src, others, best)
    users: dict[str, dict[str, Any]] = {}  # after the baselines, which are projected into the target's space below
    files = [(None, f) for f in mixture_files] + [parse_arm(a) for a in arm_files]
    for i, (label, f) in enumerate(files):
        flag = f"--arm {label}:{f}" if label else f"--mixture {f}"
        label = label or Path(f).stem or f"user{i}"
        taken = [*arms, *BASELINES, *users]
        if label in taken:
            raise UserError(f"transfer {flag}: the label {label!r} is taken; choose another (taken: {', '.join(taken)})")
        m = Mixture.from_file(f, src.space.domains, f"transfer {flag}", held_out=src.objective.targets)
        users[label] = {"mixture": m, "proxy": None, "from": f}
    old = store.load_meta(tname) if resume else None
    stored = (old.extra.get("transfer_arms") or {}) if old is not None else {}
    asked = {lab: f"--mixture {f}" if given is None else f"--arm {given}:{f}" for lab, (given, f) in zip(users, files)}
    asked.update({lab: f"--from {a['from']}" for lab, a in arms.items() if a["from"] in sources})
    _refuse_new_arms(stored, asked, tname)   # before anything is opened or trained
    n_trials = (len(arms) + len(BASELINES) + len(users)) * (seeds + len(rung_specs))
    tcfg = replace(cfg, study=tname, proxy=spec, ladder=[], sweep=SweepConfig(), search=SearchConfig("random", {}, 0),
                   budget=BudgetConfig(trials=n_trials),
                   hparams=replace(cfg.hparams, resolved={**cfg.hparams.resolved, **auto_target, **auto_rungs}))
    try:  # --resume continues the transfer study if there is one, else starts it
        plan = StudyPlan.build(tcfg, resume=old is not None, storage=store)
    except AlreadyExistsError:
        raise AlreadyExistsError(f"transfer study {tname!r} exists in {uri}; pass --resume to continue it") from None
    if dict(plan.objective.weights) != dict(src.objective.weights):
        raise UserError(f"transfer: the config's objective ({plan.objective.description}) is not study {cfg.study!r}'s "
                        f"({src.objective.description}); use the config the study was run with")
    corpus = plan.open_corpus(progress)
    most = max(s.tokens for s in [spec, *rung_specs])  # the repetition cap is tightest at the most tokens
    space = plan.build_space(corpus.token_counts("train"), proxy_tokens=most)
    arms.update({b: {"mixture": m, "proxy": None, "from": "baseline"} for b, m in plan.baselines(space).items()})
    arms.update(users)
    for label, arm in arms.items():
        try:
            space.validate(arm["mixture"], f"transfer mixture {label!r}")
        except MixtureError as e:
            raise UserError(f"{e} (at {most:,} tokens the repetition cap is tighter; lower --factor/--tokens)") \
                from None
    if plan.resume:  # --seeds raised (or rungs added) on resume: the arms the study reports, as they were
        arms = _resumed_arms(stored, arms, space, tname)
    queue = [(label, arm["mixture"], replace(spec, seed=s)) for s in range(seeds) for label, arm in arms.items()]
    queue += [(label, arm["mixture"], replace(rs, seed=0)) for rs in rung_specs for label, arm in arms.items()]
    study = plan.open_study(space, queue=queue,  # the long runs first: they set the wall time
                            extra={"transfer_of": cfg.study, "transfer_arms": _arms_doc(arms),
                                   "transfer_rungs": [r.to_dict() for r in rung_specs]})
    storage = plan.storage()
    ratio = spec.active_non_embedding_params() / base.active_non_embedding_params()
    progress(f"transfer: {len(arms)} arms x {seeds} seeds at {spec.preset} ({spec.non_embedding_params():,} "
             f"non-embedding params, {spec.tokens:,} tokens; {ratio:.1f}x "
             f"the params and {spec.tokens / base.tokens:.1f}x the tokens of the proxies at {base.preset}, "
             f"{base.tokens:,} tokens)" + (f", and once at {len(rung_specs)} smaller rungs" if rung_specs else ""))
    # every training is queued: a budget above them would let the study's searcher propose mixtures of its own
    execute(replace(tcfg, budget=BudgetConfig(trials=max(1, len(study.trials)))), study, corpus, executor, progress)
    arms_doc = study.meta.extra.get("transfer_arms") or _arms_doc(arms)
    return transfer_table(study, storage, Path(cfg.output_dir) / tname, arms_doc, base, progress)


def _refuse_new_arms(stored: dict[str, Any], asked: dict[str, str], tname: str) -> None:
    """On resume: an arm the command names (``asked``: label -> the flag that named it) that the transfer
    study does not have (``stored``) is refused by name; a resumed transfer cannot take new arms."""
    new = [flag for label, flag in asked.items() if stored and label not in stored]
    if new:
        raise UserError(f"transfer --resume: {', '.join(new)}: study {tname!r} has no such arm (its arms: "
                        f"{', '.join(stored)}); --resume trains more seeds or rungs of the arms it has. "
                        "To compare a new arm, start a new transfer with --name")


def _resumed_arms(stored: dict[str, Any], arms: dict[str, dict[str, Any]], space, tname: str) -> dict[str, dict[str, Any]]:
    """The arms a resumed transfer trains more of: every arm the study reports (``stored``), those this
    command did not name again (an ``--arm`` left off, a source arm renamed by another ``--from``) rebuilt
    from the stored mixture, so every arm gets the new seeds; each refused if it is now another mixture
    than the one trained (a source study resumed since may recommend another one: its new seeds would not
    pair with the old ones)."""
    if not stored:   # stored before transfers kept their arms: as asked
        return arms
    for label, arm in arms.items():
        before = stored.get(label, {}).get("mixture")
        if before is not None and not np.allclose(arm["mixture"].as_array(space.domains),
                                                  Mixture(before, space.domains).as_array(space.domains), atol=1e-9):
            raise UserError(f"transfer --resume: arm {label!r} is now another mixture than the one study "
                            f"{tname!r} trained (its source changed since); start a new transfer (--name)")
    out = {}
    for label, doc in stored.items():
        keep = {"same_as": doc["same_as"]} if "same_as" in doc else {}
        out[label] = arms.get(label) or {"mixture": Mixture(doc["mixture"], space.domains), "proxy": doc.get("proxy"),
                                         "from": doc.get("from"), **keep}
    return out


def _arms_doc(arms: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {k: {"mixture": a["mixture"].to_dict(), "proxy": a["proxy"], "from": a["from"],
                **({"same_as": a["same_as"]} if "same_as" in a else {})} for k, a in arms.items()}


def _same_scale(a: ProxySpec, b: ProxySpec) -> bool:
    return replace(a, seed=0) == replace(b, seed=0)


def paired(a: dict[int, float], b: dict[int, float]) -> dict[str, Any]:
    """Paired difference a - b over the seeds both have: mean, s.e., t, two-sided p (paired t-test)."""
    from scipy import stats

    common = sorted(set(a) & set(b))
    d = np.array([a[s] - b[s] for s in common])
    out: dict[str, Any] = {"n": len(d), "diff": float(d.mean()) if len(d) else math.nan, "sem": math.nan,
                           "t": math.nan, "p": math.nan}
    if len(d) > 1:
        out["sem"] = float(d.std(ddof=1) / math.sqrt(len(d)))
        if out["sem"] > 0:
            test = stats.ttest_rel([a[s] for s in common], [b[s] for s in common])
            out["t"], out["p"] = float(test.statistic), float(test.pvalue)
    return out


def scaling_prediction(study: Study, labels: list[str], target: ProxySpec, reps: int = 100,
                       seed: int = 0) -> dict[str, Any] | None:
    """Fit ``L = E + A/N^alpha + B/D^beta`` on the rung runs (not the target's) of every arm and
    predict each arm at the target; None without enough rung runs (>= 3 per arm + 2)."""
    from mixopt.analysis.fits import params_of

    rows = [(labels.index(t.label), params_of(t.spec), t.tokens_seen, t.value)
            for t in study.trials if t.ok and t.label in labels and not _same_scale(t.spec, target)]
    if not rows:
        return None
    g, N, D, L = (np.array(v) for v in zip(*rows))
    present = sorted(set(g.tolist()))
    if len(L) < 3 * len(present) + 2 or len({(n, d) for n, d in zip(N, D)}) < 3:
        return {"skipped": f"{len(L)} rung runs over {len({(n, d) for n, d in zip(N, D)})} scales for {len(present)} "
                           "arms: too few to fit (>= 3 per arm + 2, >= 3 scales)"}
    remap = {o: i for i, o in enumerate(present)}
    gi = np.array([remap[x] for x in g.tolist()])
    names = [labels[i] for i in present]
    fit = fit_loss_scale(gi, N, D, L, len(present), names, seed=seed)
    tN, tD = params_of(target), float(target.tokens)
    pred = fit.predict(np.arange(len(present)), np.full(len(present), tN), np.full(len(present), tD))
    boots = bootstrap_fits(fit, gi, N, D, L, reps=reps, seed=seed)
    alpha_ci = beta_ci = None
    lo = hi = np.full(len(present), np.nan)
    if boots:
        al = np.array([b.alpha for b in boots])
        be = np.array([b.beta for b in boots])
        alpha_ci = [float(np.percentile(al, 5)), float(np.percentile(al, 95))]
        beta_ci = [float(np.percentile(be, 5)), float(np.percentile(be, 95))]
        P = np.array([b.predict(np.arange(len(present)), np.full(len(present), tN), np.full(len(present), tD))
                      for b in boots])
        lo, hi = np.percentile(P, 5, axis=0), np.percentile(P, 95, axis=0)
    return {"form": "E + A/N^alpha + B/D^beta (exponents shared across arms)", "alpha": fit.alpha, "beta": fit.beta,
            "alpha_90ci": alpha_ci, "beta_90ci": beta_ci, "bounds": list(EXPONENT_BOUNDS),
            "alpha_on_bound": on_bound(fit.alpha), "beta_on_bound": on_bound(fit.beta),
            "bootstrap_reps": len(boots), "runs": len(L), "target_params": tN, "target_tokens": tD,
            "predicted": {lab: float(p) for lab, p in zip(names, pred)},
            "predicted_90ci": {lab: [float(a), float(b)] for lab, a, b in zip(names, lo, hi)},
            "points": {"g": [names[i] for i in gi], "N": N.tolist(), "D": D.tolist(), "L": L.tolist()},
            "fit": {"E": fit.E.tolist(), "A": fit.A.tolist(), "B": fit.B.tolist()}}


def transfer_table(study: Study, storage: Storage, out: Path, arms: dict[str, dict[str, Any]], base: ProxySpec,
                   progress: Callable[[str], None], reps: int = 100) -> dict[str, Any]:
    """The report (:func:`transfer_report`) printed, written to ``transfer.json`` + a plot, and logged
    as an MLflow run."""
    doc = transfer_report(study, arms, base, reps)
    progress(format_table(doc))
    _write_report(doc, study, storage, out, base)
    return doc


def transfer_report(study: Study, arms: dict[str, dict[str, Any]], base: ProxySpec, reps: int = 100) -> dict[str, Any]:
    """The report of a transfer study, from its trials alone (no store, no files): per arm the mean, std
    and s.e. over seeds at the target (``study.spec``) and the predicted loss; paired differences against
    uniform and natural; each other arm's margin over the better baseline in paired s.e.

    Args:
        arms: {label: {"mixture", "proxy", "from", ["same_as"]}}, the labels the study's trials carry.
        base: the proxies' spec (for the params and tokens ratios).
    """
    target = study.spec
    labels = list(arms)
    by_seed: dict[str, dict[int, float]] = {lab: {} for lab in labels}
    for t in study.trials:
        if t.ok and t.label in by_seed and _same_scale(t.spec, target):
            by_seed[t.label][t.spec.seed] = t.value
    fit = scaling_prediction(study, labels, target, reps=reps, seed=study.seed)
    predicted = (fit or {}).get("predicted", {})
    stats: dict[str, dict[str, Any]] = {}
    for lab in labels:
        a = np.array([by_seed[lab][s] for s in sorted(by_seed[lab])])
        st: dict[str, Any] = {"n": len(a), "mean": float(a.mean()) if len(a) else math.nan,
                              "std": float(a.std(ddof=1)) if len(a) > 1 else math.nan,
                              "sem": float(a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else math.nan,
                              "values": {int(s): float(v) for s, v in sorted(by_seed[lab].items())},
                              "proxy": arms[lab].get("proxy"), "from": arms[lab].get("from"),
                              "mixture": arms[lab].get("mixture")}
        if arms[lab].get("same_as"):
            st["same_as"] = arms[lab]["same_as"]
        if lab in predicted:
            st["predicted"] = predicted[lab]
            st["predicted_rel_error"] = (predicted[lab] - st["mean"]) / st["mean"] if len(a) else math.nan
        stats[lab] = st
    diffs: dict[str, dict[str, Any]] = {}
    for lab in labels:
        if lab in BASELINES:
            continue
        for b in BASELINES:
            if b in by_seed:
                diffs[f"{lab}-{b}"] = paired(by_seed[lab], by_seed[b])
    means = {b: stats[b]["mean"] for b in BASELINES if b in stats and stats[b]["n"]}
    better = min(means, key=means.get) if means else None
    margins = {}
    if better:
        for lab in labels:
            if lab not in BASELINES and f"{lab}-{better}" in diffs:
                d = diffs[f"{lab}-{better}"]
                margins[lab] = -d["diff"] / d["sem"] if d["sem"] and d["sem"] > 0 else math.nan
    doc = {"study": study.name, "objective": study.objective.description, "spec": target.to_dict(),
           "proxy_spec": base.to_dict(),
           "params_ratio": target.active_non_embedding_params() / base.active_non_embedding_params(),
           "tokens_ratio": target.tokens / base.tokens, "stats": stats, "diffs": diffs,
           "better_baseline": better, "margin_over_better_baseline_in_se": margins, "scaling_fit": fit}
    return doc


def _write_report(doc: dict[str, Any], study: Study, storage: Storage, out: Path, base: ProxySpec) -> None:
    """``transfer.json``, ``transfer.png`` and the MLflow run of a report."""
    stats, diffs, margins, fit, target = (doc["stats"], doc["diffs"], doc["margin_over_better_baseline_in_se"],
                                          doc["scaling_fit"], study.spec)
    out.mkdir(parents=True, exist_ok=True)
    jpath = out / "transfer.json"
    jpath.write_text(json.dumps(doc, indent=2))
    files = [str(jpath), _plot(doc, out)]
    metrics: dict[str, float] = {}
    for lab, st in stats.items():
        metrics.update({f"{lab}.mean": st["mean"], f"{lab}.sem": st["sem"]})
        if "predicted" in st:
            metrics.update({f"{lab}.predicted": st["predicted"], f"{lab}.predicted_rel_error": st["predicted_rel_error"]})
    for k, d in diffs.items():
        metrics.update({f"{k}.diff": d["diff"], f"{k}.sem": d["sem"], f"{k}.p": d["p"]})
    metrics.update({f"{lab}.margin_se": m for lab, m in margins.items()})
    if fit and "alpha" in fit:
        metrics.update({"alpha": fit["alpha"], "beta": fit["beta"]})
    storage.log_run(study.name, "transfer-report", "transfer",
                    {"preset": target.preset, "tokens": target.tokens, "proxy_preset": base.preset,
                     "proxy_tokens": base.tokens, "arms": ",".join(stats), "seeds": max(st["n"] for st in stats.values())},
                    {k: v for k, v in metrics.items() if v is not None and math.isfinite(v)}, {}, files)


def _f(x: Any, spec: str = ".4f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def format_table(doc: dict[str, Any]) -> str:
    """The report as text (what ``mixopt transfer`` prints)."""
    sp, stats = doc["spec"], doc["stats"]
    lines = [f"\nTransfer to {sp['preset']} at {sp['tokens']:,} tokens ({doc['params_ratio']:.1f}x the proxies' "
             f"params, {doc['tokens_ratio']:.1f}x their tokens): {doc['objective']} (lower is better)",
             f"  {'arm':<14}{'mean ± s.e.':>20}{'n':>3}{'proxy':>9}{'predicted':>11}{'error':>8}"]
    for lab, st in stats.items():
        err = f"{st['predicted_rel_error']:+.1%}" if "predicted" in st and math.isfinite(st["predicted_rel_error"]) \
            else ""
        lines.append(f"  {lab:<14}{_f(st['mean']) + ' ± ' + _f(st['sem']):>20}{st['n']:>3}{_f(st['proxy']):>9}"
                     f"{_f(st.get('predicted')):>11}{err:>8}")
    for lab, st in stats.items():
        if st.get("same_as"):
            lines.append(f"  {lab} is also the {st['same_as']} mixture (trained once)")
    if doc["diffs"]:
        lines.append("  paired differences (same seeds): arm - baseline, mean ± s.e., paired t-test")
        for k, d in doc["diffs"].items():
            lines.append(f"  {k:<26}{d['diff']:+.4f} ± {_f(d['sem'])}  t={_f(d['t'], '.2f')}  p={_f(d['p'], '.3g')}"
                         f"  (n={d['n']})")
    if doc["margin_over_better_baseline_in_se"]:
        b = doc["better_baseline"]
        parts = [f"{lab} {'+' if m > 0 else ''}{_f(m, '.1f')}"
                 for lab, m in doc["margin_over_better_baseline_in_se"].items()]
        lines.append(f"  margin over the better baseline ({b}) in paired s.e. (> 0: better): {', '.join(parts)}")
    fit = doc.get("scaling_fit")
    if fit and "alpha" in fit:
        def ci(k):
            c = fit[f"{k}_90ci"]
            return f" [{c[0]:.3f}, {c[1]:.3f}]" if c else ""
        bound = [k for k in ("alpha", "beta") if fit[f"{k}_on_bound"]]
        errs = [abs(st["predicted_rel_error"]) for st in stats.values()
                if "predicted" in st and math.isfinite(st["predicted_rel_error"])]
        lines.append(f"  scaling fit on {fit['runs']} rung runs, {fit['form']}: alpha {fit['alpha']:.3f}{ci('alpha')}, "
                     f"beta {fit['beta']:.3f}{ci('beta')} (90% bootstrap); "
                     + (f"on a bound: {', '.join(bound)}" if bound else "both off their bounds")
                     + (f"; target predicted within {np.mean(errs):.2%} mean, {np.max(errs):.2%} max" if errs else ""))
    elif fit:
        lines.append(f"  scaling fit skipped: {fit['skipped']}")
    return "\n".join(lines)


def _plot(doc: dict[str, Any], out: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats, fit = doc["stats"], doc.get("scaling_fit") or {}
    labs = [lab for lab in stats if stats[lab]["n"]]
    has_fit = "alpha" in fit
    fig, axes = plt.subplots(1, 2 if has_fit else 1, figsize=(11 if has_fit else 6, 4))
    ax = axes[0] if has_fit else axes
    colors = {lab: f"C{i}" for i, lab in enumerate(stats)}
    x = np.arange(len(labs))
    ax.bar(x, [stats[lab]["mean"] for lab in labs], yerr=[np.nan_to_num(stats[lab]["sem"]) for lab in labs],
           capsize=4, color=["tab:gray" if lab in BASELINES else colors[lab] for lab in labs])
    ax.set_xticks(x, labs)
    for i, lab in enumerate(labs):
        if "predicted" in stats[lab]:
            ax.scatter([i], [stats[lab]["predicted"]], marker="*", s=90, color="k", zorder=3)
    vals = [stats[lab]["mean"] for lab in labs] + [stats[lab].get("predicted", np.nan) for lab in labs]
    lo, hi = np.nanmin(vals), np.nanmax(vals)
    ax.set_ylim(lo - 0.3 * (hi - lo + 1e-9), hi + 0.3 * (hi - lo + 1e-9))
    ax.set_ylabel("objective at the target (mean ± s.e.; ★ predicted)")
    ax.set_title(f"{doc['spec']['preset']}, {doc['spec']['tokens']:,} tokens")
    ax.tick_params(axis="x", labelrotation=30)
    if has_fit:
        ax = axes[1]
        pts = fit["points"]
        N, D, L, g = np.array(pts["N"]), np.array(pts["D"]), np.array(pts["L"]), np.array(pts["g"])
        tN, tD = fit["target_params"], fit["target_tokens"]
        for lab in fit["predicted"]:
            m = g == lab
            ax.scatter(6 * N[m] * D[m], L[m], s=14, color=colors[lab], label=lab)
            st = stats[lab]
            if st["n"]:
                ax.errorbar([6 * tN * tD], [st["mean"]], yerr=[np.nan_to_num(st["sem"])], fmt="o", color=colors[lab])
            ax.scatter([6 * tN * tD], [fit["predicted"][lab]], marker="*", s=70, color=colors[lab])
        ax.set_xscale("log")
        ax.set_xlabel("training compute 6·N·D (FLOPs)")
        ax.set_ylabel("objective")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(f"rungs → target (★ predicted, ● measured); α {fit['alpha']:.2f}, β {fit['beta']:.2f}", fontsize=9)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = out / "transfer.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


__all__ = ["format_table", "larger_spec", "parse_arm", "parse_rung", "paired", "run_transfer", "scaling_prediction",
           "transfer_report", "transfer_table"]
