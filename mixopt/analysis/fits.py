"""``mixopt fit``: scaling-law fits read from a study's runs in MLflow and logged back to it.

Reads trials through the study API (never by parsing run names), groups COMPLETE trials by
mixture, fits (1) loss vs scale per mixture, (2) the mixing law across scale, (3) the MoE efficiency
leverage (:mod:`mixopt.analysis.scaling_laws`) and (4) the lr / batch-size laws
(:mod:`mixopt.analysis.hparams`), prints a table, and logs each fit as an MLflow run of its own
(role ``fit``) with parameters, held-out goodness of fit, bootstrap intervals and plots.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mixopt.analysis.hparams import DEFAULT_OPTIMUM, DEFAULT_TOLERANCE, STEP_LAW_SEQ_LEN, fit_hparams, table_from_trials
from mixopt.analysis.scaling_laws import (
    PUBLISHED_EL,
    bootstrap_predictions,
    efficiency_leverage,
    el_range_message,
    fit_dense_curve,
    fit_el,
    fit_law_across_scale,
    fit_loss_scale,
    forward_flops_per_token,
    holdout_error,
    on_bound,
)
from mixopt.core.errors import UserError
from mixopt.search.dirichlet import sample
from mixopt.search.mixing_law import minimize_law
from mixopt.study.study import Study


def params_of(spec) -> float:
    """N: non-embedding params that compute per token (active params for MoE)."""
    active = getattr(spec, "active_non_embedding_params", None)
    return float(active() if callable(active) else spec.non_embedding_params())


def collect(study: Study) -> dict[str, Any]:
    """COMPLETE trials with a spec -> group index / N / D / L arrays and the group mixtures."""
    keys: dict[tuple, int] = {}
    labels, mixtures, rows = [], [], []
    for t in study.trials:
        if not t.ok or t.spec is None:
            continue
        key = tuple(round(w, 9) for w in t.mixture.values())
        if key not in keys:
            keys[key] = len(keys)
            labels.append(t.label or f"m{len(keys) - 1}")
            mixtures.append(t.mixture.as_array(study.space.domains))
        rows.append((keys[key], params_of(t.spec), t.tokens_seen, t.value,
                     t.spec))
    if not rows:
        raise UserError(f"fit: study {study.name!r} has no COMPLETE trials with a proxy spec")
    g, N, D, L, specs = zip(*rows)
    return {"g": np.array(g), "N": np.array(N), "D": np.array(D), "L": np.array(L), "specs": list(specs),
            "labels": labels, "mixtures": np.array(mixtures)}


def multi_scale_groups(data: dict[str, Any]) -> np.ndarray:
    """Group indices with runs at >= 2 distinct (N, D) scales."""
    ok = [i for i in range(len(data["labels"]))
          if len({(n, d) for n, d in zip(data["N"][data["g"] == i], data["D"][data["g"] == i])}) >= 2]
    return np.array(ok, dtype=int)


def fit_loss_vs_scale(study: Study, target: tuple[float, float], reps: int, out: Path,
                      storage=None, seed: int = 0) -> dict[str, Any]:
    data = collect(study)
    keep = multi_scale_groups(data)
    if len(keep) == 0:
        raise UserError(f"fit: no mixture of study {study.name!r} was trained at 2 or more scales; run a sweep "
                        "across a ladder first (config `ladder:` and `sweep:`)")
    remap = {int(o): i for i, o in enumerate(keep)}
    m = np.isin(data["g"], keep)
    g = np.array([remap[int(x)] for x in data["g"][m]])
    N, D, L = data["N"][m], data["D"][m], data["L"][m]
    labels = [data["labels"][i] for i in keep]
    fit = fit_loss_scale(g, N, D, L, len(keep), labels, seed=seed)
    err = holdout_error(g, N, D, L, len(keep), seed=seed) if len(L) >= 3 * len(keep) + 2 + len(keep) else \
        np.full(len(keep), np.nan)
    pred = fit.predict(np.arange(len(keep)), np.full(len(keep), target[0]), np.full(len(keep), target[1]))
    boots = bootstrap_predictions(fit, g, N, D, L, target, reps=reps, seed=seed)
    lo, hi = np.nanpercentile(boots, 5, axis=0), np.nanpercentile(boots, 95, axis=0)
    result = {"kind": "loss_scale", "alpha": fit.alpha, "beta": fit.beta, "alpha_on_bound": on_bound(fit.alpha),
              "beta_on_bound": on_bound(fit.beta), "target_params": target[0],
              "target_tokens": target[1],
              "heldout_rel_error_mean": float(np.mean(err[np.isfinite(err)])) if np.isfinite(err).any() else None,
              "heldout_rel_error_max": float(np.max(err[np.isfinite(err)])) if np.isfinite(err).any() else None,
              "mixtures": [{"label": lab, "E": float(fit.E[i]), "A": float(fit.A[i]), "B": float(fit.B[i]),
                            "heldout_rel_error": float(err[i]) if np.isfinite(err[i]) else None,
                            "pred_target": float(pred[i]),
                            "pred_target_90ci": [float(lo[i]), float(hi[i])]} for i, lab in enumerate(labels)]}
    files = [_write_json(out / "fit_loss_scale.json", result), _plot_loss_scale(fit, g, N, D, L, target, out)]
    if storage is not None:
        metrics = {"alpha": fit.alpha, "beta": fit.beta, "heldout_rel_error_mean": result["heldout_rel_error_mean"],
                   "heldout_rel_error_max": result["heldout_rel_error_max"]}
        for r in result["mixtures"]:
            metrics[f"pred_target.{r['label']}"] = r["pred_target"]
            metrics[f"pred_target_lo.{r['label']}"], metrics[f"pred_target_hi.{r['label']}"] = r["pred_target_90ci"]
        storage.log_run(study.name, "fit-loss-vs-scale", "fit",
                        {"form": "E + A/N^alpha + B/D^beta", "target_params": target[0], "target_tokens": target[1],
                         "bootstrap_reps": reps, "mixtures": len(keep), "runs": len(L)},
                        metrics, {"mixopt.fit": "loss_scale"}, files)
    return result


def fit_mixing_law_across_scale(study: Study, target: tuple[float, float], out: Path, storage=None,
                                seed: int = 0) -> dict[str, Any]:

    data = collect(study)
    rungs: dict[tuple[float, float], list[int]] = {}
    for i, (n, d) in enumerate(zip(data["N"], data["D"])):
        rungs.setdefault((n, d), []).append(i)
    per = [(6 * n * d, data["mixtures"][data["g"][idx]], data["L"][idx]) for (n, d), idx in sorted(rungs.items())]
    law = fit_law_across_scale(per, seed=seed)
    at = law.at(6 * target[0] * target[1])
    starts = sample(study.space, 16, np.random.default_rng(seed))
    best = minimize_law(at, study.space, starts, kl_weight=0.0)[0]
    result = {"kind": "mixing_law", "form": "c + k*exp(t.p)", "domains": list(study.space.domains),
              "rungs": [{"compute": float(c), "c": float(cc), "k": float(np.exp(lk)), "t": t.tolist()}
                        for c, cc, lk, t in zip(law.computes, law.c, law.logk, law.t)],
              "target_compute": 6 * target[0] * target[1],
              "best_mixture_at_target": dict(zip(study.space.domains, best.tolist())),
              "predicted_at_target": float(at.predict(best[None])[0])}
    files = [_write_json(out / "fit_mixing_law.json", result)]
    if storage is not None:
        metrics = {f"best.w.{d}": float(w) for d, w in result["best_mixture_at_target"].items()}
        metrics["predicted_at_target"] = result["predicted_at_target"]
        storage.log_run(study.name, "fit-mixing-law-across-scale", "fit",
                        {"form": result["form"], "rungs": len(per), "target_compute": result["target_compute"]},
                        metrics, {"mixopt.fit": "mixing_law"}, files)
    return result


def _moe_rows(data: dict[str, Any]) -> list[tuple]:
    """(A, G, C, EL, label, D) per MoE run, EL measured against its mixture's dense loss-vs-compute curve;
    C = M D (forward non-embedding FLOPs per token x tokens, arXiv 2507.17702 Eq. 2), G the paper's."""
    rows = []
    C = np.array([forward_flops_per_token(sp) for sp in data["specs"]]) * data["D"]
    for i, label in enumerate(data["labels"]):
        idx = np.flatnonzero(data["g"] == i)
        dense = [j for j in idx if data["specs"][j].arch == "dense"]
        moe = [j for j in idx if data["specs"][j].arch == "moe"]
        if len(dense) < 3 or not moe:
            continue
        curve = fit_dense_curve(C[dense], data["L"][dense])
        for j, e in zip(moe, efficiency_leverage(curve, C[moe], data["L"][moe])):
            sp = data["specs"][j]
            rows.append((sp.activation_ratio, sp.granularity / 2.0, float(C[j]), float(e), label, float(data["D"][j])))
    return rows


def _heldout_el(A, G, C, EL, D) -> dict[str, Any] | None:
    """Fit on the MoE runs below the largest compute level (the largest token budget; the largest
    compute when every MoE run has one budget) and predict the runs at it (None: too few runs)."""
    ok = np.isfinite(EL) & (EL > 0)
    key = D if len(np.unique(D[ok])) >= 2 else C
    if len(np.unique(key[ok])) < 2:
        return None
    top = ok & np.isclose(key, key[ok].max(), rtol=1e-9)
    train = ok & ~top
    try:
        law = fit_el(A[train], G[train], C[train], EL[train])
    except UserError:
        return None
    pred = law.predict(A[top], G[top], C[top])
    err = np.abs(pred - EL[top]) / EL[top]
    return {"tokens": float(D[top].max()), "compute": [float(C[top].min()), float(C[top].max())],
            "train_runs": int(train.sum()), "fixed": list(law.fixed), "rel_error_mean": float(err.mean()),
            "runs": [{"A": float(a), "G": float(g), "C": float(c), "EL": float(e), "EL_pred": float(p)}
                     for a, g, c, e, p in zip(A[top], G[top], C[top], EL[top], pred)]}


def fit_moe_leverage(study: Study, out: Path, storage=None) -> dict[str, Any]:
    """Efficiency leverage of each MoE run against the dense loss-vs-compute curve of the same
    mixture, then the law ``EL(A, G, C)`` of arXiv 2507.17702 fitted across the MoE runs
    (:func:`mixopt.analysis.scaling_laws.fit_el`; what the ladder cannot identify stays at the
    paper's Table 2 values), checked by predicting the largest compute level from the others, and
    set beside the paper's own law."""

    rows = _moe_rows(collect(study))
    if not rows:
        raise UserError(f"fit moe_el: study {study.name!r} has no mixture trained at >= 3 dense scales and >= 1 MoE "
                        "scale; put dense and MoE rungs on the ladder")
    A, G, C, EL, labels, D = (np.array(v) for v in zip(*rows))
    law = fit_el(A, G, C, EL)
    pred, published = law.predict(A, G, C), PUBLISHED_EL.predict(A, G, C)
    ok = np.isfinite(EL)
    result = {"kind": "moe_el", "form": "EL = Ahat^(a + d*log10(C) + gamma*log2(G)^2 + beta*log2(G)), C = M*D "
              "(arXiv 2507.17702 Eq. 13)", "a": law.a, "d": law.d, "beta": law.beta, "gamma": law.gamma,
              "fixed": list(law.fixed), "rel_error_mean": float(np.mean(np.abs(pred[ok] - EL[ok]) / EL[ok])),
              "heldout": _heldout_el(A, G, C, EL, D),
              "published": {"a": PUBLISHED_EL.a, "d": PUBLISHED_EL.d, "beta": PUBLISHED_EL.beta,
                            "gamma": PUBLISHED_EL.gamma,
                            "rel_error_mean": float(np.mean(np.abs(published[ok] - EL[ok]) / EL[ok]))},
              "runs": [{"label": str(lab), "A": float(a), "G": float(g), "C": float(c), "EL": float(e),
                        "EL_fit": float(p), "EL_published": float(q), "note": el_range_message(a, g, c)}
                       for a, g, c, e, lab, p, q in zip(A, G, C, EL, labels, pred, published)]}
    files = [_write_json(out / "fit_moe_el.json", result)]
    if storage is not None:
        metrics = {k: result[k] for k in ("a", "d", "beta", "gamma", "rel_error_mean")}
        if result["heldout"] is not None:
            metrics["heldout_rel_error_mean"] = result["heldout"]["rel_error_mean"]
        storage.log_run(study.name, "fit-moe-efficiency-leverage", "fit",
                        {"form": result["form"], "runs": len(A), "fixed": ",".join(law.fixed) or "none"},
                        metrics, {"mixopt.fit": "moe_el"}, files)
    return result


def _write_json(path: Path, obj: Any) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2))
    return str(path)


def _plot_loss_scale(fit, g, N, D, L, target, out: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    C = 6 * N * D
    for i, lab in enumerate(fit.groups):
        m = g == i
        line = ax.scatter(C[m], L[m], s=18, label=str(lab))
        for d in sorted(set(D[m])):
            ns = np.geomspace(min(N[m].min(), target[0]) * 0.8, max(N[m].max(), target[0]) * 1.2, 40)
            ax.plot(6 * ns * d, fit.predict(np.full(40, i), ns, np.full(40, d)), lw=0.8, color=line.get_facecolor()[0])
        ax.scatter([6 * target[0] * target[1]], fit.predict([i], [target[0]], [target[1]]), marker="*", s=80,
                   color=line.get_facecolor()[0])
    ax.set_xscale("log")
    ax.set_xlabel("training compute 6·N·D (FLOPs)")
    ax.set_ylabel("objective (validation loss)")
    ax.set_title(f"L = E + A/N^{fit.alpha:.2f} + B/D^{fit.beta:.2f}  (★ = target scale)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = out / "fit_loss_scale.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def fit_hparams_of_study(study: Study, target: tuple[float, float], reps: int, out: Path, storage=None,
                         tolerance: float = DEFAULT_TOLERANCE, seq_len: int = STEP_LAW_SEQ_LEN,
                         optimum: str = DEFAULT_OPTIMUM) -> dict[str, Any]:
    """The Step-Law forms fitted to the study's trials (:func:`mixopt.analysis.hparams.fit_hparams`),
    predicted at ``target``; written to ``fit_hparams.json`` and logged as a run of role ``fit``."""
    fit = fit_hparams(table_from_trials(study.trials), tolerance, reps, source=f"study {study.name!r}", optimum=optimum)
    result = {"kind": "hparams", **fit.to_dict(), "predicted": fit.predict(*target, seq_len=seq_len).to_dict()}
    files = [_write_json(out / "fit_hparams.json", result)]
    if storage is not None:
        storage.log_run(study.name, "fit-hparams", "fit",
                        {"form": "lr = c N^a D^b; batch_tokens = c D^g (Step Law)", "tolerance": tolerance,
                         "optimum": optimum, "bootstrap_reps": reps, "fixed": ",".join(fit.fixed) or "none"},
                        {"lr.n_exp": fit.lr.n_exp, "lr.d_exp": fit.lr.d_exp, "batch.d_exp": fit.batch.d_exp,
                         "pred_lr": result["predicted"]["lr"], "pred_batch_tokens": result["predicted"]["batch_tokens"]},
                        {"mixopt.fit": "hparams"}, files)
    return result


def run_fit(study: Study, storage, kinds: list[str], target: tuple[float, float] | None, reps: int,
            out_dir: str, progress: Callable[[str], None] = print, tolerance: float = DEFAULT_TOLERANCE,
            seq_len: int = STEP_LAW_SEQ_LEN, optimum: str = DEFAULT_OPTIMUM) -> dict[str, Any]:
    """Run the requested fits; ``target`` defaults to 4x the largest N and D on the ladder."""
    for kind in kinds:
        if kind not in ("loss_scale", "mixing_law", "moe_el", "hparams"):
            raise UserError(f"fit --kind: {kind!r}; allowed: loss_scale, mixing_law, moe_el, hparams")
    data = collect(study)
    if target is None:
        target = (4 * float(data["N"].max()), 4 * float(data["D"].max()))
    out = Path(out_dir) / study.name / "fits"
    fits = {"loss_scale": lambda: fit_loss_vs_scale(study, target, reps, out, storage),
            "mixing_law": lambda: fit_mixing_law_across_scale(study, target, out, storage),
            "moe_el": lambda: fit_moe_leverage(study, out, storage),
            "hparams": lambda: fit_hparams_of_study(study, target, reps, out, storage, tolerance, seq_len,
                                                    optimum)}
    results: dict[str, Any] = {}
    errors: list[str] = []
    for kind in kinds:
        try:
            results[kind] = fits[kind]()
        except UserError as e:  # one fit lacking data does not cancel the others
            if len(kinds) == 1:
                raise
            errors.append(str(e))
            results[kind] = {"kind": kind, "skipped": str(e)}
            progress(f"skipped {kind}: {e}")
    if errors and len(errors) == len(kinds):
        raise UserError("; ".join(errors))
    return results


__all__ = ["collect", "run_fit"]
