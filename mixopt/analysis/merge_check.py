"""``mixopt merge-check``: do merged scores rank mixtures as trained proxies do? With what compute?

For each proxy preset asked for (default: the study config's proxy) ``M`` Dirichlet mixtures over the
training domains are trained for real (one trial each, the study's proxy otherwise) and, for each seed
fraction s (``auto``: by the preset's steps, :func:`mixopt.core.experts.resolve_seed_fraction`), scored
by merging that preset's experts (:mod:`mixopt.proxies.merge`; experts trained here or reused) at each
merge scale and power asked for (``merge.scale``, ``merge.power``; they share one expert set). Reported per
preset, s, power and scale, for two objectives (the mean loss over every corpus domain, and the
loss on a held-out target domain: the config's ``objective: {target: X}``, else ``--target``): Spearman
and Pearson correlation between the merged and the trained objective over the M mixtures; what the merge
costs (experts: ``s + k (1 - s)`` proxies' worth of tokens; one merged score: its evaluation's forward
tokens, in proxies' worth) and its noise (the spread of the merged objective over resampled validation
batches). For comparison, RegMix's regression (``regmix``'s default surrogate, ``mixopt.search.surrogates``
``auto``) trained on as many random trained proxies as the merge cost (experts + M scores) predicts the
same M mixtures, and so does the mixtures' entropy alone (no compute: random mixtures differ most in how
concentrated they are). With several ``--scale`` the report names, per preset and s, the best scale for each
objective and the one whose smaller Spearman of the two is largest (:func:`best_scales`). With
``--ceiling`` the M mixtures are trained once more with the next proxy seed (another init and batch
order): the correlation r of the two trained rankings says how much of the
trained ranking is the seed's noise. A score without any noise could correlate with one training at
about sqrt(r), no more; and each merged row is also correlated with the mean of the two trainings (less
of the trained side's noise). With ``--branch`` the M mixtures are also trained as *branches* of each
s's seed (the seed continued on the mixture for the rest of the schedule, what ``merge.branch`` trains
and what a merged model stands for): branches against trained from scratch say how much the seed's
shared share of training costs the ranking, merged against branches how much the merge itself does.

Everything runs through the product's plan, loop and executors as a study of its own
(``<study>-merge-check``; ``--name`` to choose), which a later call resumes (``--resume``, with the same
mixtures and presets): the trained mixtures and the experts are reused, the merged scores (cheap) computed
again, and trainings a resumed check asks for that the study lacks (``--ceiling`` added later) queued.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import replace
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np

from mixopt.core.errors import AlreadyExistsError, UserError
from mixopt.core.experts import check_power, check_scale, check_seed_fraction, resolve_seed_fraction
from mixopt.core.mixture import Mixture
from mixopt.core.names import check_study_name
from mixopt.core.objective import Objective
from mixopt.core.spec import ProxySpec
from mixopt.core.trial import TrialState
from mixopt.core.worker import Branch
from mixopt.run.config import BudgetConfig, MergeConfig, SearchConfig, StudyConfig, SweepConfig
from mixopt.run.executors import make_executor
from mixopt.run.experts import MERGE_FN, ensure_experts, experts_spec
from mixopt.run.loop import execute
from mixopt.run.plan import StudyPlan
from mixopt.search.dirichlet import sample
from mixopt.study import get_storage


def _corr(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    from scipy import stats

    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return math.nan, math.nan
    return float(stats.spearmanr(a[ok], b[ok]).statistic), float(stats.pearsonr(a[ok], b[ok]).statistic)


def _vector(obj: Objective, domains: list[str]) -> np.ndarray:
    """The objective's weights over ``domains`` (a loss table (n, D) @ it = the objective per row)."""
    return np.array([obj.weights.get(d, 0.0) for d in domains])


def objectives(domains: list[str], target: str) -> dict[str, Objective]:
    """The two objectives of the check: mean loss over every domain, loss on the held-out target."""
    return {"mean": Objective({d: 1.0 / len(domains) for d in domains}, (), "mean loss over domains"),
            "target": Objective({target: 1.0}, (target,), f"held-out loss on {target}")}


def run_merge_check(cfg: StudyConfig, *, mixtures: int = 32, seed_fractions: tuple[float | str, ...] = ("auto",),
                    scales: tuple[float, ...] = (1.0,), powers: tuple[float, ...] = (MergeConfig().power,),
                    presets: tuple[str, ...] = (), target: str | None = None,
                    regmix: bool = True, ceiling: bool = False, debias: tuple[bool, ...] = (False,),
                    resamples: int = 3, name: str | None = None, resume: bool = False, executor=None,
                    branch: bool = False, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Train, merge, compare (see the module docstring); returns the report (also ``merge_check.json``)."""
    if mixtures < 4:
        raise UserError(f"merge-check --mixtures: {mixtures} must be >= 4")
    for s in seed_fractions:
        check_seed_fraction(s, "merge-check --seed-fraction")  # a ConfigError: a UserError, exit 2
    for lam in scales:
        check_scale(lam, "merge-check --scale")  # a ConfigError: a UserError, exit 2
    for g in powers:
        check_power(g, "merge-check --power")
    cname = check_study_name(name, "merge-check --name") if name is not None else f"{cfg.study}-merge-check"
    tgt = target or (cfg.objective.get("target") if isinstance(cfg.objective.get("target"), str) else None)
    specs = [cfg.proxy if not p else _on_preset(cfg.proxy, p) for p in (presets or ("",))]
    sfs = {sp.preset: tuple(dict.fromkeys(resolve_seed_fraction(s, sp) for s in seed_fractions)) for sp in specs}
    store = get_storage(cfg.resolved_tracking_uri())
    ccfg = replace(cfg, study=cname, ladder=[], sweep=SweepConfig(), merge=MergeConfig(),
                   search=SearchConfig("random", {}, 0), budget=BudgetConfig(trials=10**6),
                   objective={"target": tgt} if tgt else {})
    try:  # --resume continues the check's study if there is one, else starts it
        plan = StudyPlan.build(ccfg, resume=resume and store.load_meta(cname) is not None, storage=store)
    except AlreadyExistsError:
        raise AlreadyExistsError(f"merge-check study {cname!r} exists; pass --resume to continue it") from None
    if tgt is None:
        raise UserError("merge-check: the config's objective has no held-out target; pass --target DOMAIN "
                        f"(one of {', '.join(plan.domains)})")
    if tgt not in plan.domains:
        raise UserError(f"merge-check --target {tgt}: not a corpus domain; allowed: {', '.join(plan.domains)}")
    corpus = plan.open_corpus(progress)
    space = plan.build_space(corpus.token_counts("train"), proxy_tokens=max(s.tokens for s in specs))
    es_all = {(sp.preset, s): experts_spec(MergeConfig(seed_fraction=s), sp, space, corpus)
              for sp in specs for s in sfs[sp.preset]}
    n_regmix = {sp.preset: max(4, round(max(es.proxies_worth() + mixtures * _score_cost(es, corpus)
                                            for (p, _), es in es_all.items() if p == sp.preset))) for sp in specs}
    X = sample(space, mixtures, np.random.default_rng([cfg.seed, 0xC4EC]))
    Xr = sample(space, max(n_regmix.values()), np.random.default_rng([cfg.seed, 0x4E61]))
    queue = [(f"check{i}", Mixture.from_array(x, space.domains), sp) for sp in specs for i, x in enumerate(X)]
    if regmix:
        queue += [(f"regmix{i}", Mixture.from_array(x, space.domains), sp) for sp in specs
                  for i, x in enumerate(Xr[:n_regmix[sp.preset]])]
    if ceiling:
        queue += [(f"again{i}", Mixture.from_array(x, space.domains), _next_seed(sp)) for sp in specs
                  for i, x in enumerate(X)]
    if branch:
        if any(sp.online for sp in specs):
            raise UserError("merge-check --branch: not with proxy.online; a branch continues the seed on a fixed mixture")
        queue += [(f"{_branch_prefix(s)}{i}", Mixture.from_array(x, space.domains), sp) for sp in specs
                  for s in sfs[sp.preset] for i, x in enumerate(X)]
    asked = {"mixtures": mixtures, "presets": [sp.preset for sp in specs], "tokens": [sp.tokens for sp in specs]}
    meta = store.load_meta(cname) if plan.resume else None
    before = meta.extra.get("merge_check", asked) if meta is not None else asked
    if before != asked:
        raise UserError(f"merge-check --resume: study {cname!r} checked {before}, not {asked}; use the same "
                        "--mixtures and presets, or another --name")
    # resumed, the study also queues what it lacks (--ceiling or --branch added later)
    study = plan.open_study(space, queue=queue, extra={"merge_check_of": cfg.study, "merge_check": asked})
    executor = executor or make_executor(cfg.executor)
    try:
        todo = sum(1 for t in study.trials if t.state is TrialState.WAITING)
        progress(f"merge-check: {len(queue)} proxies ({todo} to train now; {mixtures} checked mixtures"
                 + (f" + {sum(n_regmix.values())} for RegMix's regression" if regmix else "")
                 + (f" + {mixtures} again with the next proxy seed" if ceiling else "") + ") at "
                 f"{', '.join(sp.preset for sp in specs)}; experts for s = "
                 + "; ".join(f"{', '.join(map(str, sfs[sp.preset]))}" + (f" ({sp.preset})" if len(specs) > 1 else "")
                             for sp in specs))
        budget = max(len(queue), len(study.trials))  # a resumed study may hold trainings this call did not ask for
        seeds = _branch_seeds(study, specs, space, corpus, executor, cfg, sfs if branch else {}, progress)
        execute(replace(ccfg, budget=BudgetConfig(trials=budget)), study, corpus, executor, progress,
                stop=None, shutdown=False, branch=lambda t: _branch_of(t, seeds))
        branches = {(sp.preset, s): _trained(study, sp, _branch_prefix(s), len(X), list(corpus.domains))
                    for sp in specs for s in sfs[sp.preset]} if branch else {}
        rows = [row for sp in specs for s in sfs[sp.preset]
                for row in _check_one(study, sp, s, es_all[(sp.preset, s)], X, corpus, executor, cfg, tgt, resamples,
                                      scales, powers, debias, ceiling, progress, branches.get((sp.preset, s)))]
    finally:
        executor.shutdown()
    reg = {sp.preset: _regmix(study, sp, X, tgt, list(corpus.domains), n_regmix[sp.preset]) for sp in specs} \
        if regmix else {}
    ceil = {sp.preset: _ceiling(study, sp, len(X), tgt, list(corpus.domains)) for sp in specs} if ceiling else {}
    ent = {sp.preset: _entropy(study, sp, X, tgt, list(corpus.domains)) for sp in specs}
    doc = {"study": cname, "mixtures": mixtures, "target": tgt, "rows": rows, "regmix": reg, "ceiling": ceil,
           "entropy": ent, "best_scale": best_scales(rows),
           "branch": [_branch_row(study, sp, s, es_all[(sp.preset, s)], X, tgt, list(corpus.domains), branches)
                      for sp in specs for s in sfs[sp.preset]] if branch else []}
    out = Path(cfg.output_dir) / cname
    out.mkdir(parents=True, exist_ok=True)
    (out / "merge_check.json").write_text(json.dumps(doc, indent=2))
    progress(format_check(doc))
    return doc


def _on_preset(spec: ProxySpec, preset: str) -> ProxySpec:
    try:
        return spec.with_preset(preset)
    except UserError as e:
        raise UserError(f"merge-check --preset {preset}: {e}") from None


def _next_seed(spec: ProxySpec) -> ProxySpec:
    return replace(spec, seed=spec.seed + 1)


def _ceiling(study, spec: ProxySpec, n: int, tgt: str, domains: list[str]) -> dict[str, Any]:
    """The checked mixtures' trained objectives at the proxy seed vs at the next seed, per objective."""
    a, b = _trained(study, spec, "check", n, domains), _trained(study, _next_seed(spec), "again", n, domains)
    out: dict[str, Any] = {"seed": spec.seed, "other_seed": spec.seed + 1}
    for key, obj in objectives(domains, tgt).items():
        w = _vector(obj, domains)
        out[key] = dict(zip(("spearman", "pearson"), _corr(a @ w, b @ w)))
    return out


def _score_cost(es, corpus) -> float:
    """A merged score over every corpus domain at the proxy's own validation batches, in proxies' worth."""
    spec = es.spec
    return es.score_cost(len(corpus.domains) * spec.eval_batches * spec.batch_size * spec.seq_len)


def _trained(study, spec: ProxySpec, prefix: str, n: int, domains: list[str]) -> np.ndarray:
    """Losses (n, D) of the trials labelled ``<prefix><i>`` at ``spec`` (nan where failed or missing)."""
    L = np.full((n, len(domains)), np.nan)
    for t in study.trials:
        if t.ok and t.label.startswith(prefix) and t.spec == spec:
            i = int(t.label[len(prefix):])
            if i < n:
                L[i] = [t.losses.get(d, np.nan) for d in domains]
    return L


def _branch_prefix(s: float) -> str:
    return f"branch-s{s:g}-"


def _branch_seeds(study, specs, space, corpus, executor, cfg, sfs, progress) -> dict[tuple[str, str], Branch]:
    """The seeds branch trials start from, by (preset, s as the label writes it): those asked for (``sfs``:
    preset -> seed fractions), and those of branch trials a stopped check left unfinished (a resumed check
    runs them first), each verified or trained (the seed alone where its experts are not needed yet)."""
    wanted = {(sp.preset, f"{s:g}"): (sp, s) for sp in specs for s in sfs.get(sp.preset, ())}
    for t in study.trials:
        tag = _branch_tag(t.label)
        if tag is not None and t.state in (TrialState.WAITING, TrialState.PENDING, TrialState.RUNNING):
            wanted.setdefault((t.spec.preset, tag), (t.spec, float(tag)))
    threads = max(1, cfg.executor.workers * cfg.executor.threads_per_worker)
    out = {}
    for key, (sp, s) in wanted.items():
        es = experts_spec(MergeConfig(seed_fraction=s), sp, space, corpus)
        found = ensure_experts(es, study, str(corpus.path), executor, cfg.data.cache_path(), retrain=True,
                               num_threads=threads, device=cfg.executor.device, progress=progress, seed_only=True)
        out[key] = Branch(es, str(found.folder))
    return out


def _branch_tag(label: str) -> str | None:
    """The seed fraction a branch trial's label names (``branch-s<s>-<i>``, as written there), else None."""
    if not label.startswith("branch-s") or label.count("-") < 2:
        return None
    return label[len("branch-s"):].rsplit("-", 1)[0]


def _branch_of(t, seeds: dict[tuple[str, str], Branch]) -> Branch | None:
    """The seed trial ``t`` continues (None: a trial trained from scratch)."""
    tag = _branch_tag(t.label)
    return None if tag is None else seeds[(t.spec.preset, tag)]


def _branch_row(study, spec, s, es, X, tgt, domains, branches) -> dict[str, Any]:
    """Branches of the s seed against the mixtures trained from scratch, per objective."""
    b, a = branches[(spec.preset, s)], _trained(study, spec, "check", len(X), domains)
    out: dict[str, Any] = {"preset": spec.preset, "seed_fraction": s, "proxies_worth": es.expert_steps / es.spec.steps,
                           "n": int(np.isfinite(b).all(1).sum())}
    for key, obj in objectives(domains, tgt).items():
        w = _vector(obj, domains)
        out[key] = dict(zip(("spearman", "pearson"), _corr(b @ w, a @ w)))
    return out


def _check_one(study, spec, s, es, X, corpus, executor, cfg, tgt, resamples, scales, powers, debias, ceiling,
               progress, branched: np.ndarray | None = None) -> list[dict[str, Any]]:
    threads = max(1, cfg.executor.workers * cfg.executor.threads_per_worker)  # nothing else runs meanwhile
    experts = ensure_experts(es, study, str(corpus.path), executor, cfg.data.cache_path(), retrain=True,
                             num_threads=threads, device=cfg.executor.device, progress=progress)
    domains = list(corpus.domains)
    base = {"experts": es.to_dict(), "dir": str(experts.folder), "corpus_dir": str(corpus.path),
            "eval_domains": domains, "num_threads": 1}
    parts = np.array_split(np.arange(len(X)), max(1, getattr(executor, "capacity", 1)))
    trained = _trained(study, spec, "check", len(X), domains)
    both = (trained + _trained(study, _next_seed(spec), "again", len(X), domains)) / 2 if ceiling else None
    rows = []
    # a debiased row merges the continuation mixture's own weights: power 1 whatever --power says
    for deb, g, lam in dict.fromkeys((deb, 1.0 if deb else g, lam) for deb, g, lam in product(debias, powers, scales)):
        scores = []
        for r in range(resamples + 1):  # r = 0: the trials' own validation batches; r > 0: resampled ones
            res = executor.run_tasks(MERGE_FN, [base | {"mixtures": X[idx].tolist(), "resample": r, "scale": lam,
                                                        "power": g, "debias": deb} for idx in parts])
            scores.append(np.concatenate([np.asarray(x["losses"]) for x in res]))
        out: dict[str, Any] = {"preset": spec.preset, "params": spec.non_embedding_params(), "tokens": spec.tokens,
                               "seed_fraction": s, "scale": lam, "power": g, "debias": deb, "experts": es.key(),
                               "experts_proxies_worth": es.proxies_worth(), "score_proxies_worth": _score_cost(es, corpus),
                               "n_trained": int(np.isfinite(trained).all(1).sum())}
        for key, obj in objectives(domains, tgt).items():
            w = _vector(obj, domains)
            merged = np.stack([sc @ w for sc in scores])  # (1 + resamples, M)
            out[key] = dict(zip(("spearman", "pearson"), _corr(merged[0], trained @ w)))
            out[key]["noise"] = float(np.mean(merged[1:].std(0, ddof=1))) if resamples >= 2 else math.nan
            out[key]["spread"] = float(np.nanstd(trained @ w))
            if both is not None:  # against the mean of two trainings per mixture: less of the trained side's noise
                out[key]["spearman_both"], out[key]["pearson_both"] = _corr(merged[0], both @ w)
            if branched is not None:  # against the training the merged model stands for
                out[key]["spearman_branch"], out[key]["pearson_branch"] = _corr(merged[0], branched @ w)
        progress(f"merge-check {spec.preset} s={s} scale={lam:g} power={g:g}{' debiased' if deb else ''}: Spearman mean "
                 f"{out['mean']['spearman']:.3f}, "
                 f"target {out['target']['spearman']:.3f}")
        rows.append(out)
    return rows


def _regmix(study, spec, X, tgt, domains, n) -> dict[str, Any]:
    from mixopt.search.surrogates import make_surrogate

    Xr_rows = {}
    for t in study.trials:
        if t.ok and t.label.startswith("regmix") and t.spec == spec:
            Xr_rows[int(t.label[6:])] = (t.mixture.as_array(study.space.domains),
                                         [t.losses.get(d, np.nan) for d in domains])
    tr = [Xr_rows[i] for i in sorted(Xr_rows)[:n]]
    Xtr, Ltr = np.array([a for a, _ in tr]), np.array([b for _, b in tr])
    test = _trained(study, spec, "check", len(X), domains)
    out: dict[str, Any] = {"n_train": len(tr)}
    for key, obj in objectives(domains, tgt).items():
        w = _vector(obj, domains)
        ytr = Ltr @ w
        ok = np.isfinite(ytr)
        if ok.sum() < 3:
            out[key] = {"spearman": math.nan, "pearson": math.nan}
            continue
        pred = make_surrogate("auto", seed=0).fit(Xtr[ok], ytr[ok]).predict(X)
        out[key] = dict(zip(("spearman", "pearson"), _corr(pred, test @ w)))
    return out


def _entropy(study, spec, X, tgt, domains) -> dict[str, Any]:
    """The zero-compute reference: the mixtures ranked by their entropy alone (more spread, lower loss).
    Random mixtures differ most in how concentrated they are, and a proxy trained on few domains is
    worse on the rest; a merged score that ranks no better than this adds nothing beyond it."""
    P = np.clip(np.asarray(X, dtype=float), 0.0, None)
    H = -(P * np.log(np.where(P > 0, P, 1.0))).sum(1)
    test = _trained(study, spec, "check", len(X), domains)
    return {key: dict(zip(("spearman", "pearson"), _corr(-H, test @ _vector(obj, domains))))
            for key, obj in objectives(domains, tgt).items()}


def best_scales(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (preset, seed fraction, power) with more than one scale checked (plain merges, not ``--debias``):
    the scale with the highest Spearman on each objective, and the one whose smaller Spearman of the two is
    largest (``both``: the choice for ``merge.scale`` when neither objective may rank badly); each entry
    ``{"scale", "spearman"}`` (a nan correlation never wins)."""
    groups: dict[tuple[str, float, float], list[dict[str, Any]]] = {}
    for r in rows:
        if not r.get("debias"):
            groups.setdefault((r["preset"], r["seed_fraction"], r.get("power", 1.0)), []).append(r)
    out = []
    for (preset, s, g), rs in groups.items():
        if len({r["scale"] for r in rs}) < 2:
            continue
        entry: dict[str, Any] = {"preset": preset, "seed_fraction": s, "power": g}
        for key, rho in (("mean", lambda r: r["mean"]["spearman"]), ("target", lambda r: r["target"]["spearman"]),
                         ("both", lambda r: min(r["mean"]["spearman"], r["target"]["spearman"]))):
            ok = [r for r in rs if math.isfinite(rho(r))]
            best = max(ok, key=rho) if ok else None
            entry[key] = {"scale": best["scale"], "spearman": rho(best)} if best else {"scale": None,
                                                                                     "spearman": math.nan}
        out.append(entry)
    return out


def _sqrt(x: float) -> float:
    return math.sqrt(x) if x is not None and math.isfinite(x) and x > 0 else math.nan


def _f(x: float) -> str:
    return "  n/a" if x is None or not math.isfinite(x) else f"{x:5.3f}"


def _power(r: dict[str, Any]) -> str:
    return "" if r.get("power", 1.0) == 1.0 else f", power {r['power']:g}"


def _scale(b: dict[str, Any]) -> str:
    return "n/a" if b["scale"] is None else f"{b['scale']:g} (rho {_f(b['spearman']).strip()})"


def format_check(doc: dict[str, Any]) -> str:
    """The report as text (what ``mixopt merge-check`` prints)."""
    lines = [f"\nMerged vs trained on {doc['mixtures']} random mixtures (Spearman / Pearson; objectives: mean loss "
             f"over domains, held-out loss on {doc['target']})",
             f"  {'preset':<11}{'s':>5}{'scale':>6}{'power':>6}{'debias':>7}{'experts':>9}{'score':>8}{'mean rho':>10}"
             f"{'r':>7}"
             f"{'noise':>8}{'target rho':>12}{'r':>7}{'noise':>8}   (experts, score: proxies' worth of compute)"]
    for r in doc["rows"]:
        m, t = r["mean"], r["target"]
        lines.append(f"  {r['preset']:<11}{r['seed_fraction']:>5.2f}{r.get('scale', 1.0):>6.2f}{r.get('power', 1.0):>6.2f}"
                     f"{'yes' if r.get('debias') else 'no':>7}{r['experts_proxies_worth']:>9.1f}"
                     f"{r['score_proxies_worth']:>8.3f}{_f(m['spearman']):>10}{_f(m['pearson']):>7}{_f(m['noise']):>8}"
                     f"{_f(t['spearman']):>12}{_f(t['pearson']):>7}{_f(t['noise']):>8}")
    for b in doc.get("best_scale", []):
        lines.append(f"  best scale ({b['preset']}, s={b['seed_fraction']:.2f}"
                     f"{_power(b)}): mean {_scale(b['mean'])}, target "
                     f"{_scale(b['target'])}, the smaller of the two {_scale(b['both'])}")
    for preset, reg in doc["regmix"].items():
        lines.append(f"  RegMix regression ({preset}) on {reg['n_train']} trained proxies, the merge's compute: "
                     f"mean rho {_f(reg['mean']['spearman'])} r {_f(reg['mean']['pearson'])}, target rho "
                     f"{_f(reg['target']['spearman'])} r {_f(reg['target']['pearson'])}")
    for preset, e in doc.get("entropy", {}).items():
        lines.append(f"  The mixtures' entropy alone ({preset}, no compute): mean rho {_f(e['mean']['spearman'])} "
                     f"r {_f(e['mean']['pearson'])}, target rho {_f(e['target']['spearman'])} "
                     f"r {_f(e['target']['pearson'])}")
    for b in doc.get("branch", []):
        lines.append(f"  Branches ({b['preset']}, s={b['seed_fraction']:.2f}: the seed continued on each mixture, "
                     f"{b['proxies_worth']:.2f} of a proxy each) vs trained from scratch: mean rho "
                     f"{_f(b['mean']['spearman'])} r {_f(b['mean']['pearson'])}, target rho {_f(b['target']['spearman'])} "
                     f"r {_f(b['target']['pearson'])}")
        for r in doc["rows"]:
            if (r["preset"], r["seed_fraction"]) == (b["preset"], b["seed_fraction"]) and "spearman_branch" in r["mean"]:
                lines.append(f"    merged (scale {r.get('scale', 1.0):.2f}{_power(r)}"
                             f"{', debiased' if r.get('debias') else ''}) vs "
                             f"those branches: mean rho {_f(r['mean']['spearman_branch'])}, target rho "
                             f"{_f(r['target']['spearman_branch'])}")
    for preset, c in doc.get("ceiling", {}).items():
        lines.append(f"  Trained ({preset}, proxy seed {c['seed']}) vs trained again (seed {c['other_seed']}): mean rho "
                     f"{_f(c['mean']['spearman'])} r {_f(c['mean']['pearson'])}, target rho {_f(c['target']['spearman'])} "
                     f"r {_f(c['target']['pearson'])}: a score without noise would reach about the square root "
                     f"(mean {_f(_sqrt(c['mean']['spearman']))}, target {_f(_sqrt(c['target']['spearman']))})")
        for r in doc["rows"]:
            if r["preset"] == preset and "spearman_both" in r["mean"]:
                lines.append(f"  merged (s={r['seed_fraction']:.2f}, scale {r.get('scale', 1.0):.2f}{_power(r)}"
                             f"{', debiased' if r.get('debias') else ''}) vs the mean of both "
                             f"trainings: mean rho {_f(r['mean']['spearman_both'])}, target rho "
                             f"{_f(r['target']['spearman_both'])}")
    return "\n".join(lines)


__all__ = ["best_scales", "format_check", "objectives", "run_merge_check"]
