"""A recommendation a user can trust: never predicted worse than a trial already measured.

Model-based searchers (``regmix``, ``mixing_law``, ``bo``, ``mfbo``) recommend the optimum of
their surrogate. When the surrogate's own prediction at that optimum is *worse* than the value
the best finite trial (at the target rung) actually measured, the model is saying "I found
nothing better than what you already ran": :func:`guard` then recommends that trial instead
(``info["source"] = "best_trial"``, ``info["reason"]`` says why, and the model's choice is kept
in ``info["model_mixture"]`` / ``info["model_predicted"]``). With ``fallback=False`` the model's
choice stands and ``info["reason"]`` states the comparison.

Example:
    >>> from mixopt.core.mixture import Mixture, MixtureSpace
    >>> from mixopt.search.base import Observation, Recommendation, SearchContext
    >>> sp = MixtureSpace(("a", "b"), (0, 0), (1, 1))
    >>> ctx = SearchContext(sp, (Observation(0, Mixture({"a": 0.3, "b": 0.7}), "COMPLETE", 1.0),), 0)
    >>> rec = guard(ctx, Recommendation(Mixture({"a": 0.9, "b": 0.1}), 1.2, info={"searcher": "x"}))
    >>> rec.info["source"], rec.predicted
    ('best_trial', 1.0)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mixopt.search.base import Observation, Recommendation, SearchContext


def best_target_trial(ctx: SearchContext, rung: int | None | str = "target") -> Observation | None:
    """The finite COMPLETE trial with the lowest value at ``rung`` ("target": the target rung
    or no rung; an int: that rung); None if there is none."""
    best = None
    for o in ctx.observations:
        if not o.is_finite:
            continue
        if rung == "target":
            if not (o.rung is None or o.rung == ctx.target_rung):
                continue
        elif o.rung != rung:
            continue
        if best is None or float(o.value) < float(best.value):  # type: ignore[arg-type]
            best = o
    return best


def guard(ctx: SearchContext, rec: Recommendation, fallback: bool = True,
          std_at: Callable[[np.ndarray], float | None] | None = None) -> Recommendation:
    """``rec`` unless its prediction is worse than the best measured target trial (see module doc).

    ``std_at(x)`` (optional) gives the model's std at a mixture (k,), reported for the trial.
    Adds ``info["best_trial_value"]`` whenever a finite target trial exists.
    """
    best = best_target_trial(ctx)
    if best is None or rec.predicted is None:
        return rec
    info = dict(rec.info)
    bv, pred = float(best.value), float(rec.predicted)  # type: ignore[arg-type]
    info["best_trial_value"] = bv
    if pred <= bv:
        return Recommendation(rec.mixture, rec.predicted, rec.std, info)
    why = (f"the model predicts {pred:.6g} at its optimum, worse than the best measured trial "
           f"(#{best.trial_id}: {bv:.6g})")
    if not fallback:
        info["reason"] = why + "; recommending the model's optimum anyway (fallback_to_best=false)"
        return Recommendation(rec.mixture, rec.predicted, rec.std, info)
    info.update(source="best_trial", trial_id=best.trial_id, reason=why + "; recommending that trial",
                model_mixture=rec.mixture.to_dict(), model_predicted=pred, model_source=rec.info.get("source"))
    std = None
    if std_at is not None:
        try:
            std = std_at(best.mixture.as_array(ctx.space.domains))
        except Exception:  # noqa: BLE001 - the std is a courtesy; the recommendation stands without it
            std = None
    return Recommendation(best.mixture, bv, std, info)
