"""Interactive (plotly) figures of a study, for the HTML report and the live dashboard.

Each ``fig_*`` takes a :class:`mixopt.dashboards.data.StudyView` (plus what it needs) and returns a
``plotly.graph_objects.Figure``, or None when the study has no data for it.
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from mixopt.dashboards.data import PHASES, CVResult, StudyView, best_so_far, order_by_objective

PHASE_COLORS = {"enqueued": "#7f7f7f", "warm_start": "#9467bd", "init": "#1f77b4", "model": "#ff7f0e", "?": "#17becf"}
_LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=20, t=90, b=50), height=400,
               legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0))


def _fig(title: str, uirevision: str = "") -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title=dict(text=title, font=dict(size=15), x=0.01, y=0.97, yanchor="top"),
                      uirevision=uirevision or title, **_LAYOUT)
    return fig


def fig_weights(v: StudyView) -> go.Figure | None:
    """Stacked bars: each trial's mixture, trials sorted by objective (best left; FAILED last)."""
    if not len(v.trial_ids):
        return None
    order = order_by_objective(v)
    xs = [v.trial_name(int(i)) + ("" if v.ok[i] else f" ({v.state[i]})") for i in order]
    fig = _fig(f"Mixture weights of {len(order)} trials, sorted by objective (best left)")
    for j, d in enumerate(v.domains):
        fig.add_bar(x=xs, y=v.W[order, j], name=d,
                    customdata=np.stack([v.value[order]], axis=1),
                    hovertemplate=f"{d}: %{{y:.3f}}<br>objective %{{customdata[0]:.4f}}<extra>%{{x}}</extra>")
    fig.update_layout(barmode="stack", xaxis=dict(type="category", title="trial"), yaxis=dict(title="weight",
                                                                                               range=[0, 1]))
    return fig


def fig_objective(v: StudyView) -> go.Figure | None:
    """Objective per trial, colored by the searcher's phase, with the best-so-far line; FAILED
    trials as red crosses at the bottom (their reason on hover)."""
    if not len(v.trial_ids):
        return None
    fig = _fig(f"Objective per trial ({v.objective}; lower is better)")
    phases = list(dict.fromkeys([p for p in PHASES if p in v.phase] + v.phase))
    for p in phases:
        idx = [i for i in range(len(v.phase)) if v.phase[i] == p and v.ok[i]]
        if idx:
            fig.add_scatter(x=v.trial_ids[idx], y=v.value[idx], mode="markers", name=f"phase: {p}",
                            marker=dict(size=9, color=PHASE_COLORS.get(p, "#17becf")),
                            text=[v.trial_name(i) for i in idx], hovertemplate="%{text}: %{y:.4f}<extra></extra>")
    bsf = best_so_far(v)
    if np.isfinite(bsf).any():
        fig.add_scatter(x=v.trial_ids, y=bsf, mode="lines", name="best so far", line=dict(shape="hv", color="black"))
    failed = [i for i, s in enumerate(v.state) if s == "FAILED"]
    if failed:
        y0 = np.nanmin(v.value) if v.ok.any() else 0.0
        fig.add_scatter(x=v.trial_ids[failed], y=[y0] * len(failed), mode="markers", name="FAILED",
                        marker=dict(symbol="x", size=10, color="#d62728"), text=[v.errors[i][:200] for i in failed],
                        hovertemplate="trial %{x} FAILED: %{text}<extra></extra>")
    fig.update_layout(xaxis=dict(title="trial id"), yaxis=dict(title="objective"))
    return fig


def fig_surrogate(cv: CVResult | None) -> go.Figure | None:
    """Held-out predictions of the study's surrogate against measured objectives, with Spearman's rho."""
    if cv is None:
        return None
    rho = "n/a" if math.isnan(cv.spearman) else f"{cv.spearman:.3f}"
    fig = _fig(f"Surrogate {cv.surrogate} predicted vs actual ({cv.method} CV): Spearman ρ = {rho}")
    lo, hi = float(min(cv.actual.min(), cv.predicted.min())), float(max(cv.actual.max(), cv.predicted.max()))
    fig.add_scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="y = x", line=dict(dash="dash", color="gray"))
    fig.add_scatter(x=cv.actual, y=cv.predicted, mode="markers", name="trials", marker=dict(size=9),
                    text=[f"#{i}" for i in cv.trial_ids], hovertemplate="%{text}: actual %{x:.4f}, "
                                                                       "predicted %{y:.4f}<extra></extra>")
    fig.update_layout(xaxis=dict(title="actual objective"), yaxis=dict(title="predicted (held out)"))
    return fig


def fig_losses(comp) -> go.Figure | None:
    """Grouped bars: per-domain validation loss of the top trials vs the baselines."""
    if comp is None:
        return None
    names, cols, L = comp
    fig = _fig("Per-domain validation loss: top trials vs baselines")
    for r, name in enumerate(names):
        fig.add_bar(x=cols, y=L[r], name=name, hovertemplate="%{x}: %{y:.4f}<extra>" + name + "</extra>")
    lo, hi = (float(np.nanmin(L)), float(np.nanmax(L))) if np.isfinite(L).any() else (0.0, 1.0)
    fig.update_layout(barmode="group", yaxis=dict(title="validation loss", range=[lo * 0.97, hi * 1.02]),
                      xaxis=dict(title="domain"))
    return fig


def fig_mixture(v: StudyView, comp) -> go.Figure:
    """Grouped bars per domain: the recommended mixture next to uniform, natural and the best trial."""
    names, M = comp
    fig = _fig("Recommended mixture vs uniform and natural")
    for r, name in enumerate(names):
        fig.add_bar(x=v.domains, y=M[r], name=name, text=[f"{w:.3f}" for w in M[r]], textposition="outside",
                    hovertemplate="%{x}: %{y:.4f}<extra>" + name + "</extra>")
    fig.update_layout(barmode="group", yaxis=dict(title="weight", range=[0, min(1.1, float(M.max()) * 1.2 + 0.05)]),
                      xaxis=dict(title="domain"))
    return fig


def fig_scaling(pts) -> go.Figure | None:
    """Objective against training compute 6·N·D, one series per mixture trained at >= 2 scales."""
    if pts is None:
        return None
    fig = _fig("Loss vs scale (mixtures trained at several scales; fits with intervals: `mixopt fit`)")
    C = 6 * pts["N"] * pts["D"]
    for g, label in pts["labels"].items():
        m = pts["g"] == g
        o = np.argsort(C[m])
        fig.add_scatter(x=C[m][o], y=pts["L"][m][o], mode="lines+markers", name=str(label))
    fig.update_layout(xaxis=dict(type="log", title="compute 6·N·D (FLOPs)"), yaxis=dict(title="objective"))
    return fig


def fig_routing(r) -> go.Figure | None:
    """MoE routing balance (normalized load entropy, load CV) of each trial against its objective."""
    if r is None:
        return None
    fig = _fig("MoE routing statistics vs objective")
    for k, sym in (("routing_entropy", "circle"), ("routing_load_cv", "diamond"), ("routing_dropped_frac", "x")):
        if np.isfinite(r[k]).any():
            fig.add_scatter(x=r[k], y=r["value"], mode="markers", name=k, marker=dict(symbol=sym, size=9),
                            text=[f"#{i}" for i in r["ids"]], hovertemplate="%{text}: %{x:.3f} -> %{y:.4f}<extra></extra>")
    fig.update_layout(xaxis=dict(title="statistic (entropy: 1 = balanced; CV: 0 = balanced)"),
                      yaxis=dict(title="objective"))
    return fig


def fig_merged(m) -> go.Figure | None:
    """Merged scores (model-merging proxies): their distribution, and merged vs trained where both exist."""
    if m is None:
        return None
    fig = _fig(f"{len(m['merged'])} mixtures scored by merging experts (a fidelity of its own, never a trial)")
    fig.add_histogram(x=m["merged"], name="merged objective", opacity=0.6, nbinsx=40)
    if m["pairs"]:
        mg, tr, ids = zip(*m["pairs"])
        fig.add_scatter(x=mg, y=tr, mode="markers", name="trained for real", yaxis="y2", marker=dict(size=9),
                        text=[f"#{i}" for i in ids], hovertemplate="%{text}: merged %{x:.4f}, trained %{y:.4f}"
                        "<extra></extra>")
    fig.update_layout(xaxis=dict(title="merged objective"), yaxis=dict(title="mixtures"),
                      yaxis2=dict(title="trained objective", overlaying="y", side="right"))
    return fig


def fig_online(o) -> go.Figure | None:
    """An online mixer's weights during training (the best online-mixing trial)."""
    if o is None:
        return None
    tid, (steps, W) = next(iter(o["trials"].items()))
    fig = _fig(f"Trial #{tid}: {o['mixer'].get(tid, 'online')} mixture weights during training")
    for j, d in enumerate(o["domains"]):
        fig.add_scatter(x=steps, y=W[:, j], mode="lines", name=d, line=dict(shape="hv"),
                        hovertemplate=f"{d}: %{{y:.3f}} from step %{{x}}<extra></extra>")
    fig.update_layout(xaxis=dict(title="training step"), yaxis=dict(title="weight", range=[0, 1]))
    return fig
