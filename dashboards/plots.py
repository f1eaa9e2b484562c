"""Study plots logged to MLflow with every study: PNGs (matplotlib, Agg) and one interactive
``report.html`` (plotly, self-contained so the MLflow artifact view shows it offline).

Example:
    >>> files = study_plots(study, study.recommend(), "out/tiny/plots")  # doctest: +SKIP
    >>> sorted(files)  # doctest: +SKIP
    ['plot.html', 'plot.losses', 'plot.mixture', 'plot.notes', 'plot.objective', 'plot.surrogate', 'plot.weights']
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mixopt.analysis.fits import fit_loss_vs_scale
from mixopt.dashboards import data as D
from mixopt.dashboards import figures as F

log = logging.getLogger(__name__)
_PHASE_COLORS = {"enqueued": "#7f7f7f", "warm_start": "#9467bd", "init": "#1f77b4", "model": "#ff7f0e"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _plt().close(fig)
    return str(path)


def png_weights(v: D.StudyView, path: Path) -> str | None:
    if not len(v.trial_ids):
        return None
    plt = _plt()
    order = D.order_by_objective(v)
    fig, ax = plt.subplots(figsize=(max(6.0, min(16.0, 0.18 * len(order) + 3)), 4))
    bottom = np.zeros(len(order))
    x = np.arange(len(order))
    for j, d in enumerate(v.domains):
        ax.bar(x, v.W[order, j], bottom=bottom, label=d, width=0.85)
        bottom += v.W[order, j]
    step = max(1, len(order) // 40)
    ax.set_xticks(x[::step], [str(int(v.trial_ids[i])) + ("" if v.ok[i] else "✗") for i in order][::step],
                  fontsize=7, rotation=90)
    ax.set(xlabel="trial id (sorted by objective, best left; ✗ = no objective)", ylabel="weight", ylim=(0, 1),
           title=f"{v.name}: mixture weights of {len(order)} trials")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


def png_objective(v: D.StudyView, path: Path) -> str | None:
    if not len(v.trial_ids):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for p in dict.fromkeys(v.phase):
        idx = [i for i in range(len(v.phase)) if v.phase[i] == p and v.ok[i]]
        if idx:
            ax.scatter(v.trial_ids[idx], v.value[idx], s=25, label=f"phase: {p}", color=_PHASE_COLORS.get(p, "#17becf"))
    bsf = D.best_so_far(v)
    if np.isfinite(bsf).any():
        ax.step(v.trial_ids, bsf, where="post", color="black", lw=1.2, label="best so far")
    failed = [i for i, s in enumerate(v.state) if s == "FAILED"]
    if failed:
        y0 = float(np.nanmin(v.value)) if v.ok.any() else 0.0
        ax.scatter(v.trial_ids[failed], [y0] * len(failed), marker="x", color="#d62728", label="FAILED")
    ax.set(xlabel="trial id", ylabel="objective (lower is better)", title=f"{v.name}: {v.objective}")
    ax.legend(fontsize=7)
    return _save(fig, path)


def png_surrogate(cv: D.CVResult | None, path: Path) -> str | None:
    if cv is None:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    lo, hi = min(cv.actual.min(), cv.predicted.min()), max(cv.actual.max(), cv.predicted.max())
    ax.plot([lo, hi], [lo, hi], "--", color="gray", lw=1)
    ax.scatter(cv.actual, cv.predicted, s=25)
    rho = "n/a" if math.isnan(cv.spearman) else f"{cv.spearman:.3f}"
    ax.set(xlabel="actual objective", ylabel="predicted (held out)",
           title=f"surrogate {cv.surrogate}, {cv.method} CV: Spearman ρ = {rho}")
    ax.title.set_fontsize(9)
    return _save(fig, path)


def png_losses(comp, path: Path) -> str | None:
    if comp is None:
        return None
    plt = _plt()
    names, cols, L = comp
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(cols) + 3), 4))
    w = 0.8 / len(names)
    for r, name in enumerate(names):
        ax.bar(np.arange(len(cols)) + (r - (len(names) - 1) / 2) * w, L[r], width=w, label=name)
    ax.set_xticks(np.arange(len(cols)), cols, rotation=30 if len(cols) > 6 else 0)
    if np.isfinite(L).any():
        ax.set_ylim(float(np.nanmin(L)) * 0.95, float(np.nanmax(L)) * 1.02)
    ax.set(ylabel="validation loss", title="per-domain validation loss: top trials vs baselines")
    ax.legend(fontsize=7)
    return _save(fig, path)


def png_mixture(v: D.StudyView, comp, path: Path) -> str | None:
    plt = _plt()
    names, M = comp
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(v.domains) + 3), 4))
    w = 0.8 / len(names)
    for r, name in enumerate(names):
        bars = ax.bar(np.arange(len(v.domains)) + (r - (len(names) - 1) / 2) * w, M[r], width=w, label=name)
        if len(v.domains) * len(names) <= 40:
            ax.bar_label(bars, fmt="%.2f", fontsize=6)
    ax.set_xticks(np.arange(len(v.domains)), v.domains, rotation=30 if len(v.domains) > 6 else 0)
    ax.set(ylabel="weight", ylim=(0, min(1.1, float(M.max()) * 1.2 + 0.05)),
           title="recommended mixture vs uniform and natural")
    ax.legend(fontsize=7)
    return _save(fig, path)


def png_routing(r, path: Path) -> str | None:
    if r is None:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for k, m in (("routing_entropy", "o"), ("routing_load_cv", "D"), ("routing_dropped_frac", "x")):
        if np.isfinite(r[k]).any():
            ax.scatter(r[k], r["value"], marker=m, label=k)
    ax.set(xlabel="routing statistic (entropy 1 / CV 0 = balanced)", ylabel="objective",
           title="MoE routing statistics vs objective")
    ax.legend(fontsize=7)
    return _save(fig, path)


def png_merged(m, path: Path) -> str | None:
    if m is None:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2 if m["pairs"] else 1, figsize=(11 if m["pairs"] else 6, 4))
    ax = axes[0] if m["pairs"] else axes
    ax.hist(m["merged"][np.isfinite(m["merged"])], bins=40)
    ax.set(xlabel="merged objective", ylabel="mixtures", title=f"{len(m['merged'])} mixtures scored by merging experts")
    if m["pairs"]:
        mg, tr, _ = map(np.array, zip(*m["pairs"]))
        axes[1].scatter(mg, tr)
        axes[1].set(xlabel="merged objective", ylabel="trained objective (measured)",
                    title=f"{len(mg)} screened mixtures trained for real")
    return _save(fig, path)


def png_online(o, path: Path) -> str | None:
    if o is None:
        return None
    plt = _plt()
    n = len(o["trials"])
    fig, axes = plt.subplots(1, n, figsize=(5.5 * n, 3.8), squeeze=False)
    for ax, (tid, (steps, W)) in zip(axes[0], o["trials"].items()):
        for j, d in enumerate(o["domains"]):
            ax.step(steps, W[:, j], where="post", label=d)
        ax.set(xlabel="training step", ylabel="weight", ylim=(0, 1),
               title=f"trial {tid}: {o['mixer'].get(tid, 'online')} weights")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


def _scaling_fit(study, out: Path) -> str | None:
    """``mixopt fit``'s loss-vs-scale fit with 90% bootstrap intervals (few replicates: a report)."""
    pts = D.scaling_points(study)
    if pts is None:
        return None

    target = (4 * float(pts["N"].max()), 4 * float(pts["D"].max()))
    fit_loss_vs_scale(study, target, reps=20, out=out)
    return str(out / "fit_loss_scale.png")


def study_plots(study, recommendation: Any, out_dir: str | Path) -> dict[str, str]:
    """Write the study's plots under ``out_dir``; returns {key: path} of the files written.

    PNGs: ``plot_weights``, ``plot_objective``, ``plot_surrogate`` (>= 5 completed trials; held-out
    predictions of the surrogate the study searched with, :func:`mixopt.dashboards.data.searched_surrogate`),
    ``plot_losses``, ``plot_mixture``, ``plot_routing`` (MoE only), ``fit_loss_scale`` (ladder
    sweeps only), ``plot_merged`` (mixtures scored by merging experts), ``plot_online`` (online mixers'
    weights during training); ``report.html`` (all of them, interactive); ``plots_notes.txt`` (what was
    skipped and why). Never raises for the study's data: a plot that cannot be made is a note.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    notes: list[str] = []

    def attempt(key: str, fn: Callable[[], str | None]) -> None:
        try:
            p = fn()
        except Exception as e:  # a report never stops a study
            log.warning("plot %s failed: %s", key, e)
            notes.append(f"{key}: failed ({type(e).__name__}: {e})")
            return
        if p:
            files[key] = p

    try:
        v = D.study_view(study)
    except Exception as e:
        (out / "plots_notes.txt").write_text(f"no plots: cannot read the study ({type(e).__name__}: {e})\n")
        return {"plot.notes": str(out / "plots_notes.txt")}
    cv = D.study_surrogate_cv(study, v)
    losses = D.loss_comparison(v)
    mix = D.mixture_comparison(v, recommendation)
    routing = D.routing(v)
    attempt("plot.weights", lambda: png_weights(v, out / "plot_weights.png"))
    attempt("plot.objective", lambda: png_objective(v, out / "plot_objective.png"))
    attempt("plot.surrogate", lambda: png_surrogate(cv, out / "plot_surrogate.png"))
    attempt("plot.losses", lambda: png_losses(losses, out / "plot_losses.png"))
    attempt("plot.mixture", lambda: png_mixture(v, mix, out / "plot_mixture.png"))
    attempt("plot.routing", lambda: png_routing(routing, out / "plot_routing.png"))
    attempt("plot.scaling", lambda: _scaling_fit(study, out))
    merged, online = D.merged_view(study), D.online_trajectories(study)
    attempt("plot.merged", lambda: png_merged(merged, out / "plot_merged.png"))
    attempt("plot.online", lambda: png_online(online, out / "plot_online.png"))
    attempt("plot.html", lambda: write_html(study, v, cv, losses, mix, routing, out / "report.html"))
    if routing is None:
        notes.append("MoE routing: skipped, no trial reports routing statistics (dense proxies)")
    if "plot.scaling" not in files:
        notes.append("scaling-law fit: skipped, no mixture was trained at 2 or more scales")
    (out / "plots_notes.txt").write_text("\n".join(v.notes + notes) + "\n")
    files["plot.notes"] = str(out / "plots_notes.txt")
    return files


def study_figures(study, v: D.StudyView, cv, losses, mix, routing) -> list:
    """The plotly figures of a study, in report order (None where there is no data)."""

    return [F.fig_mixture(v, mix), F.fig_objective(v), F.fig_weights(v), F.fig_surrogate(cv), F.fig_losses(losses),
            F.fig_scaling(D.scaling_points(study)), F.fig_routing(routing), F.fig_merged(D.merged_view(study)),
            F.fig_online(D.online_trajectories(study))]


def write_html(study, v: D.StudyView, cv, losses, mix, routing, path: Path) -> str:
    """One self-contained interactive page (plotly.js embedded once, about 5 MB)."""
    import html

    import plotly.io as pio

    figs = [f for f in study_figures(study, v, cv, losses, mix, routing) if f is not None]
    parts = [pio.to_html(f, full_html=False, include_plotlyjs=(i == 0)) for i, f in enumerate(figs)]
    c = v.counts
    head = (f"<h1>Study {html.escape(v.name)}</h1><p>{c.get('COMPLETE', 0)} complete, {c.get('FAILED', 0)} failed; "
            f"searcher {html.escape(v.searcher)}; objective: {html.escape(v.objective)} (lower is better)</p>")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in v.notes)
    path.write_text("<!doctype html><html><head><meta charset='utf-8'><title>mixopt study "
                    f"{html.escape(v.name)}</title></head><body style='font-family:sans-serif'>{head}"
                    + "".join(parts) + (f"<ul>{notes}</ul>" if notes else "") + "</body></html>")
    return str(path)
