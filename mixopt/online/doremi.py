"""DoReMi (Xie et al. 2023, arXiv 2305.10429): domain weights by excess loss over a reference model.

After every training step, with the batch's per-domain mean losses ``l_i`` of the model being
trained (the proxy) and the reference model's ``r_i`` on the same domains:

    lambda_i = max(l_i - r_i, 0)                       (a domain absent from the batch keeps its last)
    alpha'   = softmax(log alpha + eta * lambda)        (exponentiated gradient ascent)
    alpha    = (1 - c) alpha' + c / k                   (smoothing towards uniform)

and the output is the average of alpha over the updates (``average()``), which the paper trains
the large model on. Defaults are the paper's and the official run script's: eta 1, c 1e-3.
The paper clips each token's excess loss before averaging; from per-domain means we clip the
mean (as Aioli's re-implementation does). The paper (and its official trainer) updates alpha from a
batch's losses and then weights that same batch by the new alpha; here a batch is weighted by the
alpha its step was planned with and its losses update alpha for the next step (a one-step lag: the
weights must be known before the forward pass that measures the losses).

``mode="reweight"`` (the paper, default): the proxy samples by the start mixture (the reference
model's mixture) and weights each example's loss by ``alpha / start`` (``StepPlan.loss_weights``);
every domain must have start weight > 0 (one never sampled would never be scored).
``mode="sample"``: the proxy samples by alpha itself (no loss weights: for trainers that can
only set a mixture).

Reference losses: ``reference={domain: loss}`` at construction (e.g. a trained reference
model's per-domain validation losses: its loss on a fresh batch in expectation), or per step in
``observe(step, losses, reference={...})`` (the reference model's losses on the same batch, as
in the paper); a per-step one wins where both are given.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mixopt.core.errors import OnlineMixerError
from mixopt.online.base import OnlineMixer, check_range, plain, vector


@dataclass(frozen=True)
class DoremiOptions:
    """DoReMi's options (the official code's flag in brackets)."""

    eta: float = 1.0  # step size of the exponentiated update [--reweight_eta]
    smoothing: float = 1e-3  # c, mixing towards uniform after each update [--reweight_eps]
    mode: str = "reweight"  # "reweight": sample by start, weight losses by alpha; "sample": sample by alpha
    reference: dict[str, float] | None = None  # the reference model's per-domain losses (every domain)


class DoremiMixer(OnlineMixer):
    """DoReMi as an online mixer; see the module docstring."""

    name = "doremi"
    Options = DoremiOptions

    def _check_options(self) -> None:
        o, w = self.options, self.name
        check_range(math.isfinite(o.eta) and o.eta > 0, f"{w}.eta", o.eta, "a finite number > 0")
        check_range(0.0 <= o.smoothing <= 1.0, f"{w}.smoothing", o.smoothing, "a number in [0, 1]")
        check_range(o.mode in ("reweight", "sample"), f"{w}.mode", o.mode, "one of reweight, sample")
        self._reference = None
        if o.reference is not None:
            vec, mask = self.check_losses(o.reference, f"{w}.reference", full=True)
            self._reference = vec

    def _init_state(self) -> None:
        k = len(self.domains)
        if self.options.mode == "reweight" and np.any(self.start <= 0):
            zero = [d for d, w in zip(self.domains, self.start) if w <= 0]
            raise OnlineMixerError(f"doremi.start: mode 'reweight' samples by the start mixture, which gives 0 to "
                                   f"{', '.join(zero)}: its loss would never be seen; allowed: every domain > 0, "
                                   "or mode: sample")
        self._alpha = self.start.copy()
        self._scores = np.full(k, math.nan)  # last excess loss per domain; NaN: never seen
        self._avg_sum = np.zeros(k)
        sampled = self.start > 0
        self._inv_start = np.where(sampled, 1.0 / np.where(sampled, self.start, 1.0), 0.0)

    def _now(self) -> tuple[str, np.ndarray, np.ndarray | None, np.ndarray, bool, bool, int]:
        if self.options.mode == "sample":
            return "mix", self._alpha, None, self._alpha, False, True, self._step + 1
        lw = self._alpha * self._inv_start  # official: train_domain_weights / sampling_weights, normalized
        s = lw.sum()
        lw = lw / s if s > 0 else self.start.copy()
        return "mix", self.start, lw, self._alpha, False, True, self._step + 1

    def _prepare_train(self, losses: np.ndarray, mask: np.ndarray, reference: Any, where: str) -> dict[str, Any]:
        if not mask.any():
            raise OnlineMixerError(f"{where}: doremi needs the batch's per-domain train losses (one domain at least)")
        ref = np.full(len(self.domains), math.nan) if self._reference is None else self._reference.copy()
        if reference is not None:
            rvec, rmask = self.check_losses(reference, f"{where} reference", full=False)
            ref[rmask] = rvec[rmask]
        lacking = [d for d, m, r in zip(self.domains, mask, ref) if m and math.isnan(r)]
        if lacking:
            raise OnlineMixerError(f"{where}: no reference loss for {', '.join(lacking)}; pass reference= to "
                                   "make_mixer or to observe")
        scores = self._scores.copy()
        scores[mask] = np.maximum(losses[mask] - ref[mask], 0.0)
        unseen = np.isnan(scores)
        if unseen.any():  # never reported yet: as bad as the worst domain seen (the official code starts at log V)
            scores[unseen] = scores[mask].max()
        o, k = self.options, len(self.domains)
        with np.errstate(divide="ignore"):
            logits = np.log(self._alpha) + o.eta * scores
        q = np.exp(logits - logits.max())
        alpha = (1.0 - o.smoothing) * q / q.sum() + o.smoothing / k
        return {"_alpha": alpha, "_scores": scores, "_avg_sum": self._avg_sum + alpha, "_updates": self._updates + 1}

    def average(self) -> dict[str, float]:
        """DoReMi's output: alpha averaged over the updates (the start mixture before any)."""
        if self._updates == 0:
            return self._dict(self._alpha)
        return self._dict(self._avg_sum / self._avg_sum.sum())

    def _state(self) -> dict[str, Any]:
        return {"alpha": plain(self._alpha), "scores": plain(self._scores), "avg_sum": plain(self._avg_sum)}

    def _parse_state(self, d: Mapping[str, Any], where: str) -> dict[str, Any]:
        k = len(self.domains)
        alpha = vector(d.get("alpha"), f"{where}.alpha", k)
        if np.any(alpha < 0) or abs(alpha.sum() - 1.0) > 1e-6:
            raise OnlineMixerError(f"{where}.alpha: must be >= 0 and sum to 1")
        return {"_alpha": alpha, "_scores": vector(d.get("scores"), f"{where}.scores", k, allow_nan=True),
                "_avg_sum": vector(d.get("avg_sum"), f"{where}.avg_sum", k)}
