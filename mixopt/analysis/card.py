"""The run card: what a recommendation carries for the big run (``target:`` in the study config).

For the target (N = ``target.params`` non-embedding parameters, an MoE's total; D = ``target.tokens``,
else ``space.target_tokens``; context ``target.seq_len``) beside the recommended mixture:

* the predicted objective with a 90 % interval (the searcher's prediction +- 1.645 std, at the
  proxies' scale: what the study measured);
* learning rate and batch size (tokens per step, sequences of ``seq_len``) from the Step Law's
  published constants (:func:`mixopt.analysis.hparams.published_hparams`, arXiv 2503.04715), with its
  90 % intervals and whether (N, D) lies in its range; for an MoE target also the MoE law of
  arXiv 2507.17702 (Eq. 3) as a cross-check;
* each domain's epochs ``w_i D / U_i`` and the mixture's repetition penalty under the data-constrained
  law (:func:`mixopt.analysis.repetition.repetition_report`, arXiv 2305.16264), warning past 4 epochs;
  U_i = ``target.unique_tokens`` where given, else the proxy corpus's train tokens (in its tokenizer's
  units: a floor on what the target's corpus holds when the proxy corpus is a sample of it);
* for an MoE target (``target.moe``), its efficiency leverage and dense-equivalent compute
  (:func:`mixopt.analysis.scaling_laws.moe_leverage`, arXiv 2507.17702).

``sources`` in the card says where each number came from. :func:`make_card` is what ``mixopt run``
passes to :func:`mixopt.run.outputs.finish`; :func:`card_of_study` rebuilds it from a stored study
(``mixopt recommend``, the dashboard).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from mixopt.analysis.hparams import Hparams, moe_hparams, published_hparams
from mixopt.analysis.repetition import WARN_EPOCHS, repetition_report
from mixopt.analysis.scaling_laws import moe_leverage
from mixopt.core.errors import UserError
from mixopt.core.loader import from_dict
from mixopt.run.config import StudyConfig
from mixopt.run.outputs import Card
from mixopt.run.target import TargetConfig
from mixopt.search import Recommendation
from mixopt.study import Study

Z90 = 1.6448536269514722


def _predicted(rec: Recommendation, searcher: str) -> dict[str, Any]:
    p, sd = rec.predicted, rec.std
    ok = p is not None and math.isfinite(p)
    iv = [p - Z90 * sd, p + Z90 * sd] if ok and sd is not None and math.isfinite(sd) else None
    return {"objective": float(p) if ok else None, "std": None if sd is None else float(sd), "interval_90": iv,
            "source": f"searcher {searcher}'s prediction at the proxies' scale"
                      + (" (interval: +- 1.645 std)" if iv else " (no std: no interval)")}


def _hparams_doc(h: Hparams) -> dict[str, Any]:
    return {"lr": h.lr, "lr_interval_90": list(h.lr_interval), "batch_tokens": h.batch_tokens,
            "batch_sequences": h.batch_sequences, "seq_len": h.seq_len,
            "batch_tokens_interval_90": list(h.batch_tokens_interval), "in_range": h.in_range,
            "note": h.message, "source": h.source}


def build_card(target: TargetConfig, space_tokens: float | None, study: Study, rec: Recommendation,
               train_tokens: Mapping[str, float] | None) -> Card | None:
    """The card for ``target`` (None without ``target.params`` or a token budget); see the module doc."""
    tokens = target.tokens or space_tokens
    if not target.params or not tokens:
        return None
    N, D, T = float(target.params), float(tokens), int(target.seq_len)
    mixture = {d: float(w) for d, w in rec.mixture.items()}
    sources = {"params": "target.params", "tokens": "target.tokens" if target.tokens else "space.target_tokens",
               "seq_len": "target.seq_len"}
    h = published_hparams(N, D, seq_len=T)
    doc: dict[str, Any] = {"target": {"params": N, "tokens": D, "seq_len": T, "moe": dict(target.moe) or None},
                           "mixture": mixture, "predicted": _predicted(rec, study.searcher_name),
                           "hparams": _hparams_doc(h), "repetition": None, "moe": None, "sources": sources,
                           "notes": []}
    unique = {d: float(u) for d, u in (train_tokens or {}).items()} | {d: float(u) for d, u in
                                                                       target.unique_tokens.items()}
    given = [d for d in mixture if d in target.unique_tokens]
    sources["unique_tokens"] = ("target.unique_tokens" if len(given) == len(mixture) else
                                "the proxy corpus's train tokens" + (f" (target.unique_tokens for {', '.join(given)})"
                                                                     if given else ""))
    try:
        doc["repetition"] = repetition_report(mixture, unique, D, N).to_dict()
    except UserError as e:  # a study stored without its corpus counts: say so, card the rest
        doc["notes"].append(f"repetition: {e}; give target.unique_tokens")
    if target.moe:
        m = target.moe
        ratio = (m["top_k"] + m.get("shared", 0.0)) / (m["experts"] + m.get("shared", 0.0))
        try:
            doc["moe"] = moe_leverage(float(m["active"]), ratio, float(m["granularity"]), D).to_dict()
            doc["moe_hparams"] = _hparams_doc(moe_hparams(float(m["active"]), D, seq_len=T))
        except UserError as e:
            doc["notes"].append(f"moe: {e}")
    return Card(doc, card_lines(doc), card_metrics(doc), card_tags(doc))


def card_lines(doc: dict[str, Any]) -> list[str]:
    """The card as text, under the summary table."""
    t, h, p = doc["target"], doc["hparams"], doc["predicted"]
    src = doc["sources"]
    lines = [f"\nRun card: target N = {t['params']:.4g} non-embedding params ({src['params']}), D = {t['tokens']:.4g} "
             f"tokens ({src['tokens']}), context {t['seq_len']}" + (" (MoE)" if t["moe"] else "")]
    if p["objective"] is not None:
        iv = f" (90% {p['interval_90'][0]:.4f} - {p['interval_90'][1]:.4f})" if p["interval_90"] else ""
        lines.append(f"  predicted objective {p['objective']:.4f}{iv}: {p['source']}")
    lines.append(f"  learning rate  {h['lr']:.4g} (90% {h['lr_interval_90'][0]:.3g} - {h['lr_interval_90'][1]:.3g}); "
                 f"batch {h['batch_tokens']:,.0f} tokens = {h['batch_sequences']} sequences of {h['seq_len']} "
                 "(Step Law, arXiv 2503.04715" + (f"; {h['note']})" if h["note"] else ")"))
    if doc.get("moe_hparams"):
        mh = doc["moe_hparams"]
        lines.append(f"  MoE law cross-check (arXiv 2507.17702 Eq. 3): lr {mh['lr']:.4g}, batch {mh['batch_tokens']:,.0f} "
                     f"tokens = {mh['batch_sequences']} sequences")
    r = doc["repetition"]
    if r is not None:
        ep = ", ".join(f"{d} {v['epochs']:.3g}" + ("!" if v["epochs"] > WARN_EPOCHS else "")
                       for d, v in sorted(r["domains"].items(), key=lambda kv: -kv[1]["epochs"]) if v["weight"] > 0)
        lines.append(f"  epochs at the target (unique tokens: {src['unique_tokens']}): {ep}")
        lines.append(f"  repetition: effective data {r['effective_fraction']:.1%} of D, loss penalty {r['penalty']:+.4f} "
                     "nats (data-constrained law, arXiv 2305.16264; space.max_epochs stays the hard cap)")
        lines += [f"  WARNING {w}" for w in r["warnings"]]
    m = doc["moe"]
    if m is not None:
        lines.append(f"  MoE: activation ratio {m['activation_ratio']:.3g}, granularity {m['granularity']:.3g}: efficiency "
                     f"leverage {m['el']:.3g} (arXiv 2507.17702), worth a dense model of {m['dense_active_params']:.3g} "
                     f"params, {m['dense_compute']:.3g} FLOPs (vs {m['compute']:.3g})"
                     + (f"; {m['message']}" if m["message"] else ""))
    lines += [f"  note: {n}" for n in doc["notes"]]
    return lines


def card_metrics(doc: dict[str, Any]) -> dict[str, float]:
    """Numbers for the study's MLflow run (``card.*``)."""
    h, p, r, m = doc["hparams"], doc["predicted"], doc["repetition"], doc["moe"]
    out = {"card.target_params": doc["target"]["params"], "card.target_tokens": doc["target"]["tokens"],
           "card.lr": h["lr"], "card.batch_tokens": h["batch_tokens"], "card.batch_sequences": h["batch_sequences"]}
    if p["interval_90"]:
        out["card.predicted_lo"], out["card.predicted_hi"] = p["interval_90"]
    if r is not None:
        out.update({"card.repetition_penalty": r["penalty"], "card.effective_fraction": r["effective_fraction"],
                    "card.max_epochs": r["max_epochs"]})
        out.update({f"card.epochs.{d}": v["epochs"] for d, v in r["domains"].items()})
    if m is not None:
        out.update({"card.moe_el": m["el"], "card.dense_compute": m["dense_compute"]})
    return out


def card_tags(doc: dict[str, Any]) -> dict[str, str]:
    """Tags for the study's MLflow run: the hyperparameters and the repetition warnings as text."""
    h, r = doc["hparams"], doc["repetition"]
    tags = {"mixopt.card.hparams": f"lr {h['lr']:.4g}, batch {h['batch_tokens']:,.0f} tokens = "
                                   f"{h['batch_sequences']} x {h['seq_len']}"}
    if r is not None and r["warnings"]:
        tags["mixopt.card.warnings"] = "; ".join(r["warnings"])
    return tags


def make_card(cfg: StudyConfig, study: Study, rec: Recommendation) -> Card | None:
    """The card of a finished ``mixopt run`` (what the command line passes to ``finish``)."""
    return build_card(cfg.target, cfg.space.target_tokens, study, rec, study.meta.extra.get("train_tokens"))


def card_of_study(study: Study, rec: Recommendation, cfg: StudyConfig | None = None) -> Card | None:
    """The card of a stored study: its config's ``target`` (``cfg``'s if given, else the stored one's)."""
    if cfg is not None:
        return make_card(cfg, study, rec)
    stored = study.meta.extra.get("config") or {}
    try:
        target = from_dict(TargetConfig, stored.get("target") or {}, "target")
    except UserError:
        return None
    space_tokens = (stored.get("space") or {}).get("target_tokens")
    return build_card(target, space_tokens, study, rec, study.meta.extra.get("train_tokens"))


__all__ = ["build_card", "card_lines", "card_metrics", "card_of_study", "card_tags", "make_card"]
