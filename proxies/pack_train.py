"""Train K proxy trials of one architecture as one pack (``run_pack``), each as if trained alone.

``run_pack(requests)`` takes K ``TrialRequest``s whose specs agree on everything but the
per-member fields (``PER_MEMBER``: seed, lr, warmup/min-lr fractions, weight decay, MoE loss
coefficients) and whose mixtures may all differ. Each member:

* starts from its solo initial weights (``PackGPT.from_specs``),
* draws its own batches with its own ``MixtureSampler(corpus, mixture, B, T, seed=spec.seed)``,
  exactly the sequences its solo ``run_trial`` sees,
* has its gradient clipped to norm 1 on its own (norm over all but the K axis) and its own
  AdamW step (``PackAdamW``: per-element state, per-member lr schedule and weight decay),
* is evaluated on the same fixed held-out batches: one (K, domains) loss matrix per evaluation.

No host sync per step on CUDA: training losses stay on the device in a (steps, K) tensor and
are read at evaluation points (on CPU, where a step has synced anyway, after every step), where a
member with a non-finite loss is reported failed and masked (weights and optimizer state zeroed,
left out of the optimizer) while the others go on; a member whose final training loss is above
ln(vocab_size) (worse than uniform) fails too. The result has one entry per request: a
:class:`~mixopt.core.worker.TrialResult` like ``run_trial``'s (plus pack_size and pack_tokens_per_s
metrics), or a :class:`~mixopt.core.worker.TrialFailure` (kind "mixture", "data" or "diverged").
``run_one`` is a pack of one that raises instead: what the executors run for a single trial.

A request with a ``branch`` (``merge.branch``; every member of a pack shares it) starts every member
from the expert set's seed instead of its initial weights and trains steps ``seed_steps`` to
``spec.steps`` of the same schedule (fresh AdamW state, as the experts): its metrics count the steps
and tokens it trained, its history the schedule's step.

On CUDA the forward runs under bf16 autocast and, unless ``compile=False``, through
``torch.compile`` (falling back to eager if compiling fails); MoE dispatch is a grouped
matmul with static shapes (or dense-masked where ``F.grouped_mm`` is unavailable).
"""

from __future__ import annotations

import ctypes
import math
import time
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mixopt.core.errors import DataError, MixtureError, TrialError
from mixopt.core.experts import SEED_FILE
from mixopt.core.mixture import Mixture
from mixopt.core.spec import PER_MEMBER, ProxySpec
from mixopt.core.worker import Branch, Outcome, TrialFailure, TrialRequest, TrialResult
from mixopt.data.corpus import Corpus
from mixopt.proxies.gpt import mup_multipliers
from mixopt.proxies.model import lr_at
from mixopt.proxies.online_train import OnlineMembers
from mixopt.proxies.pack import PackGPT, resolve_dispatch, set_dispatch
from mixopt.proxies.train import MixtureSampler, eval_batches, final_failure, resolve_device, trial_metrics
from mixopt.proxies.weights import load_into, load_member

BETAS, EPS, CLIP = (0.9, 0.95), 1e-8, 1.0  # as make_optimizer / train_step


def _per_k(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(K,) -> (K, 1, ..., 1) broadcastable against ``like`` (K, ...)."""
    return t.view(-1, *([1] * (like.dim() - 1)))


@torch.no_grad()
def clip_per_member(grads: Sequence[torch.Tensor], max_norm: float = CLIP) -> torch.Tensor:
    """``clip_grad_norm_`` per member: grads (K, ...) each; member k's norm over all its grads.

    Scales member k by min(1, max_norm / (norm_k + 1e-6)) in place -> pre-clip norms (K,).
    """
    norms = torch.stack([torch.linalg.vector_norm(g.flatten(1).float(), dim=1) for g in grads])  # (P, K)
    total = torch.linalg.vector_norm(norms, dim=0)  # (K,)
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(_per_k(coef, g).to(g.dtype))
    return total


class PackAdamW:
    """AdamW over stacked (K, ...) parameters, each member with its own lr and weight decay.

    Members that share (lr, weight decay) at a step get one ``torch._fused_adamw_`` call, the
    kernel of ``torch.optim.AdamW(fused=True)`` that solo training uses: on the whole stacked
    tensors when every member is in the group, else on the members' slices. Betas 0.9/0.95,
    eps 1e-8; decay on parameters >= 2-D per member (matmuls, embeddings), none on LayerNorm
    gains, like ``make_optimizer``. ``lr_mults`` (one per parameter, default 1): its lr over the
    member's (muP: 1/width_mult for hidden matrices and the MoE router, as ``make_optimizer``'s groups).
    Members left out of ``step`` are not touched (masked).
    """

    def __init__(self, params: Sequence[torch.nn.Parameter], weight_decay: Sequence[float],
                 lr_mults: Sequence[float] | None = None) -> None:
        self.params = list(params)
        self.K = self.params[0].shape[0]
        self.decay = [p.dim() - 1 >= 2 for p in self.params]
        self.kinds = list(zip(self.decay, lr_mults if lr_mults is not None else [1.0] * len(self.params)))
        self.wd = list(weight_decay)
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = 0
        # the step count as the fused kernel reads it (a tensor; it never writes it): one for all parameters,
        # so a step sets it with one fill, not one per parameter
        self.step_t = torch.zeros((), dtype=torch.float32, device=self.params[0].device)

    @torch.no_grad()
    def step(self, lrs: Sequence[float], members: Sequence[int]) -> None:
        """lrs: this step's lr per member (host floats); members: the members to update."""
        self.t += 1
        self.step_t.fill_(self.t)  # a host scalar into a device tensor: no sync
        groups: dict[tuple[float, float], list[int]] = {}
        for k in members:
            groups.setdefault((lrs[k], self.wd[k]), []).append(k)
        grads = [p.grad for p in self.params]
        for (lr, wd), ks in groups.items():
            for decay, mult in dict.fromkeys(self.kinds):  # (decay, lr multiplier) in first-seen order
                idx = [i for i, kind in enumerate(self.kinds) if kind == (decay, mult)]
                whole = len(ks) == self.K  # the stacked tensors themselves, else the members' slices

                def pick(ts: list[torch.Tensor]) -> list[torch.Tensor]:
                    return [ts[i] for i in idx] if whole else [ts[i][k] for i in idx for k in ks]  # noqa: B023

                if idx:
                    steps = [self.step_t] * (len(idx) if whole else len(idx) * len(ks))
                    _adamw(pick(self.params), pick(grads), pick(self.m), pick(self.v), steps, lr * mult,
                           wd if decay else 0.0, self.t)

    @torch.no_grad()
    def reset_member(self, k: int) -> None:
        for m, v in zip(self.m, self.v):
            m[k].zero_(), v[k].zero_()


def _adamw(ps: list[torch.Tensor], gs: list[torch.Tensor], ms: list[torch.Tensor], vs: list[torch.Tensor],
           steps: list[torch.Tensor], lr: float, wd: float, t: int) -> None:
    """One AdamW step on tensor lists: the fused kernel, else the same arithmetic with foreach ops."""
    b1, b2 = BETAS
    if hasattr(torch, "_fused_adamw_"):
        torch._fused_adamw_(ps, gs, ms, vs, [], steps, lr=lr, beta1=b1, beta2=b2, weight_decay=wd, eps=EPS,
                            amsgrad=False, maximize=False)
        return
    torch._foreach_mul_(ps, 1 - lr * wd)
    torch._foreach_lerp_(ms, gs, 1 - b1)
    torch._foreach_mul_(vs, b2)
    torch._foreach_addcmul_(vs, gs, gs, 1 - b2)
    denom = torch._foreach_add(torch._foreach_div(torch._foreach_sqrt(vs), math.sqrt(1 - b2**t)), EPS)
    torch._foreach_addcdiv_(ps, ms, denom, -lr / (1 - b1**t))


@cache
def reuse_large_allocations() -> bool:
    """glibc (Linux): keep freed large blocks in the heap for reuse (mallopt) -> whether it took.

    A CPU pack's activations are K times a solo model's: for K = 16 of dense-1m most exceed
    glibc's 32 MiB mmap ceiling, so each was a fresh mmap, page-faulted in and unmapped again,
    every step. That cost 6 % of a step (``bench/bench_engine.py --vocab 2048``: K=16 0.92x solo,
    0.98x with the heap kept, as K=4). Solo-sized tensors gain too where they pass 32 MiB (the
    reference path's (N, V) logits at V = 4096). Process-wide: the process keeps its peak heap.
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int  # int: 2**31 - 1 at most
    return bool(mallopt(-3, 2**30) and mallopt(-1, 2**31 - 1))  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD


class PackTrainer:
    """A pack, its optimizer and its training step; knows nothing of corpora (benchmarks use it).

    Args:
        specs: one per member, equal in ``ProxySpec.pack_key()``.
        vocab_size: V.
        device: where to train; CUDA adds bf16 autocast and (compile=None) torch.compile.
        dispatch: MoE dispatch (see ``PackMoE``); "auto" picks grouped where it works.
        compile: torch.compile the forward; None = on CUDA only; a string: on, with that backend
            (default inductor; "aot_eager" traces forward and backward without generating code, as the
            GPU suite's CPU rehearsal does). Falls back to eager on failure (``compile_error`` says why).
        lr_table: (steps, K) learning rates to use instead of each spec's own schedule.
        start: the schedule step the pack starts at (a branch continues its seed's schedule): it trains
            steps ``start`` to ``spec.steps`` (without ``lr_table``).
    """

    def __init__(self, specs: Sequence[ProxySpec], vocab_size: int, device: torch.device,
                 dispatch: str = "auto", compile: bool | str | None = None,
                 lr_table: Sequence[Sequence[float]] | None = None, start: int = 0) -> None:
        self.specs, self.device, self.K = list(specs), device, len(specs)
        if device.type == "cpu":
            reuse_large_allocations()
        steps = specs[0].steps - start
        self.pack = PackGPT.from_specs(specs, vocab_size).to(device)
        set_dispatch(self.pack, resolve_dispatch(dispatch, device))
        self.opt = PackAdamW(list(self.pack.parameters()), [s.weight_decay for s in specs],
                             [mup_multipliers(n, specs[0].width_mult)[1] for n, _ in self.pack.named_parameters()])
        # (steps, K) host floats: each member's own schedule, or the one given (experts continue their seed's)
        self.lr_table = [list(r) for r in lr_table] if lr_table is not None else \
            [[lr_at(start + i, s) for s in specs] for i in range(steps)]
        self.dead: set[int] = set()
        self.losses = torch.full((steps, self.K), float("nan"), device=device)  # training CE per step
        self.step_idx = 0
        self.amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
        use_compile = device.type == "cuda" if compile is None else bool(compile)
        backend = compile if isinstance(compile, str) else "inductor"
        self.compile_error: str | None = None
        # one static graph per pack shape, cached by dynamo on the code of _objective: a later pack of the same
        # shape in this process reuses it (torch 2.13: its guards do not pin this trainer's pack; tests/proxies)
        self._compiled = (torch.compile(self._objective, dynamic=False, backend=backend)
                          if use_compile and hasattr(torch, "compile") else None)

    def _objective(self, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None,
                   token_loss: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (cross-entropy (K,), cross-entropy + MoE aux loss (K,))."""
        ce = self.pack(x, y, weights, token_loss)
        return ce, ce if self.pack.aux_loss is None else ce + self.pack.aux_loss

    def _forward_backward(self, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None,
                          token_loss: torch.Tensor | None = None) -> torch.Tensor:
        if weights is not None or token_loss is not None:  # online mixing's steps run eager
            with self.amp:
                ce, total = self._objective(x, y, weights, token_loss)
            total.sum().backward()
            return ce
        if self._compiled is not None:
            try:
                with self.amp:
                    ce, total = self._compiled(x, y)
                total.sum().backward()
                return ce
            except torch.OutOfMemoryError:
                raise
            except Exception as e:  # compile unavailable or failing: eager from now on
                self.compile_error = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"
                warnings.warn(f"torch.compile of the pack step failed ({type(e).__name__}: {e}); running eager",
                              stacklevel=2)
                self._compiled = None
                self.pack.zero_grad(set_to_none=True)
        with self.amp:
            ce, total = self._objective(x, y)
        total.sum().backward()  # sum of per-member losses: each member gets its solo gradient
        return ce

    def step(self, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None,
             token_loss: torch.Tensor | None = None) -> None:
        """One optimizer step for all members. x, y: (K, B, T) int64 on the device. No host sync.

        ``weights`` (K, B, T): per-token loss weights (DoReMi's reweighted objective); ``token_loss`` (K, B*T)
        fp32 receives each token's CE before the update (per-domain batch losses for an online mixer)."""
        ce = self._forward_backward(x, y, weights, token_loss)
        grads = [p.grad for p in self.pack.parameters() if p.grad is not None]
        with torch.no_grad():
            clip_per_member(grads)
            self.opt.step(self.lr_table[self.step_idx], [k for k in range(self.K) if k not in self.dead])
            self.losses[self.step_idx] = ce.detach().float()
        self.pack.zero_grad(set_to_none=True)
        self.step_idx += 1

    @torch.no_grad()
    def kill(self, k: int) -> None:
        """Mask member k out: zero its weights and optimizer state; the optimizer skips it from now on."""
        self.dead.add(k)
        for p in self.pack.parameters():
            p[k].zero_()
        self.opt.reset_member(k)

    def evaluate(self, batches: dict[str, torch.Tensor]) -> np.ndarray:
        """Mean loss of every member on each domain's fixed batches (n, B, T + 1) -> (K, D) array."""
        return evaluate_pack(self.pack, batches, self.device)

    @torch.no_grad()
    def evaluate_sequences(self, seqs: dict[str, torch.Tensor]) -> np.ndarray:
        """Every member's mean loss on each sequence of each domain's (n, T + 1) windows -> (K, D, n) array
        (one pack forward per domain; bf16 autocast on CUDA; the pack is left in training mode)."""
        K = self.pack.K
        self.pack.eval()
        out = []
        for data in seqs.values():
            data = data.to(self.device)
            n, T = data.shape[0], data.shape[1] - 1
            tl = torch.empty(K, n * T, device=self.device, dtype=torch.float32)
            with self.amp:
                self.pack(data[None, :, :-1].expand(K, -1, -1), data[None, :, 1:].expand(K, -1, -1), token_loss=tl)
            out.append(tl.view(K, n, T).mean(-1))
        self.pack.train()
        return torch.stack(out, 1).cpu().numpy().astype(float)  # one sync


@torch.no_grad()
def evaluate_pack(pack: PackGPT, batches: dict[str, torch.Tensor], device: torch.device) -> np.ndarray:
    """Mean loss of every member of ``pack`` on each domain's fixed batches (n, B, T + 1) -> (K, D) array
    (bf16 autocast on CUDA, as in training; the pack is left in training mode)."""
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    K = pack.K
    pack.eval()
    out = []
    for data in batches.values():
        data = data.to(device)
        per = []
        for b in data:
            with amp:
                per.append(pack(b[None, :, :-1].expand(K, -1, -1), b[None, :, 1:].expand(K, -1, -1)).float())
        out.append(torch.stack(per).mean(0))
    pack.train()
    return torch.stack(out, 1).cpu().numpy().astype(float)  # one sync


def _check_pack(reqs: list[TrialRequest], specs: list[ProxySpec]) -> None:
    first = reqs[0]
    for r in reqs[1:]:
        for f in ("corpus_dir", "eval_domains", "num_threads", "device", "branch"):
            if getattr(r, f) != getattr(first, f):
                raise ValueError(f"run_pack: trial {r.trial_id} has {f}={getattr(r, f)!r}, trial "
                                 f"{first.trial_id} {getattr(first, f)!r}; a pack shares them")
    key = dict(specs[0].pack_key())
    for r, s in zip(reqs[1:], specs[1:]):
        diff = sorted(k for k, v in s.pack_key() if key[k] != v)
        if diff:
            raise ValueError(f"run_pack: trial {r.trial_id} differs from trial {first.trial_id} in {diff}; "
                             f"pack members may differ only in {', '.join(PER_MEMBER)}")


def run_pack(requests: Sequence[TrialRequest | dict[str, Any]], *, dispatch: str = "auto",
             compile: bool | str | None = None, deadline: float | None = None) -> list[Outcome]:
    """Train the requests as one pack; one outcome per request, in order (see the module docstring).

    ``compile`` as :class:`PackTrainer`'s. ``deadline``: a ``time.time()`` after which no step starts;
    the members still training then fail (kind "error", "stopped at step s of n"), nothing is kept
    half-trained (checked on the host between steps: no sync).

    Raises:
        ValueError: requests that cannot share a pack (architecture, budget, corpus, device).
        TrialError: an eval domain missing from the corpus (common to all members).
    A member's own problems (bad mixture, weight on an empty domain, divergence) become
    :class:`~mixopt.core.worker.TrialFailure` entries.
    """
    t_start = time.perf_counter()
    reqs = [TrialRequest.of(r) for r in requests]
    if not reqs:
        return []
    specs = [r.spec for r in reqs]
    _check_pack(reqs, specs)
    torch.set_num_threads(reqs[0].num_threads)
    device = resolve_device(reqs[0].device)
    corpus = Corpus.open(reqs[0].corpus_dir)
    spec0, V = specs[0], corpus.vocab_size
    branch = reqs[0].branch
    start = branch.experts.seed_steps if branch is not None else 0  # a branch trains the rest of its seed's schedule
    B, T, steps = spec0.batch_size, spec0.seq_len, spec0.steps - start
    out: list[Outcome | None] = [None] * len(reqs)
    samplers: dict[int, MixtureSampler] = {}
    for i, (r, s) in enumerate(zip(reqs, specs)):
        try:
            m = Mixture(r.mixture.to_dict(), corpus.domains)  # the corpus has every domain named
            # an online mixer may weight any domain of the trial's mixture (the study's), not only those weighted now
            seed = s.seed if branch is None else branch.sampler_seed(s.seed)  # not the seed's own batches again
            samplers[i] = MixtureSampler(corpus, r.mixture if s.online else m, B, T, seed=seed, every=bool(s.online))
        except (TrialError, MixtureError) as e:
            out[i] = TrialFailure(r.trial_id, getattr(e, "kind", "mixture"), str(e))
    val = {d: eval_batches(corpus, d, spec0.eval_batches, B, T) for d in reqs[0].eval_domains or corpus.domains}
    live = list(samplers)  # pack slot j trains request live[j]
    if not live:
        return out
    eval_at = {max(1, round(steps * (i + 1) / spec0.evals)) for i in range(spec0.evals)}
    trainer = PackTrainer([specs[i] for i in live], V, device, dispatch=dispatch, compile=compile, start=start)
    if branch is not None:
        _load_seed(trainer, branch)
    online = OnlineMembers(reqs, specs, samplers, live, corpus, B, T)  # members mixing online
    history: list[list[dict[str, Any]]] = [[] for _ in live]
    zeros = torch.zeros(B, T + 1, dtype=torch.int64)
    check_every_step = device.type != "cuda"  # a CPU step has synced already: reading its loss is free
    train_seconds, t0, last, checked = 0.0, time.perf_counter(), 0, 0
    for step in range(steps):
        if deadline is not None and time.time() > deadline:
            for i in live:
                if out[i] is None:
                    out[i] = TrialFailure(reqs[i].trial_id, "error", f"stopped at step {start + step} of "
                                          f"{start + steps}: the deadline passed")
            return out
        if online:
            online.before_step(step, trainer, trainer.dead)
            _leave(online, trainer, out, reqs, live)
        xs, ys = [], []
        for j, i in enumerate(live):
            x, y = (zeros[:, :-1], zeros[:, 1:]) if j in trainer.dead else samplers[i].next()
            xs.append(x), ys.append(y)
        x, y = torch.stack(xs), torch.stack(ys)  # (K, B, T) each
        if device.type == "cuda":
            x, y = x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
        if online:
            weights = online.loss_weights(len(live), device)
            token_loss = torch.empty(len(live), B * T, device=device) if online.wants_token_loss() else None
            trainer.step(x, y, weights, token_loss)
            online.after_step(step, token_loss, trainer)
            _leave(online, trainer, out, reqs, live)
        else:
            trainer.step(x, y)
        evaluating = step + 1 in eval_at
        if not (evaluating or check_every_step):
            continue
        new = trainer.losses[checked:step + 1].cpu().numpy()  # (steps not checked yet, K): syncs on CUDA
        if evaluating:
            train_seconds += time.perf_counter() - t0
        for j, i in enumerate(live):
            bad = np.flatnonzero(~np.isfinite(new[:, j]))
            if j not in trainer.dead and len(bad):
                s = checked + int(bad[0])
                out[i] = TrialFailure(reqs[i].trial_id, "diverged", f"diverged at step {start + s}: loss="
                                      f"{new[bad[0], j]} (lr={lr_at(start + s, specs[i]):.3g}, trial {reqs[i].trial_id})")
                trainer.kill(j)
        checked = step + 1
        if len(trainer.dead) == len(live):
            break
        if not evaluating:
            continue
        window = trainer.losses[last:step + 1].cpu().numpy()  # (steps since the last evaluation, K)
        if trainer.pack.moe:
            trainer.pack.reset_routing_stats()
        lossmat = trainer.evaluate(val)  # (K, D)
        routing = trainer.pack.routing_stats() if trainer.pack.moe else None
        for j in range(len(live)):
            if j in trainer.dead:
                continue
            history[j].append({"step": start + step + 1, "tokens": (start + step + 1) * B * T,
                               "losses": dict(zip(val, lossmat[j].tolist())),
                               "train_loss": float(np.mean(window[:, j]))} | (routing[j] if routing else {}))
        last, t0 = step + 1, time.perf_counter()
    for j, i in enumerate(live):
        if out[i] is not None:
            continue
        final = history[j][-1]
        why = final_failure(final, V, start + steps, reqs[i].trial_id)
        if why:
            out[i] = TrialFailure(reqs[i].trial_id, "diverged", why)
            continue
        metrics = trial_metrics(specs[i], V, final, train_seconds, time.perf_counter() - t_start, steps)
        if branch is not None:
            metrics["branch_start_step"] = start
        metrics |= {"pack_size": len(live), "pack_tokens_per_s": len(live) * metrics["tokens_per_s"]}
        trajectory, mixing = online.result(j)  # an online mixer's weights at each change, and its cost
        entries = sorted(history[j] + trajectory, key=lambda h: (h["step"], "weights" in h))
        out[i] = TrialResult(final["losses"], entries, metrics | mixing, reqs[i].trial_id, str(device))
    return out


def _load_seed(trainer: PackTrainer, branch: Branch) -> None:
    """Every member of the pack starts from the branch's seed (checked against its expert set).

    Raises:
        TrialError: the seed file is missing, unreadable or of another set (kind "data").
    """
    path = Path(branch.folder) / SEED_FILE
    if not path.is_file():
        raise TrialError(f"branch: the seed {path} is missing on this worker (train it with mixopt run --resume; on "
                         "a cluster the expert cache folder must be shared)", kind="data")
    try:
        load_into(trainer.pack, load_member(path, branch.experts))
    except DataError as e:
        raise TrialError(str(e), kind="data") from None


def _leave(online: OnlineMembers, trainer: PackTrainer, out: list, reqs: list[TrialRequest], live: list[int]) -> None:
    """Members whose online mixing failed: their trials fail, their slots are masked; the others go on."""
    for j, kind, reason in online.take_failures():
        if j not in trainer.dead:
            out[live[j]] = TrialFailure(reqs[live[j]].trial_id, kind, reason)
            trainer.kill(j)


def run_one(request: TrialRequest | dict[str, Any]) -> TrialResult:
    """One trial through the engine (a pack of one): the executors' default trial function.

    Same request and result as :func:`mixopt.proxies.train.run_trial` (plus ``pack_size`` 1 and
    ``pack_tokens_per_s``), the same losses within the pack tolerance, and faster where the
    fused lm-head cross-entropy pays (small models, large vocabularies; ``bench/bench_engine.py
    --packs 1``). ``run_trial`` stays the one-``nn.Module`` reference the engine is tested against.
    On CUDA a lone trial gets the engine's GPU path too: bf16 autocast, ``torch.compile`` (compiled
    once per worker process and shape, reused by its later trials), non-finite losses checked at
    evaluation points rather than every step.

    Raises:
        MixtureError: a bad mixture (as ``run_trial``).
        TrialError: the trial's own failure (divergence, weight on an empty domain, an eval domain
            missing from the corpus).
    """
    (result,) = run_pack([request])
    if isinstance(result, TrialFailure):
        raise result.to_exception()
    return result
