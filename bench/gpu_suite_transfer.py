"""Part (b) of the GPU suite (``bench/gpu_suite.py``): the transfer benchmark at GPU size, via the Python API.

A RegMix study of ``n_proxies`` proxies (in memory: ``mixopt.create_study(storage=None)``, no
MLflow) whose mixtures are all Dirichlet draws, as RegMix trains them, in packs of ``proxy_pack``
(``mixopt.run.loop.execute`` on a ``LocalExecutor``, no Ray); its recommendation (surrogate pinned
to the GP: ``auto`` turns to LightGBM from 128 runs, and the GPU node has no LightGBM); then the
recommendation, uniform and natural trained at the target size with ``seeds`` paired seeds (seed s
is the same initialisation and sampler seed in every arm), one pack of the arms per seed; and the
paired table as ``mixopt transfer`` prints it (``transfer_report`` + ``format_table``, no store).
Objective: the mean loss over the corpus's domains; space: the repetition cap at the target's tokens.

Sizing (:func:`choose`): proxies at ``tokens_per_param`` tokens per non-embedding parameter, the
target the dense preset whose parameters are nearest ``factor`` x the proxies' (at least 4x) on
``token_factor`` x their tokens. The largest proxy preset whose predicted time fits the time left
and whose target budget the corpus allows under ``max_epochs`` is chosen; the aim (``aim`` preset
proxies) is priced the same way and printed beside it. Predicted time: each pack's tokens over the
rate part (a) measured for that preset and pack size (interpolated in log K, or scaled by FLOPs
per token from the nearest measured preset), plus drawing its batches on the host (timed here on
the corpus), its evaluations (forward only, 1/3 of a step's FLOPs), and one compile per new pack
shape; a pack shape is compiled where that is predicted to pay.

Deadlines: no pack starts unless its predicted time fits, and ``run_pack`` stops a pack whose
steps run past the part's end (its members fail "stopped", nothing half-trained is kept).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np
from gpu_suite_engine import EngineResult

from mixopt import create_study
from mixopt.analysis.transfer import format_table, source_arms, transfer_report
from mixopt.core.errors import SpaceError
from mixopt.core.mixture import Mixture, MixtureSpace
from mixopt.core.objective import Objective
from mixopt.core.spec import DENSE_PRESETS, ProxySpec, preset_arch
from mixopt.data import Corpus
from mixopt.proxies.pack_train import run_pack
from mixopt.proxies.train import MixtureSampler
from mixopt.run.config import BudgetConfig, ExecutorConfig, StudyConfig
from mixopt.run.executors import LocalExecutor
from mixopt.run.loop import execute
from mixopt.run.plan import StudyPlan

FIXED_S = 15.0  # the GP fit and recommendation, two studies' bookkeeping (seconds, a guess)
HOST_STEP_S = 3e-4  # run_pack's own host work per step besides drawing batches: stack, pin, copy, launch (a guess)


@dataclass(frozen=True)
class Sizes:
    """What part (b) aims at; ``tiny`` gives the CPU rehearsal's toy sizes."""

    n_proxies: int = 64
    seeds: int = 3
    tokens_per_param: float = 50.0
    factor: float = 10.0
    token_factor: float = 10.0
    proxy_pack: int = 32
    aim: str = "dense-1m"
    candidates: tuple[str, ...] = ("dense-1m", "dense-0.5m", "dense-0.1m", "dense-37k", "dense-14k", "dense-6k",
                                   "dense-3k")
    max_epochs: float = 4.0
    batch_size: int = 16
    seq_len: int = 128
    evals: int = 4
    eval_batches: int = 8

    @classmethod
    def tiny(cls, **kw: Any) -> Sizes:
        return cls(**{"n_proxies": 8, "tokens_per_param": 0.5, "token_factor": 4.0, "proxy_pack": 4, "aim": "dense-3k",
                      "candidates": ("dense-3k",), "evals": 2, "eval_batches": 2} | kw)


@dataclass(frozen=True)
class Plan:
    """Sizes chosen for part (b) and their predicted cost (seconds)."""

    proxy: ProxySpec
    target: ProxySpec
    sizes: Sizes
    arms: int
    target_pack: int  # arms (one pack per seed) or arms x seeds (one pack)
    proxies_s: float
    targets_s: float
    compile_proxies: bool
    compile_targets: bool
    data_ok: bool
    data_note: str
    rates_note: str

    @property
    def total_s(self) -> float:
        return self.proxies_s + self.targets_s + FIXED_S

    def summary(self) -> dict[str, Any]:
        p, t = self.proxy, self.target
        return {"proxy": p.preset, "proxy_params": p.non_embedding_params(), "proxy_tokens": p.tokens,
                "tokens_per_param": p.tokens / p.non_embedding_params(), "n_proxies": self.sizes.n_proxies,
                "proxy_pack": self.sizes.proxy_pack, "target": t.preset, "target_params": t.non_embedding_params(),
                "target_tokens": t.tokens, "params_ratio": t.non_embedding_params() / p.non_embedding_params(),
                "tokens_ratio": t.tokens / p.tokens, "arms": self.arms, "seeds": self.sizes.seeds,
                "target_pack": self.target_pack, "predicted_s": {"proxies": self.proxies_s, "targets": self.targets_s,
                                                          "total": self.total_s},
                "compile": {"proxies": self.compile_proxies, "targets": self.compile_targets},
                "max_epochs": self.sizes.max_epochs, "data_ok": self.data_ok, "data": self.data_note,
                "rates": self.rates_note}


def target_preset(proxy: str, factor: float) -> str | None:
    """The dense preset whose non-embedding params are nearest ``factor`` x the proxy's, at least 4x."""
    n = ProxySpec(preset=proxy).non_embedding_params()
    ratios = {p: ProxySpec(preset=p).non_embedding_params() / n for p in DENSE_PRESETS}
    fit = [p for p, r in ratios.items() if r >= 4]
    return min(fit, key=lambda p: abs(math.log(ratios[p] / factor))) if fit else None


def rate_for(res: EngineResult, spec: ProxySpec, K: int, compiled: bool) -> tuple[float, str] | None:
    """Aggregate tokens/s of a pack of K ``spec`` members, from part (a); None without a measured pack."""
    table = res.measured(compiled)
    if not table:
        return None
    fpt = spec.flops_per_token(res.vocab)

    def fpt_of(p: str) -> float:
        return spec.with_preset(p).flops_per_token(res.vocab)

    src = min(table, key=lambda p: (preset_arch(p) != spec.arch, abs(math.log(fpt_of(p) / fpt))))
    ks = sorted(table[src])
    if K in table[src]:
        r = table[src][K]
    elif K < ks[0]:
        r = table[src][ks[0]] * K / ks[0]  # smaller packs: at most the same rate per member
    elif K > ks[-1]:
        r = table[src][ks[-1]]  # larger packs: no gain assumed
    else:
        lo = max(k for k in ks if k < K)
        hi = min(k for k in ks if k > K)
        w = math.log(K / lo) / math.log(hi / lo)
        r = math.exp((1 - w) * math.log(table[src][lo]) + w * math.log(table[src][hi]))
    how = "eager" if not compiled else "compiled"
    note = (f"{how} {src} K={K} measured" if src == spec.preset and K in table[src]
            else f"{how} {src} at K={','.join(map(str, ks))}" + (", scaled by FLOPs/token" if src != spec.preset else ""))
    return r * fpt_of(src) / fpt, note


def sample_seconds(corpus: Corpus, B: int, T: int, n: int = 50) -> float:
    """Host seconds one member's batch takes to draw (``MixtureSampler.next`` on this corpus, uniform mixture)."""
    m = Mixture({d: 1.0 / len(corpus.domains) for d in corpus.domains}, corpus.domains)
    s = MixtureSampler(corpus, m, B, T, seed=0)
    s.next()
    t0 = time.perf_counter()
    for _ in range(n):
        s.next()
    return (time.perf_counter() - t0) / n


def runs_seconds(res: EngineResult, spec: ProxySpec, K: int, n_runs: int, n_domains: int, sample_s: float
                 ) -> tuple[float, bool, str]:
    """Predicted seconds of ``n_runs`` trials of ``spec`` in packs of K -> (seconds, compiled?, rate note)."""
    packs, per_step = math.ceil(n_runs / K), K * spec.batch_size * spec.seq_len
    eval_tokens = spec.evals * n_domains * spec.eval_batches * spec.batch_size * spec.seq_len * K
    out = []
    for compiled in (False, True):
        got = rate_for(res, spec, K, compiled)
        if got is None:
            continue
        rate, note = got
        eager = (rate_for(res, spec, K, False) or got)[0]
        step_s = per_step / rate + K * sample_s + HOST_STEP_S
        s = packs * (spec.steps * step_s + eval_tokens / (3 * eager) + 1.0)
        if compiled:
            s += 1.2 * (res.compile_seconds() or 0.0)
        out.append((s, compiled, note))
    if not out:
        return math.inf, False, "no rate measured"
    return min(out)


def plan_for(proxy_preset: str, res: EngineResult, corpus: Corpus, sizes: Sizes, sample_s: float) -> list[Plan]:
    """The plans with ``proxy_preset`` proxies: the targets one pack per seed, then all in one pack
    (none: no target preset fits)."""
    target = target_preset(proxy_preset, sizes.factor)
    if target is None:
        return []
    step = sizes.batch_size * sizes.seq_len
    base = ProxySpec(preset=proxy_preset, batch_size=sizes.batch_size, seq_len=sizes.seq_len, evals=sizes.evals,
                     eval_batches=sizes.eval_batches, tokens=step)
    proxy = replace(base, tokens=step * max(1, math.ceil(sizes.tokens_per_param * base.non_embedding_params() / step)))
    tspec = proxy.with_preset(target, tokens=step * math.ceil(sizes.token_factor * proxy.tokens / step))
    tokens = corpus.token_counts("train")
    try:
        MixtureSpace.build(corpus.domains).capped(tokens, tspec.tokens, sizes.max_epochs)
        data_ok = True
    except SpaceError:
        data_ok = False
    need = tspec.tokens / sizes.max_epochs
    note = (f"target {tspec.tokens:,} tokens at max_epochs {sizes.max_epochs:g} needs >= {need:,.0f} corpus tokens "
            f"(natural mixture), and each domain's share under its cap; corpus: {sum(tokens.values()):,} train tokens, "
            f"{'feasible' if data_ok else 'infeasible'}")
    arms, n = 3, len(corpus.domains)
    ps, pc, pnote = runs_seconds(res, proxy, sizes.proxy_pack, sizes.n_proxies, n, sample_s)
    out = []
    for K in (arms, arms * sizes.seeds):  # a pack of the arms per seed, or one pack of every target run
        ts, tc, tnote = runs_seconds(res, tspec, K, arms * sizes.seeds, n, sample_s)
        out.append(Plan(proxy, tspec, sizes, arms, K, ps, ts, pc, tc, data_ok, note,
                        f"proxies: {pnote}; targets: {tnote}"))
    return out


def choose(res: EngineResult, corpus: Corpus, sizes: Sizes, seconds: float, sample_s: float
           ) -> tuple[Plan | None, Plan | None, list[dict[str, Any]]]:
    """-> (the plan to run, the aim's plan, every candidate considered). The plan: the first candidate
    whose data suffice and whose predicted time fits ``seconds``, with one pack of the arms per seed (a
    deadline can stop it between seeds) or, where only that fits, one pack of all the targets; else the
    cheapest feasible one."""
    plans = [p for c in sizes.candidates for p in plan_for(c, res, corpus, sizes, sample_s) or ()]
    aim = min(plan_for(sizes.aim, res, corpus, sizes, sample_s), key=lambda p: p.total_s, default=None)
    tried = [p.summary() | {"fits": p.data_ok and p.total_s <= seconds} for p in plans]
    feasible = [p for p in plans if p.data_ok]
    chosen = next((p for p in feasible if p.total_s <= seconds), None)
    if chosen is None and feasible:
        chosen = min(feasible, key=lambda p: p.total_s)
    return chosen, aim, tried


def _executor(compile_flag: bool | str, wall_end: float) -> LocalExecutor:
    return LocalExecutor(pack_fn=partial(run_pack, compile=compile_flag, deadline=wall_end))


def _run_packs(cfg: StudyConfig, study, corpus: Corpus, executor, total: int, K: int, pack_s: float, end: float,
               log: Callable[[str], None]) -> tuple[int, str | None]:
    """Train the study's next trials pack by pack until ``total`` started -> (started, why it stopped early)."""
    started = 0
    while started < total:  # an unknown cost (no rate measured) starts while time is left; run_pack stops it at end
        if time.perf_counter() + (pack_s if math.isfinite(pack_s) else 0.0) > end:
            return started, f"time: a pack is predicted {pack_s:.0f} s, {max(0.0, end - time.perf_counter()):.0f} s left"
        started = min(total, started + K)
        execute(replace(cfg, budget=BudgetConfig(trials=started)), study, corpus, executor, log, shutdown=False)
    return started, None


def _config(name: str, spec: ProxySpec, K: int, device: str, threads: int) -> StudyConfig:
    ex = ExecutorConfig(kind="local", workers=1, num_gpus=1.0 if device == "cuda" else 0.0, threads_per_worker=threads,
                        pack_size=K)
    return StudyConfig(study=name, proxy=spec, executor=ex)


def run_transfer(corpus: Corpus, plan: Plan, device: str, compile_backend: str | bool, threads: int, end: float,
                 emit: Callable[..., None], log: Callable[[str], None], fits: bool = True) -> dict[str, Any] | None:
    """Part (b) until ``end`` (a ``time.perf_counter()``) -> the transfer report (None: nothing to compare).

    The proxies leave the targets their predicted time (``fits``), or one seed's (a plan predicted not to fit).
    """
    sizes, wall_end = plan.sizes, time.time() + (end - time.perf_counter())
    tokens = corpus.token_counts("train")
    space = MixtureSpace.build(corpus.domains).capped(tokens, plan.target.tokens, sizes.max_epochs)
    objective = Objective.from_config({}, corpus.domains)  # the mean loss over the domains
    study = create_study("gpu-suite-proxies", space=space, objective=objective, searcher="regmix",
                         searcher_options={"surrogate": "gp"}, n_init=sizes.n_proxies, spec=plan.proxy, storage=None)
    t0 = time.perf_counter()
    pack_s = plan.proxies_s / math.ceil(sizes.n_proxies / sizes.proxy_pack)
    ex = _executor(compile_backend if plan.compile_proxies else False, wall_end)
    proxies_end = end - (plan.targets_s if fits else plan.targets_s / sizes.seeds)  # kept for the targets
    started, why = _run_packs(_config(study.name, plan.proxy, sizes.proxy_pack, device, threads), study, corpus, ex,
                              sizes.n_proxies, sizes.proxy_pack, pack_s, proxies_end, log)
    done = [t for t in study.trials if t.ok]
    tps = [t.metrics.get("pack_tokens_per_s") for t in done if t.metrics.get("pack_tokens_per_s")]
    emit("transfer", "proxies", preset=plan.proxy.preset, tokens=plan.proxy.tokens, started=started,
         completed=len(done), failed=sum(1 for t in study.trials if t.error), seconds=time.perf_counter() - t0,
         pack_tokens_per_s=float(np.median(tps)) if tps else None, predicted_s=plan.proxies_s, stopped=why,
         errors=sorted({t.error for t in study.trials if t.error})[:3])
    if len(done) < 4:
        emit("transfer", "stopped", reason=f"{len(done)} proxies completed; the GP needs at least 4")
        return None
    t1 = time.perf_counter()
    arms = source_arms(study, [], best=False)  # {"recommended": ...}
    rec = arms["recommended"]
    emit("transfer", "recommendation", mixture=rec["mixture"].to_dict(), predicted=rec["proxy"], surrogate="gp",
         proxies=len(done), best_proxy=min(t.value for t in done), seconds=time.perf_counter() - t1)
    arms |= {b: {"mixture": m, "proxy": None, "from": "baseline"} for b, m in StudyPlan.baselines(space).items()}
    doc_arms = {k: {"mixture": a["mixture"].to_dict(), "proxy": a["proxy"], "from": a["from"]} for k, a in arms.items()}
    tstudy = create_study("gpu-suite-transfer", space=space, objective=objective, searcher="random", n_init=0,
                          spec=plan.target, storage=None, extra={"transfer_of": study.name, "transfer_arms": doc_arms})
    for s in range(sizes.seeds):  # seed-major: a pack of the arms per seed, or of them all
        for label, arm in arms.items():
            tstudy.enqueue(arm["mixture"], replace(plan.target, seed=s), label)
    K, per = plan.target_pack, plan.target_pack // len(arms)  # members, seeds per pack
    cfg = _config(tstudy.name, plan.target, K, device, threads)
    ex = _executor(compile_backend if plan.compile_targets else False, wall_end)
    pack_s = plan.targets_s * per / sizes.seeds
    for first in range(0, sizes.seeds, per):
        t2 = time.perf_counter()
        seeds = list(range(first, min(sizes.seeds, first + per)))
        _, why = _run_packs(cfg, tstudy, corpus, ex, len(arms) * (seeds[-1] + 1), K, pack_s, end, log)
        if why:
            emit("transfer", "stopped", reason=f"seed(s) {seeds} not trained: {why}")
            break
        for s in seeds:
            values = {t.label: t.value for t in tstudy.trials if t.spec.seed == s and t.ok}
            errors = {t.label: t.error for t in tstudy.trials if t.spec.seed == s and t.error}
            emit("transfer", "target_seed", seed=s, preset=plan.target.preset, tokens=plan.target.tokens, pack=K,
                 objective=values, errors=errors, seconds=(time.perf_counter() - t2) / len(seeds),
                 predicted_s=pack_s / len(seeds))
    if not any(t.ok for t in tstudy.trials):
        return None
    doc = transfer_report(tstudy, doc_arms, plan.proxy)
    emit("transfer", "table", report=doc, text=format_table(doc))
    return doc


__all__ = ["Plan", "Sizes", "choose", "plan_for", "rate_for", "run_transfer", "sample_seconds",
           "target_preset"]
