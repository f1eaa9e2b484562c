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
import time
from typing import Any

import numpy as np

from mixopt.core.errors import UserError

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
             budget: int, seed: int, init_rows: np.ndarray) -> list[int]:
    """The rows evaluated by ``searcher`` in order, length ``budget``."""
    from mixopt.search import Observation, SearchContext
    from mixopt.search.pool import select_from_pool

    order: list[int] = []
    obs: list = []
    left = np.ones(len(W), dtype=bool)

    def see(i: int) -> None:
        ok = bool(np.isfinite(v[i]))
        obs.append(Observation(len(obs), mixtures[i], "COMPLETE" if ok else "FAILED",
                               float(v[i]) if ok else None))
        order.append(i)
        left[i] = False

    for i in init_rows:
        see(int(i))
    while len(order) < budget:
        idx = np.flatnonzero(left)
        ctx = SearchContext(space, tuple(obs), seed)
        pick = select_from_pool(searcher, ctx, W[idx], 1)
        # a remaining row equal to an evaluated one is never "fresh": take a seeded random row
        j = int(idx[pick[0]]) if pick else int(ctx.rng("replay.fallback").choice(idx))
        see(j)
    return order


def replay_pool(W: np.ndarray, values: np.ndarray, domains: tuple[str, ...], searchers: str | list,
                budget: int, seeds: int, init: int = 0) -> dict[str, dict]:
    """Replay ``searchers`` on a pool: weights W (N, k) aligned to ``domains``, ``values`` (N,) to
    minimize (nan = failed run). Returns ``{label: figures}`` (see the module docstring)."""
    from mixopt.core.mixture import Mixture, MixtureSpace

    W = np.asarray(W, dtype=float)
    v = np.asarray(values, dtype=float)
    specs = parse_searchers(searchers) if isinstance(searchers, str) else list(searchers)
    _check(len(W), budget, seeds, init)
    fin = np.isfinite(v)
    if not fin.any():
        raise UserError("replay: the objective has no finite value in the table")
    built = _build_searchers(specs)
    W = W / W.sum(axis=1, keepdims=True)
    prior = tuple(W.mean(axis=0).tolist())
    space = MixtureSpace(tuple(domains), (0.0,) * len(domains), (1.0,) * len(domains), prior)
    mixtures = [Mixture.from_array(w, space.domains) for w in W]
    tops = _top_sets(v)
    best, worst = float(v[fin].min()), float(v[fin].max())
    inits = [np.random.default_rng([seed, 0x5EED]).permutation(len(W))[:init] for seed in range(seeds)]
    results: dict[str, dict] = {}
    for label, s in built.items():
        t0 = time.perf_counter()
        firsts = {key: [] for key, _ in TOPS}
        curves = []
        for seed in range(seeds):
            order = np.array(_run_one(s, space, mixtures, W, v, budget, seed, inits[seed]))
            for key, _ in TOPS:
                hit = np.flatnonzero(tops[key][order])
                firsts[key].append(int(hit[0]) + 1 if len(hit) else budget + 1)
            seen = np.where(np.isfinite(v[order]), v[order], np.inf)
            bsf = np.minimum.accumulate(seen)
            curves.append(np.where(np.isfinite(bsf), bsf - best, worst - best))
        res: dict[str, Any] = {}
        for key, _ in TOPS:
            res[f"evals_to_{key}_median"] = float(np.median(firsts[key]))
        res["curve"] = np.median(np.array(curves), axis=0).tolist()
        for key, _ in TOPS:
            res[f"evals_to_{key}"] = firsts[key]
            res[f"missed_{key}"] = int(sum(f > budget for f in firsts[key]))
        res["wall_s"] = round(time.perf_counter() - t0, 3)
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
                 init: int = 0, maximize: bool = False) -> dict[str, dict]:
    """Read the runs table ``runs`` and replay on it; ``objective`` negated when ``maximize``.
    Regret curves are in objective units either way (>= 0)."""
    from mixopt.core.runs_table import read_runs_table

    table = read_runs_table(runs, objective=objective)
    v = table.metric(objective)
    return replay_pool(table.weights(), -v if maximize else v, table.domains, searchers, budget, seeds, init)


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
    rp.add_argument("--json", action="store_true")
    rp.add_argument("--plot", help="write the regret curves to this PNG file")
    return rp


def cmd_replay(args: argparse.Namespace, extra: list[str] | None = None) -> int:
    """Run ``mixopt replay`` from parsed arguments; prints a table or JSON; returns 0."""
    if extra:
        raise UserError(f"unrecognized arguments: {' '.join(extra)}")
    res = replay_table(args.runs, args.objective, args.searcher, args.budget, args.seeds,
                       args.init, args.maximize)
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
