"""A study's domain experts and its screening rounds: trained once, stored with the study, reused.

The weights live in one folder per expert set, ``<cache_dir>/experts/<key>/`` (the corpus cache, shared
by every study on the machine that trains the same set), with ``experts.json`` listing each file's
sha256, and in the study's store: an MLflow run of role ``experts`` (tag ``mixopt.experts=<key>``)
holding the files, so any later run, process or machine finds them. :func:`ensure_experts` verifies
what is there (checksums), fetches what the store has, and trains only what is missing (the seed and
every expert needed when the seed is missing, else the missing experts, as one pack; a study that only
branches its trials from the seed, ``merge.branch`` without screening, needs the seed alone). A corrupt
or missing file of a set that was trained before is retrained only when asked (``mixopt run
--resume``), else it is an error naming the file.

A screening round (:func:`screen`) scores many mixtures by merging the experts, on the executor's
workers, and stores them as one table per round (a CSV logged with an MLflow run of role ``merge``):
thousands of merged scores are a few files, never thousands of runs, and never trials.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mixopt.core.errors import DataError, UserError
from mixopt.core.experts import SEED_FILE, ExpertsSpec, expert_file, file_sha256, resolve_seed_fraction
from mixopt.core.mixture import Mixture, MixtureSpace
from mixopt.core.spec import ProxySpec
from mixopt.data.shards import write_atomic
from mixopt.run.config import MergeConfig
from mixopt.run.plan import StudyPlan
from mixopt.search.dirichlet import sample
from mixopt.study import Study

EXPERTS_FN = "mixopt.proxies.merge:train_experts"
MERGE_FN = "mixopt.proxies.merge:merged_losses"
MANIFEST = "experts.json"


@dataclass(frozen=True)
class ExpertSet:
    """Experts on disk: their definition, folder and manifest (files, sha256s, training record)."""

    spec: ExpertsSpec
    folder: Path
    manifest: dict[str, Any]


def base_mixture(merge: MergeConfig, space: MixtureSpace) -> Mixture:
    """The seed's mixture: ``natural`` / ``uniform`` (the study's baselines) or the one given."""
    if merge.base in ("uniform", "natural"):
        return StudyPlan.baselines(space)[merge.base]
    return Mixture(dict(merge.base), space.domains, where="merge.base")


def experts_spec(merge: MergeConfig, spec: ProxySpec, space: MixtureSpace, corpus) -> ExpertsSpec:
    """The expert set a study with ``merge`` settings trains: one expert per training domain."""
    return ExpertsSpec(spec, space.domains, base_mixture(merge, space), resolve_seed_fraction(merge.seed_fraction, spec),
                       corpus.fingerprint(), corpus.vocab_size)


def _check(folder: Path, es: ExpertsSpec, need: list[str] | None = None) -> tuple[dict[str, Any], list[str]]:
    """The folder's manifest and the files of ``need`` (default: the whole set) that are missing or do
    not match their sha256."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        manifest = {}
    sums = _sums(manifest, es)
    bad = [f for f in (es.files() if need is None else need)
           if f not in sums or not (folder / f).is_file() or file_sha256(folder / f) != sums[f]]
    return manifest, bad


def _sums(manifest: dict[str, Any], es: ExpertsSpec) -> dict[str, str]:
    """The files the manifest says were trained for ``es`` (none if it is another set's)."""
    return manifest.get("files", {}) if manifest.get("key") == es.key() else {}


def _trained_once(manifest: dict[str, Any], es: ExpertsSpec, bad: list[str]) -> list[str]:
    """Of the ``bad`` files, those the manifest lists: trained once, now missing or corrupt (damaged); the
    others were never trained (a set whose seed alone was needed so far)."""
    return [f for f in bad if f in _sums(manifest, es)]


def _fetch(study: Study, es: ExpertsSpec, folder: Path, bad: list[str], need: list[str]) -> None:
    """Copy the files the study's store holds for this set into ``folder`` (the latest experts run first;
    experts only from a run of the seed the folder holds, a seed with its run's whole set)."""
    runs = [r for r in study.storage.runs(study.name, "experts") if r["tags"].get("mixopt.experts") == es.key()]
    tmp = folder / f".fetch-{os.getpid()}"
    try:
        for run in reversed(runs):
            if not bad:
                return
            got = study.storage.run_files(study.name, run["run_id"], tmp)
            theirs = json.loads(got[MANIFEST].read_text()) if MANIFEST in got else {}
            mine, _ = _check(folder, es, [])
            ours = _sums(mine, es)
            if theirs.get("key") != es.key() or (  # experts fit only the seed they were trained from
                    SEED_FILE not in bad and theirs.get("files", {}).get(SEED_FILE) != ours.get(SEED_FILE)):
                continue
            took = [name for name in bad if name in got and name in theirs.get("files", {})]
            for name in took:
                os.replace(got[name], folder / name)
            if SEED_FILE in took or not ours:  # their seed: their set, wholesale
                os.replace(got[MANIFEST], folder / MANIFEST)
            elif took:
                files = {**ours, **{n: theirs["files"][n] for n in took}}
                write_atomic(folder / MANIFEST, json.dumps({**mine, "files": files}, indent=1).encode())
            _, bad = _check(folder, es, need)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _damaged(folder: Path, bad: list[str]) -> DataError:
    what = ", ".join(str(folder / f) for f in bad)
    return DataError(f"merge: expert file(s) {what} missing or corrupt (sha256 mismatch); rerun the study with --resume "
                     f"to retrain only those (a study not created yet: remove {folder} to train the set anew)")


def preflight(es: ExpertsSpec, cache_dir: Path, resume: bool, seed_only: bool = False) -> None:
    """Before a study is created or resumed: refuse a damaged expert set on this machine (one that was
    trained, with files now missing or corrupt) unless ``resume`` may retrain them; ``seed_only``: only
    the seed matters (a study that branches and does not screen)."""
    folder = cache_dir / "experts" / es.key()
    if resume or not (folder / MANIFEST).is_file():
        return
    manifest, bad = _check(folder, es, [SEED_FILE] if seed_only else None)
    damaged = _trained_once(manifest, es, bad)
    if damaged:
        raise _damaged(folder, damaged)


def ensure_experts(es: ExpertsSpec, study: Study, corpus_dir: str, executor, cache_dir: Path, *,
                   retrain: bool, num_threads: int = 1, device: str = "cpu",
                   progress: Callable[[str], None] = print, seed_only: bool = False) -> ExpertSet:
    """The expert set ``es``, verified, fetched from the store or trained (see the module docstring), and
    stored with ``study`` (a set found in the machine's cache is logged with a study that lacks it).
    Studies sharing the cache folder take turns (a file lock on the set's folder). ``seed_only``: only the
    seed is needed (a study that branches its trials and does not screen); experts are not trained.

    Raises:
        DataError: a file of a set trained before is missing or corrupt and ``retrain`` is off (it names the file).
    """
    folder = Path(cache_dir).expanduser() / "experts" / es.key()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # one process at a time trains or repairs a set
        try:
            return _ensure(es, study, corpus_dir, executor, folder, retrain, num_threads, device, progress,
                           [SEED_FILE] if seed_only else es.files())
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _ensure(es, study, corpus_dir, executor, folder, retrain, num_threads, device, progress, need) -> ExpertSet:
    manifest, bad = _check(folder, es, need)
    if bad:
        _fetch(study, es, folder, bad, need)
        manifest, still = _check(folder, es, need)
        if len(still) < len(bad):
            progress(f"merge: {len(bad) - len(still)} expert file(s) of {es.key()} fetched from the study's store "
                     f"({study.storage.uri})")
        bad = still
    what = (f"experts {es.key()} ({len(es.domains)} domains, {es.spec.preset})" if len(need) > 1 else
            f"the seed of {es.key()} ({es.spec.preset})")
    if not bad:
        progress(f"merge: {what} verified in {folder}")
        if not any(r["tags"].get("mixopt.experts") == es.key() for r in study.storage.runs(study.name, "experts")):
            _log(study, es, folder, manifest)  # trained for another study on this machine: now stored with this one
        return ExpertSet(es, folder, manifest)
    damaged = _trained_once(manifest, es, bad)
    if damaged and not retrain:
        raise _damaged(folder, damaged)
    # a new seed makes every expert of the old one stale: all of them are trained again (or dropped)
    keep = manifest.get("key") == es.key() and SEED_FILE not in bad
    todo = (["seed", *(d for d in es.domains if expert_file(d) in need)] if SEED_FILE in bad
            else [f[len("expert-"):-len(".safetensors")] for f in bad])
    n = len(todo) - ("seed" in todo)
    progress(f"merge: training {'the seed' if 'seed' in todo else ''}{' and ' if 'seed' in todo and n else ''}"
             f"{f'{n} expert(s)' if n else ''} of {es.spec.preset}, hand-off at s = {es.seed_fraction:g} (step "
             f"{es.seed_steps} of {es.spec.steps}; {_worth(es, todo):.3g} proxies' worth of tokens) -> {folder}")
    [res] = executor.run_tasks(EXPERTS_FN, [{"experts": es.to_dict(), "corpus_dir": corpus_dir, "out_dir": str(folder),
                                             "train": todo, "num_threads": num_threads, "device": device}])
    files = {**(manifest.get("files", {}) if keep else {}), **res["files"]}
    manifest = {"key": es.key(), "experts": es.to_dict(), "files": files,
                "train_loss": {**(manifest.get("train_loss", {}) if keep else {}), **res["train_loss"]},
                "tokens": int(manifest.get("tokens", 0) if keep else 0) + int(res["tokens"]),
                "seconds": float(manifest.get("seconds", 0.0) if keep else 0.0) + float(res["seconds"])}
    write_atomic(folder / MANIFEST, json.dumps(manifest, indent=1).encode())
    _log(study, es, folder, manifest)
    return ExpertSet(es, folder, manifest)


def _worth(es: ExpertsSpec, todo: list[str]) -> float:
    """What training ``todo`` (the seed and/or domains) costs, in proxies of ``es.spec``."""
    steps = es.seed_steps * ("seed" in todo) + es.expert_steps * (len(todo) - ("seed" in todo))
    return steps / es.spec.steps


def _log(study: Study, es: ExpertsSpec, folder: Path, manifest: dict[str, Any]) -> None:
    """The set's files and manifest as an ``experts`` run of the study (what other machines fetch)."""
    study.storage.log_run(study.name, f"experts-{es.key()}", "experts",
                          {"preset": es.spec.preset, "tokens": es.spec.tokens, "seed_fraction": es.seed_fraction,
                           "base": json.dumps(es.base.to_dict()), "domains": ",".join(es.domains), "key": es.key()},
                          {"expert_tokens": manifest.get("tokens", 0), "expert_seconds": manifest.get("seconds", 0.0),
                           "proxies_worth": manifest.get("tokens", 0) / (es.spec.steps * es.spec.batch_size
                                                                          * es.spec.seq_len)},
                          {"mixopt.experts": es.key()},
                          [str(folder / f) for f in (*(f for f in es.files() if f in manifest.get("files", {})), MANIFEST)])


def candidates(space: MixtureSpace, n: int, round_: int, seed: int, best: np.ndarray | None) -> np.ndarray:
    """Mixtures to screen, (n, k): Dirichlet draws over the space (round 1, or without ``best``); later
    rounds draw around the best merged mixtures so far (Dirichlet with mean at each, concentration 100)."""
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 0x4E46, round_])
    if round_ <= 1 or best is None or not len(best):
        return sample(space, n, rng)
    centers = best[rng.integers(0, len(best), size=n)]
    X = rng.gamma(100.0 * np.clip(centers, 1e-3, None))
    return np.array([space.project(x / x.sum()) for x in X])


def screen(study: Study, experts: ExpertSet, corpus, executor, merge: MergeConfig, round_: int, out_dir: Path,
           *, num_threads: int = 1, device: str = "cpu", progress: Callable[[str], None] = print) -> pd.DataFrame:
    """Score ``merge.candidates`` mixtures by merging the experts; store the round's table with the study."""
    t0 = time.perf_counter()
    space, es = study.space, experts.spec
    prev = study.merged_scores()
    best = None
    if len(prev):  # later rounds refine around the best 1.5 % so far (at least 4)
        top = prev.nsmallest(max(4, len(prev) * 3 // 200), "objective")
        best = top[[f"w.{d}" for d in space.domains]].to_numpy()
    X = candidates(space, merge.candidates, round_, study.seed, best)
    parts = np.array_split(np.arange(len(X)), max(1, min(len(X), getattr(executor, "capacity", 1))))
    payloads = [{"experts": es.to_dict(), "dir": str(experts.folder), "mixtures": X[idx].tolist(),
                 "corpus_dir": str(corpus.path), "eval_domains": list(corpus.domains), "batch": merge.batch,
                 "eval_batches": merge.eval_batches, "scale": merge.scale, "power": merge.power,
                 "num_threads": num_threads,
                 "device": device}
                for idx in parts if len(idx)]
    results = executor.run_tasks(MERGE_FN, payloads)
    domains = results[0]["domains"]
    L = np.concatenate([np.asarray(r["losses"], dtype=float) for r in results])
    rows = []
    for i, (x, losses) in enumerate(zip(X, L)):
        ld = dict(zip(domains, losses.tolist()))
        rows.append({"round": round_, "candidate": i, **{f"w.{d}": float(v) for d, v in zip(space.domains, x)},
                     **{f"loss.{d}": v for d, v in ld.items()}, "objective": study.objective.value(ld)})
    df = pd.DataFrame(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"merged-round-{round_}.csv"
    df.to_csv(path, index=False)
    seconds = time.perf_counter() - t0
    eval_tokens, cost = results[0]["eval_tokens"], es.score_cost(results[0]["eval_tokens"])
    study.storage.log_run(study.name, f"merge-round-{round_}", "merge",
                          {"round": round_, "candidates": len(df), "experts": es.key(), "preset": es.spec.preset,
                           "scale": merge.scale, "power": merge.power},
                          {"n": len(df), "best_objective": float(np.nanmin(df["objective"])), "seconds": seconds,
                           "worker_seconds_per_score": sum(r["seconds"] for r in results) / len(df),
                           "eval_tokens_per_score": eval_tokens,
                           "score_cost_in_proxies": cost},
                          {"mixopt.experts": es.key()}, [str(path)])
    finite = int(np.isfinite(df["objective"]).sum())
    progress(f"merge: round {round_}: {len(df)} mixtures scored by merging in {seconds:.0f} s ({finite} finite; best "
             f"merged objective {np.nanmin(df['objective']):.4f}); each score costs {eval_tokens:,} forward tokens "
             f"= {cost:.3f} of one proxy's training")
    return df


def prepare(cfg, es: ExpertsSpec, study: Study, corpus, executor, *, resume: bool,
            progress: Callable[[str], None] = print) -> ExpertSet:
    """The merge phase of ``mixopt run`` (``merge.candidates`` > 0 or ``merge.branch``): the study's experts
    ``es`` (verified, fetched or trained; the seed alone for a study that branches without screening), then
    the screening rounds not done yet. Returns the set (its folder is where branch trials start)."""
    threads, device = cfg.executor.threads_per_worker, cfg.executor.device
    rounds = study.storage.runs(study.name, "merge")
    now = (es.key(), float(cfg.merge.scale), float(cfg.merge.power))
    other = sorted({(r["tags"].get("mixopt.experts", "?"), float(r["params"].get("scale", 1.0)),
                     float(r["params"].get("power", 1.0))) for r in rounds} - {now})  # rounds from before: 1, 1
    if other:  # merged scores of other experts, scale or power would be ranked together with these
        key, scale, power = other[0]
        was = {str(r["params"].get("key")): r["params"] for r in study.storage.runs(study.name, "experts")}
        sf = was.get(key, {}).get("seed_fraction")
        handoff = sf is not None and float(sf) != es.seed_fraction  # what explains another key, if anything
        fix = [f"merge.seed_fraction: {float(sf):g}"] if handoff else []
        fix += [f"merge.{k}: {v:g}" for k, v, cur in (("scale", scale, now[1]), ("power", power, now[2])) if v != cur]
        fix = fix if key == now[0] or handoff else []  # another set for another reason: no setting brings it back
        raise UserError(f"merge: study {study.name!r} was screened with expert set {key} at merge.scale {scale:g}, "
                        f"merge.power {power:g}; this config scores with set {now[0]} at scale {now[1]:g}, power "
                        f"{now[2]:g}, and the two kinds of merged scores must not be ranked together: start a new study "
                        "(another study: name) for these settings"
                        + (f" (or set {', '.join(fix)} to continue this one)" if fix else ""))
    experts = ensure_experts(es, study, str(corpus.path), executor, cfg.data.cache_path(), retrain=resume,
                             num_threads=threads, device=device, progress=progress, seed_only=not cfg.merge.enabled)
    done = {int(r["params"].get("round", 0)) for r in rounds}
    for r in range(1, cfg.merge.rounds + 1) if cfg.merge.enabled else ():
        if r not in done:
            screen(study, experts, corpus, executor, cfg.merge, r, Path(cfg.output_dir) / study.name / "merge",
                   num_threads=threads, device=device, progress=progress)
    return experts


__all__ = ["ExpertSet", "base_mixture", "candidates", "ensure_experts", "experts_spec", "preflight", "prepare",
           "screen"]

