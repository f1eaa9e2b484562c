"""``mixopt replay``: which searcher would have found a good mixture soonest in a runs table?

Each searcher is replayed against the table as a **pool**: the space is the table's ``w.``
domains (no floors or caps, prior = the mean of the pool's weights); at each step the searcher
picks one row not yet evaluated (:func:`mixopt.search.pool.select_from_pool`: a model-based searcher
scores the remaining rows, a proposal-only one has its proposal snapped to the nearest
remaining row) and then sees that row's objective as a COMPLETE observation (a row whose
objective is nan/inf is seen as FAILED). The objective is negated with ``maximize`` so every
searcher minimizes. The first ``init`` rows of each seed are the same seeded random rows for
every searcher (fairness); ``random`` is always replayed as the baseline.

Figures per searcher (medians over seeds):

* ``evals_to_top1`` / ``evals_to_top5``: rows evaluated (init included) until one row of the
  best 1% / 5% of the pool's finite rows (``max(1, floor(q * n))`` rows; ties included) has
  been evaluated; ``budget + 1`` when it never happens within the budget (counted in
  ``missed_top1``/``missed_top5``).
* ``curve``: best-so-far regret after each evaluation, length ``budget``: best value seen minus
  the pool's best, in objective units, >= 0 (for ``maximize``: pool best minus best seen).
  Before any finite value is seen it is the pool's range (worst case).

Parallel seeds (``workers``, ``mixopt replay --workers N``): every (searcher, seed) replay is one
task; with ``workers > 1`` they run in that many spawned processes (one torch / BLAS thread each),
otherwise in this process, also with one thread for the duration, so the figures are identical
for any number of workers (model fits are deterministic: :mod:`mixopt.search.refit`). Progress
lines go to ``progress`` (the CLI: stderr). ``wall_s`` is the sum of a searcher's per-seed
seconds (its cost, comparable across worker counts), ``cpu_s`` the same in CPU seconds of the
replaying process (comparable on a busy machine), ``elapsed_s`` the whole replay's wall time.
A script that calls :func:`replay_pool` with ``workers > 1`` needs the usual
``if __name__ == "__main__":`` guard (spawned processes import the main module again).

Searchers are named ``NAME`` or ``NAME:key=value,key=value`` (values parsed as YAML; dotted
keys nest: ``regmix:surrogate_options.n_estimators=200``); a comma-separated list of them
separates searchers at any item without ``=``: ``random,regmix:surrogate=linear,top_k=50,bo``.

Example:
    >>> res = replay_table("runs.csv", "loss.pile_cc", ["regmix"], budget=50, seeds=3)  # doctest: +SKIP
    >>> res["regmix"]["evals_to_top1_median"], len(res["regmix"]["curve"])              # doctest: +SKIP
    (19.0, 50)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from mixopt.core.errors import UserError
from mixopt.core.trial import TrialState

TOPS = (("top1", 0.01), ("top5", 0.05))


def parse_searchers(text: str) -> list[tuple[str, str, dict]]:
    """``"random,regmix:surrogate=linear,top_k=50"`` -> [(label, name, options)], random first.

    Example:
        >>> parse_searchers("regmix:surrogate=linear,top_k=50,mixing_law")[1:]
        [('regmix:surrogate=linear,top_k=50', 'regmix', {'surrogate': 'linear', 'top_k': 50}), \
('mixing_law', 'mixing_law', {})]
    """
    import yaml

    items: list[list[str]] = []
    for tok in (t.strip() for t in str(text).split(",")):
        if not tok:
            raise UserError(f"--searcher: empty name in {text!r}; expected NAME[:key=value,...][,NAME...]")
        if "=" in tok and ":" not in tok.split("=", 1)[0]:
            if not items:
                raise UserError(f"--searcher: option {tok!r} comes before any searcher name in {text!r}")
            items[-1].append(tok)
        else:
            items.append([tok])
    out: list[tuple[str, str, dict]] = []
    for it in items:
        name, _, first = it[0].partition(":")
        opts: dict[str, Any] = {}
        for kv in ([first] if first else []) + it[1:]:
            key, eq, raw = kv.partition("=")
            if not eq or not key:
                raise UserError(f"--searcher: {kv!r} in {text!r} must be key=value")
            try:
                val = yaml.safe_load(raw)
            except yaml.YAMLError:
                val = raw
            node = opts
            *parents, leaf = key.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = val
        out.append((",".join(it), name.strip(), opts))
    if not any(name == "random" and not opts for _, name, opts in out):
        out.insert(0, ("random", "random", {}))
    labels = [lab for lab, _, _ in out]
    if len(set(labels)) != len(labels):
        raise UserError(f"--searcher: a searcher is listed twice in {text!r}")
    return out


def _build_searchers(specs: list[tuple[str, str, dict]]) -> dict[str, Any]:
    from mixopt.search import get_searcher

    built = {}
    for label, name, opts in specs:
        try:
            built[label] = get_searcher(name, opts)
        except ImportError as e:
            raise UserError(f"--searcher: {name!r} cannot be loaded here ({e})") from None
        except TypeError as e:
            raise UserError(f"--searcher: bad options for {name!r}: {e}") from None
    return built


def _top_sets(v: np.ndarray) -> dict[str, np.ndarray]:
    fin = np.isfinite(v)
    vals = np.sort(v[fin])
    out = {}
    for key, q in TOPS:
        thr = vals[max(1, int(math.floor(q * len(vals)))) - 1]
        out[key] = fin & (v <= thr)
    return out


def _run_one(searcher: Any, space: Any, mixtures: list, W: np.ndarray, v: np.ndarray,
             budget: int, seed: int, init_rows: np.ndarray, stop: np.ndarray | None = None) -> list[int]:
    """The rows evaluated by ``searcher`` in order, length ``budget`` (shorter: it stopped at the
    first row where the mask ``stop`` is true)."""
    from mixopt.search import Observation, SearchContext
    from mixopt.search.pool import select_from_pool

    order: list[int] = []
    obs: list = []
    left = np.ones(len(W), dtype=bool)

    def see(i: int) -> None:
        ok = bool(np.isfinite(v[i]))
        obs.append(Observation(len(obs), mixtures[i], TrialState.COMPLETE if ok else TrialState.FAILED,
                               float(v[i]) if ok else None))
        order.append(i)
        left[i] = False

    for i in init_rows:
        see(int(i))
    while len(order) < budget and not (stop is not None and stop[order].any()):
        idx = np.flatnonzero(left)
        ctx = SearchContext(space, tuple(obs), seed)
        pick = select_from_pool(searcher, ctx, W[idx], 1)
        # a remaining row equal to an evaluated one is never "fresh": take a seeded random row
        j = int(idx[pick[0]]) if pick else int(ctx.rng("replay.fallback").choice(idx))
        see(j)
    return order


@contextmanager
def _one_thread() -> Iterator[None]:
    """torch and the BLAS libraries on one thread for the block (restored afterwards): results
    then do not depend on the number of worker processes."""
    import torch
    from threadpoolctl import threadpool_limits

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(n)


class _Job:
    """One pool replay's data, shared by its tasks (sent once to each worker process)."""

    def __init__(self, specs: list[tuple[str, str, dict]], W: np.ndarray, v: np.ndarray,
                 domains: tuple[str, ...], budget: int, inits: list[np.ndarray],
                 stop: np.ndarray | None = None) -> None:
        from mixopt.core.mixture import Mixture, MixtureSpace

        self.specs, self.W, self.v, self.budget, self.inits, self.stop = specs, W, v, budget, inits, stop
        prior = tuple(W.mean(axis=0).tolist())
        self.space = MixtureSpace(tuple(domains), (0.0,) * len(domains), (1.0,) * len(domains), prior)
        self.mixtures = [Mixture.from_array(w, self.space.domains) for w in W]
        self.built = _build_searchers(specs)

    def run(self, label: str, seed: int) -> tuple[list[int], float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        with _one_thread():
            order = _run_one(self.built[label], self.space, self.mixtures, self.W, self.v, self.budget, seed,
                             self.inits[seed], self.stop)
        return order, time.perf_counter() - t0, time.process_time() - c0


_WORKER_JOB: _Job | None = None


def _worker_init(args: tuple) -> None:
    global _WORKER_JOB
    import torch

    torch.set_num_threads(1)
    _WORKER_JOB = _Job(*args)


def _worker_run(label: str, seed: int) -> tuple[list[int], float, float]:
    assert _WORKER_JOB is not None
    return _WORKER_JOB.run(label, seed)


def replay_pool(W: np.ndarray, values: np.ndarray, domains: tuple[str, ...], searchers: str | list,
                budget: int, seeds: int, init: int = 0, workers: int = 1,
                progress: Callable[[str], None] | None = None, stop_at_top1: bool = False) -> dict[str, dict]:
    """Replay ``searchers`` on a pool: weights W (N, k) aligned to ``domains``, ``values`` (N,) to
    minimize (nan = failed run), ``workers`` processes. Returns ``{label: figures}`` (see the
    module docstring). ``stop_at_top1``: each seed stops at its first top-1% row (the
    evaluations-to-top figures are unchanged, top 1% lying inside top 5%; the curve after the
    stop repeats its last value; for benchmarks that need only those figures)."""
    W = np.asarray(W, dtype=float)
    v = np.asarray(values, dtype=float)
    specs = parse_searchers(searchers) if isinstance(searchers, str) else list(searchers)
    _check(len(W), budget, seeds, init)
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise UserError(f"replay --workers: {workers!r} must be an integer >= 1")
    fin = np.isfinite(v)
    if not fin.any():
        raise UserError("replay: the objective has no finite value in the table")
    _build_searchers(specs)                       # option errors surface here, before any process starts
    W = W / W.sum(axis=1, keepdims=True)
    tops = _top_sets(v)
    best, worst = float(v[fin].min()), float(v[fin].max())
    inits = [np.random.default_rng([seed, 0x5EED]).permutation(len(W))[:init] for seed in range(seeds)]
    labels = [lab for lab, _, _ in specs]
    tasks = [(label, seed) for label in labels for seed in range(seeds)]
    orders: dict[tuple[str, int], list[int]] = {}
    secs: dict[tuple[str, int], float] = {}
    t_start = time.perf_counter()

    cpu: dict[tuple[str, int], float] = {}

    def done(label: str, seed: int, order: list[int], dt: float, dc: float) -> None:
        orders[(label, seed)], secs[(label, seed)], cpu[(label, seed)] = order, dt, dc
        n = sum(1 for (lab, _) in orders if lab == label)
        if progress is not None:
            total = sum(secs[(label, s)] for s in range(seeds) if (label, s) in secs)
            progress(f"replay: {label}: seed {seed} done in {dt:.1f} s ({n}/{seeds} seeds, {total:.1f} s)"
                     + (" - finished" if n == seeds else ""))

    args = (specs, W, v, tuple(domains), budget, inits, tops["top1"] if stop_at_top1 else None)
    if workers == 1 or len(tasks) == 1:
        job = _Job(*args)
        for label, seed in tasks:
            done(label, seed, *job.run(label, seed))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=min(int(workers), len(tasks)), mp_context=mp.get_context("spawn"),
                                 initializer=_worker_init, initargs=(args,)) as ex:
            futs = {ex.submit(_worker_run, label, seed): (label, seed) for label, seed in tasks}
            for f in as_completed(futs):
                done(*futs[f], *f.result())
    elapsed = time.perf_counter() - t_start
    results: dict[str, dict] = {}
    for label in labels:
        firsts: dict[str, list[int]] = {key: [] for key, _ in TOPS}
        curves = []
        for seed in range(seeds):
            order = np.array(orders[(label, seed)])
            for key, _ in TOPS:
                hit = np.flatnonzero(tops[key][order])
                firsts[key].append(int(hit[0]) + 1 if len(hit) else budget + 1)
            seen = np.where(np.isfinite(v[order]), v[order], np.inf)
            bsf = np.minimum.accumulate(seen)
            bsf = np.concatenate([bsf, np.full(budget - len(bsf), bsf[-1] if len(bsf) else np.inf)])
            curves.append(np.where(np.isfinite(bsf), bsf - best, worst - best))
        res: dict[str, Any] = {}
        for key, _ in TOPS:
            res[f"evals_to_{key}_median"] = float(np.median(firsts[key]))
        res["curve"] = np.median(np.array(curves), axis=0).tolist()
        for key, _ in TOPS:
            res[f"evals_to_{key}"] = firsts[key]
            res[f"missed_{key}"] = int(sum(f > budget for f in firsts[key]))
        res["wall_s"] = round(sum(secs[(label, s)] for s in range(seeds)), 3)
        res["cpu_s"] = round(sum(cpu[(label, s)] for s in range(seeds)), 3)
        res["elapsed_s"] = round(elapsed, 3)
        results[label] = res
    return results


def _check(n_rows: int, budget: int, seeds: int, init: int) -> None:
    for key, val, low in (("--budget", budget, 1), ("--seeds", seeds, 1), ("--init", init, 0)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < low:
            raise UserError(f"replay {key}: {val!r} must be an integer >= {low}")
    if budget > n_rows:
        raise UserError(f"replay --budget: {budget} is more than the table's {n_rows} rows")
    if init > budget:
        raise UserError(f"replay --init: {init} is more than --budget {budget}")


def replay_table(runs: str, objective: str, searchers: str | list, budget: int, seeds: int,
                 init: int = 0, maximize: bool = False, workers: int = 1,
                 progress: Callable[[str], None] | None = None) -> dict[str, dict]:
    """Read the runs table ``runs`` and replay on it; ``objective`` negated when ``maximize``.
    Regret curves are in objective units either way (>= 0)."""
    from mixopt.core.runs_table import read_runs_table

    table = read_runs_table(runs, objective=objective)
    v = table.metric(objective)
    return replay_pool(table.weights(), -v if maximize else v, table.domains, searchers, budget, seeds, init,
                       workers, progress)


def plot_curves(results: dict[str, dict], path: str, title: str = "") -> None:
    """Median best-so-far regret vs evaluations, one line per searcher, as PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, res in results.items():
        ax.plot(np.arange(1, len(res["curve"]) + 1), res["curve"], label=label)
    ax.set_xlabel("evaluations")
    ax.set_ylabel("best-so-far regret (median over seeds)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        fig.savefig(path, format="png", dpi=100)
    except OSError as e:
        raise UserError(f"replay --plot: cannot write {path}: {e.strerror or e}") from None
    finally:
        plt.close(fig)


def format_table(results: dict[str, dict], budget: int) -> str:
    """A text table: medians, ratio to random, misses, final regret, wall time."""
    base = results.get("random", {})
    lines = [f"{'searcher':<34}{'top1%':>7}{'x rand':>8}{'top5%':>7}{'x rand':>8}{'final regret':>14}{'wall s':>8}"]
    for label, r in results.items():
        cells = []
        for key in ("top1", "top5"):
            med = r[f"evals_to_{key}_median"]
            ref = base.get(f"evals_to_{key}_median")
            miss = "*" if r[f"missed_{key}"] else ""
            cells.append(f"{med:>6g}{miss:<1}" + (f"{med / ref:>8.2f}" if ref else f"{'':>8}"))
        lines.append(f"{label:<34}{cells[0]}{cells[1]}{r['curve'][-1]:>14.4g}{r['wall_s']:>8.1f}")
    lines.append(f"(median evaluations, init included, to reach the top 1% / 5% of the pool; "
                 f"* = missed in some seed, counted as {budget + 1})")
    return "\n".join(lines)


# ---- CLI hook (wired into mixopt.cli) ----------------------------------------------------------
def add_replay_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``mixopt replay`` to the CLI's subparsers."""
    rp = subparsers.add_parser("replay", help="replay searchers against a runs table used as a pool")
    rp.add_argument("--runs", required=True, help="runs table (.csv or .parquet) used as the pool")
    rp.add_argument("--objective", required=True, help="metric column, e.g. loss.pile_cc")
    rp.add_argument("--maximize", action="store_true", help="the column is a score (higher is better)")
    rp.add_argument("--searcher", required=True,
                    help="NAME[:key=value,...][,NAME...], e.g. regmix:surrogate=linear,mixing_law "
                         "(random is always added)")
    rp.add_argument("--budget", type=int, required=True, help="rows evaluated per seed, init included")
    rp.add_argument("--seeds", type=int, required=True, help="replays per searcher")
    rp.add_argument("--init", type=int, default=0, help="seeded random rows first (same for every searcher)")
    rp.add_argument("--workers", type=int, default=1,
                    help="processes replaying seeds in parallel (one thread each); same figures for any N")
    rp.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    rp.add_argument("--json", action="store_true")
    rp.add_argument("--plot", help="write the regret curves to this PNG file")
    return rp


def cmd_replay(args: argparse.Namespace, extra: list[str] | None = None) -> int:
    """Run ``mixopt replay`` from parsed arguments; prints a table or JSON; returns 0."""
    if extra:
        raise UserError(f"unrecognized arguments: {' '.join(extra)}")
    res = replay_table(args.runs, args.objective, args.searcher, args.budget, args.seeds,
                       args.init, args.maximize, args.workers,
                       None if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True)))
    if args.plot:
        plot_curves(res, args.plot, f"{args.objective} ({'max' if args.maximize else 'min'}), "
                                    f"{args.seeds} seeds")
    if args.json:
        print(json.dumps(res))
    else:
        print(f"replay: {args.runs} ({args.objective}, {'maximize' if args.maximize else 'minimize'}), "
              f"budget {args.budget}, {args.seeds} seeds, init {args.init}")
        print(format_table(res, args.budget))
    return 0
