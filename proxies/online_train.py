"""Online mixing in the batched engine: pack members whose spec names an online mixer (``spec.online``).

Each such member gets its own mixer (:func:`mixopt.online.make_mixer`, started from the trial's
mixture, its study ``"trial-<id>"``) and follows it step by step inside ``run_pack``:

1. before the batch is drawn, the member's plan for this step: when it asks for an evaluation, every
   member that asks is evaluated at once (one pack forward per domain of the mixers, on the first of the
   trials' own fixed validation sequences; each member gets the mean over its own
   ``online_options.eval_sequences``, default 8) and told; then its sampler draws by the plan's mixture;
2. the step trains with the plan's per-domain loss weights (DoReMi's reweighted objective) as
   per-token weights, and every token's loss is kept when a plan asks for the batch's losses;
3. after the step, each mixer gets the batch's per-domain mean losses (or ``{}``) and completes the step.

The trajectory (the method's own weights, ``domain_weights``, at each step they change) and the cost
(evaluations, LearnParams steps, the pack's wall seconds spent in the member's mixer and evaluations,
shared work counted in full for each member, so that ``online_seconds / seconds`` is its share of the
run) go into the member's result: history entries ``{"step", "weights"}`` and metrics ``online_*``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mixopt.core.errors import ConfigError, OnlineMixerError
from mixopt.core.spec import ENGINE_ONLINE_KEYS, ProxySpec
from mixopt.core.worker import TrialRequest
from mixopt.online import make_mixer
from mixopt.proxies.train import MixtureSampler, eval_batches


class OnlineMembers:
    """The online-mixing members of one pack (slots of ``live``), driven around each training step.

    A member whose mixer cannot be built (bad options; DoReMi without a reference), whose losses turn
    non-finite, or whose mixer refuses a report leaves the pack alone: :meth:`take_failures` hands it to
    ``run_pack``, which fails that trial and masks it; the other members go on.
    """

    def __init__(self, reqs: Sequence[TrialRequest], specs: Sequence[ProxySpec], samplers: dict[int, MixtureSampler],
                 live: Sequence[int], corpus, B: int, T: int) -> None:
        self.live, self.samplers, self.B, self.T = list(live), samplers, B, T
        self.mixers: dict[int, Any] = {}  # slot -> mixer
        self.trajectory: dict[int, list[dict[str, Any]]] = {}
        self.seconds: dict[int, float] = {}  # slot -> the pack's wall time in its mixer's bookkeeping
        self.eval_seconds: dict[int, float] = {}
        self.failed: dict[int, tuple[str, str]] = {}  # slot -> (kind, reason), not yet handed to run_pack
        n_seq, n_eval = 1, specs[self.live[0]].eval_batches if self.live else 1
        self.n_seq: dict[int, int] = {}  # slot -> validation sequences per domain its evaluations score
        for j, i in enumerate(self.live):
            spec = specs[i]
            if not spec.online:
                continue
            mixture = reqs[i].mixture
            opts = {k: v for k, v in spec.online_config().items() if k not in ENGINE_ONLINE_KEYS}
            try:
                self.n_seq[j] = spec.online_eval_sequences()
                n_seq = max(n_seq, self.n_seq[j])
                if spec.online == "doremi" and not isinstance(opts.get("reference"), dict):
                    raise OnlineMixerError("doremi needs online_options.reference, the reference model's per-domain "
                                           "losses")
                self.mixers[j] = make_mixer(spec.online, list(mixture), start=mixture.to_dict(),
                                            study=f"trial-{reqs[i].trial_id}", **opts)
            except (OnlineMixerError, ConfigError, TypeError) as e:
                self.failed[j] = ("error", f"online mixer {spec.online!r}: {e}")
                continue
            self.trajectory[j], self.seconds[j], self.eval_seconds[j] = [], 0.0, 0.0
        domains = sorted({d for m in self.mixers.values() for d in m.domains})
        # the pack's members share one forward: the most sequences any of them asks for (checked against the
        # trials' eval_batches * B), the first of the trials' fixed ones (n_seq, T + 1); each member's losses are
        # the means over its own first n_seq[j]
        nb = min(n_eval, -(-n_seq // B))
        self.val = {d: eval_batches(corpus, d, nb, B, T).reshape(nb * B, T + 1)[:n_seq] for d in domains}
        self.plans: dict[int, Any] = {}
        self.weighted: set[int] = set()

    def __bool__(self) -> bool:
        return bool(self.mixers) or bool(self.failed)

    def _fail(self, j: int, kind: str, reason: str) -> None:
        self.failed[j] = (kind, reason)
        self.mixers.pop(j, None)
        self.plans.pop(j, None)

    def take_failures(self) -> list[tuple[int, str, str]]:
        """Members that left since the last call: (slot, kind, reason)."""
        out = [(j, k, r) for j, (k, r) in self.failed.items()]
        self.failed = {}
        return out

    def _observe(self, j: int, step: int, losses: dict[str, float], kind: str) -> None:
        if not all(math.isfinite(v) for v in losses.values()):
            self._fail(j, "diverged", f"diverged at step {step}: non-finite {kind} losses {losses}")
            return
        try:
            self.mixers[j].observe(step, losses, kind=kind)
        except OnlineMixerError as e:
            self._fail(j, "error", f"online mixer at step {step}: {e}")

    def before_step(self, step: int, trainer, dead: set[int]) -> None:
        """Plans for this step (evaluations first where asked); samplers set to their plans' mixtures."""
        self.plans = {j: m.plan() for j, m in self.mixers.items() if j not in dead}
        due = [j for j, p in self.plans.items() if p.evaluate]
        if due and trainer.device.type == "cuda":
            torch.cuda.synchronize(trainer.device)  # queued training work is not the evaluation's time
        t0 = time.perf_counter()
        spent = 0.0  # in the evaluation: charged to eval_seconds, not again to seconds
        if due:
            L = trainer.evaluate_sequences(self.val)  # (K, D, n): one pack forward serves every member asking
            spent = time.perf_counter() - t0
            names = list(self.val)
            for j in due:
                self.eval_seconds[j] += spent  # in full: the share of the pack's wall time this member waited
                mean = L[j, :, :self.n_seq[j]].mean(-1)
                self._observe(j, step, {d: float(mean[names.index(d)]) for d in self.mixers[j].domains}, "eval")
                if j in self.mixers:
                    self.plans[j] = self.mixers[j].plan()
        for j, p in self.plans.items():
            self.samplers[self.live[j]].set_mixture(p.mixture)
            last = self.trajectory[j][-1]["weights"] if self.trajectory[j] else None
            if p.domain_weights != last:
                self.trajectory[j].append({"step": step, "weights": dict(p.domain_weights)})
        self._charge(time.perf_counter() - t0 - spent)

    def _charge(self, seconds: float) -> None:
        """Each member is charged the pack's whole wall time in online work (not a 1/K share): its
        ``online_seconds / seconds`` is then the share of the run's wall time that work took."""
        for j in self.plans:
            self.seconds[j] += seconds

    def loss_weights(self, K: int, device: torch.device) -> torch.Tensor | None:
        """(K, B, T) per-token loss weights from the plans that set them (1 elsewhere), or None."""
        self.weighted = {j for j, p in self.plans.items() if p.loss_weights}
        if not self.weighted:
            return None
        w = torch.ones(K, self.B, self.T)
        for j in self.weighted:
            s, lw = self.samplers[self.live[j]], self.plans[j].loss_weights
            w[j] = torch.from_numpy(np.array([lw.get(s.domains[r], 1.0) for r in s.rows], dtype=np.float32))[:, None]
        return w.to(device)

    def wants_token_loss(self) -> bool:
        return any(p.report for p in self.plans.values()) or bool(self.weighted)

    def after_step(self, step: int, token_loss: torch.Tensor | None, trainer) -> None:
        """Each mixer completes the step: the batch's per-domain mean losses where asked, else ``{}``. A member
        trained on a reweighted objective gets its plain mean loss recorded as the step's training loss."""
        if token_loss is not None and trainer.device.type == "cuda":
            torch.cuda.synchronize(trainer.device)  # the step's own work is not the mixers' time
        t0 = time.perf_counter()
        per_row = token_loss.view(-1, self.B, self.T).mean(-1).cpu().numpy() if token_loss is not None else None
        for j in [j for j in self.weighted if per_row is not None]:
            trainer.losses[trainer.step_idx - 1, j] = float(per_row[j].mean())  # comparable across trials
        for j, p in list(self.plans.items()):
            losses: dict[str, float] = {}
            if p.report and per_row is not None:
                s = self.samplers[self.live[j]]
                for r in np.unique(s.rows):
                    losses[s.domains[r]] = float(per_row[j][s.rows == r].mean())
            self._observe(j, step, losses, "train")
        self._charge(time.perf_counter() - t0)

    def result(self, j: int) -> tuple[list[dict[str, Any]], dict[str, float]]:
        """Member j's trajectory (history entries) and cost metrics; ([], {}) for a member without a mixer."""
        m = self.mixers.get(j)
        if m is None:
            return [], {}
        st, avg = m.stats(), m.average()
        metrics = {"online_evals": st.get("evals", 0), "online_learn_steps": st.get("learn_steps", 0),
                   "online_updates": st.get("updates", 0), "online_seconds": self.seconds[j] + self.eval_seconds[j],
                   "online_eval_seconds": self.eval_seconds[j]}
        metrics |= {f"online_average.{d}": float(w) for d, w in avg.items()}
        return list(self.trajectory[j]), metrics
