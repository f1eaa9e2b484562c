"""One proxy trial: train a small GPT (dense or MoE) on a data mixture and score per-domain
validation loss.

``run_trial(request)`` trains one ``nn.Module``: the readable reference that the batched engine
(``mixopt.proxies.pack_train``: ``run_one`` for one trial, what the executors call, ``run_pack``
for K) is tested against, member by member, and that ``bench/bench_engine.py`` times as "solo".
Training batches draw each sequence's domain
by the mixture weights and a random window inside that domain's train split (seeded by
``spec.seed``: the same request gives bit-identical losses on CPU). Validation uses FIXED
batches per domain whose seed depends only on the domain name, so every trial of a study is
scored on identical data. ``spec.arch`` picks the model: ``mixopt.proxies.gpt.GPT`` or
``mixopt.proxies.moe.MoEGPT``; for MoE the router's load-balancing and z-losses join the training
objective, and each evaluation also records routing statistics (load CV, normalized load
entropy, fraction of assignments dropped over capacity).

Example:
    >>> result = run_trial({"trial_id": 0, "mixture": {"code": 0.3, "web": 0.7},
    ...                     "spec": ProxySpec(preset="dense-0.1m").to_dict(),
    ...                     "corpus_dir": "data/corpus", "num_threads": 1})
    >>> result.losses  # {"code": 3.91, "web": 4.42}
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from mixopt.core.errors import TrialError
from mixopt.core.mixture import Mixture
from mixopt.core.spec import ProxySpec
from mixopt.core.worker import TrialRequest, TrialResult
from mixopt.data.corpus import Corpus
from mixopt.proxies.gpt import GPT
from mixopt.proxies.model import build_model, lr_at, make_optimizer, sizes
from mixopt.proxies.moe import MoEGPT

EVAL_SEED = 0x5EED_E7A1  # fixed across trials, mixtures and spec.seed
ROUTING_KEYS = ("routing_load_cv", "routing_entropy", "routing_dropped_frac")  # MoE only


# --- batches --------------------------------------------------------------------------------
def _windows(tokens: np.ndarray, offsets: np.ndarray, T: int) -> np.ndarray:
    """Gather windows of T + 1 tokens starting at ``offsets`` -> (n, T + 1) int64."""
    return tokens[offsets[:, None] + np.arange(T + 1)].astype(np.int64)


class MixtureSampler:
    """Training batches: per sequence a domain drawn by weight, then a uniform window in it."""

    def __init__(self, corpus: Corpus, mixture: Mixture, B: int, T: int, seed: int, every: bool = False) -> None:
        # every=True: every domain of the mixture can be drawn later (set_mixture), not only the weighted ones
        self.domains = [d for d, w in mixture.items() if w > 0 or every]
        for d in self.domains:
            n = len(corpus.tokens(d, "train"))
            if n < T + 1:
                raise TrialError(f"mixture puts weight {mixture[d]:.4g} on domain {d!r}, whose train "
                                 f"split has {n} tokens; a window needs seq_len + 1 = {T + 1}", kind="data")
        self.data = [corpus.tokens(d, "train") for d in self.domains]
        self.max_off = np.array([len(a) - T for a in self.data])  # exclusive upper bound
        self.B, self.T = B, T
        self.rng = np.random.default_rng(seed)
        self.set_mixture(mixture)
        self.rows = np.zeros(B, dtype=np.int64)  # the last batch's domain per sequence (index into domains)

    def set_mixture(self, mixture: Mapping[str, float]) -> None:
        """Draw the next batches by ``mixture`` (an online mixer's current weights; its domains' only)."""
        w = np.array([float(mixture.get(d, 0.0)) for d in self.domains])
        self.cdf = np.cumsum(w / w.sum())
        self.cdf[-1] = 1.0

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """-> x, y: (B, T) int64, y shifted by one token."""
        dom = np.searchsorted(self.cdf, self.rng.random(self.B), side="right")  # (B,)
        self.rows = dom
        off = (self.rng.random(self.B) * self.max_off[dom]).astype(np.int64)  # (B,)
        buf = np.empty((self.B, self.T + 1), dtype=np.int64)
        for i, (j, o) in enumerate(zip(dom.tolist(), off.tolist())):  # a slice per row: ~3x faster than a
            buf[i] = self.data[j][o:o + self.T + 1]  # gather per domain, the same windows (a pack draws K per step)
        t = torch.from_numpy(buf)
        return t[:, :-1], t[:, 1:]


def eval_batches(corpus: Corpus, domain: str, n_batches: int, B: int, T: int, resample: int = 0) -> torch.Tensor:
    """Fixed validation windows of one domain -> (n_batches, B, T + 1) int64.

    The seed depends only on the domain name, so every trial sees the same windows; ``resample``
    r > 0 draws another fixed set (r), for the spread of a score over validation batches.
    """
    if domain not in corpus.domains:
        raise TrialError(f"eval domain {domain!r} is not in the corpus; known: {', '.join(corpus.domains)}",
                         kind="data")
    val = corpus.tokens(domain, "val")
    if len(val) < T + 1:
        raise TrialError(f"eval domain {domain!r} has {len(val)} val tokens; "
                         f"a window needs seq_len + 1 = {T + 1}", kind="data")
    rng = np.random.default_rng([EVAL_SEED, zlib.crc32(domain.encode())] + ([resample] if resample else []))
    off = rng.integers(0, len(val) - T, size=n_batches * B)
    return torch.from_numpy(_windows(val, off, T).reshape(n_batches, B, T + 1))


@torch.inference_mode()
def evaluate(model: GPT, batches: dict[str, torch.Tensor], device: torch.device) -> dict[str, float]:
    """Mean validation loss per domain over its fixed batches."""
    model.eval()
    out = {}
    for name, data in batches.items():
        data = data.to(device)
        losses = [model(b[:, :-1], b[:, 1:])[1] for b in data]
        out[name] = torch.stack(losses).mean().item()
    model.train()
    return out


# --- optimization ---------------------------------------------------------------------------
def train_step(model: GPT, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               lr: float) -> torch.Tensor:
    """One optimizer step (clip 1.0); returns the detached training loss (cross-entropy).

    MoE models add their weighted auxiliary router losses (``model.aux_loss``) to the objective.
    """
    for g in opt.param_groups:
        g["lr"] = lr * g.get("lr_mult", 1.0)  # muP: hidden matrices step at lr / width_mult
    _, loss = model(x, y)
    aux = getattr(model, "aux_loss", None)
    (loss if aux is None else loss + aux).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device: {name!r}; allowed: 'cpu', 'cuda', 'auto'")
    return torch.device(name)


# --- the trial ------------------------------------------------------------------------------
def final_failure(final: dict[str, Any], vocab_size: int, steps: int, trial_id: int) -> str | None:
    """Why a trial whose last evaluation is ``final`` counts as diverged (None: it does not): a non-finite
    validation loss, or a final training loss above ln(V), worse than a uniform guess."""
    if not all(math.isfinite(v) for v in final["losses"].values()):
        return f"diverged at step {steps}: non-finite validation loss {final['losses']}"
    if final["train_loss"] > math.log(vocab_size):
        return (f"diverged: final train loss {final['train_loss']:.4f} is above ln(vocab) = {math.log(vocab_size):.4f}, "
                f"the loss of a uniform guess (trial {trial_id})")
    return None


def trial_metrics(spec: ProxySpec, vocab_size: int, final: dict[str, Any], train_seconds: float,
                  seconds: float, steps: int | None = None) -> dict[str, float]:
    """The metrics of a finished trial: its sizes (from the spec), tokens, steps, timings, throughput,
    and the last evaluation's training loss and MoE routing statistics. ``steps``: the steps it trained
    when not the spec's (a branch trains the rest of its seed's schedule)."""
    size = sizes(spec, vocab_size)
    steps = spec.steps if steps is None else steps
    tokens = steps * spec.batch_size * spec.seq_len
    return {"train_loss": final["train_loss"], "tokens": tokens, "steps": steps, "seconds": seconds,
            "train_seconds": train_seconds, "tokens_per_s": tokens / train_seconds,
            "flops_per_s": size["flops_per_token"] * tokens / train_seconds, **size} \
        | {k: final[k] for k in ROUTING_KEYS if k in final}


def run_trial(request: TrialRequest | dict[str, Any]) -> TrialResult:
    """Train one proxy on the request's mixture and return per-domain validation losses.

    Args:
        request: a :class:`~mixopt.core.worker.TrialRequest` (or its ``to_dict()``).
    Returns:
        the :class:`~mixopt.core.worker.TrialResult`: final ``losses``, the ``history`` of evaluations,
        the metrics (sizes, throughput; for MoE the last evaluation's routing_load_cv, routing_entropy
        and routing_dropped_frac) and the device it trained on.
    Raises:
        MixtureError: a mixture that names domains the corpus lacks.
        TrialError: divergence (kind "diverged": a non-finite loss) or weight on a domain without data
            (kind "data").
    """
    t_start = time.perf_counter()
    req = TrialRequest.of(request)
    if req.branch is not None:
        raise TrialError(f"trial {req.trial_id}: branch trials (merge.branch) train on the engine "
                         "(mixopt.proxies.pack_train.run_one), not on this reference trainer", kind="error")
    spec = req.spec
    torch.set_num_threads(req.num_threads)
    device = resolve_device(req.device)
    corpus = Corpus.open(req.corpus_dir)
    mixture = Mixture(req.mixture.to_dict(), corpus.domains)
    B, T, steps = spec.batch_size, spec.seq_len, spec.steps

    sampler = MixtureSampler(corpus, mixture, B, T, seed=spec.seed)
    val = {d: eval_batches(corpus, d, spec.eval_batches, B, T)
           for d in req.eval_domains or corpus.domains}
    eval_at = {max(1, round(steps * (i + 1) / spec.evals)) for i in range(spec.evals)}
    torch.manual_seed(spec.seed)
    model = build_model(spec, corpus.vocab_size).to(device)
    routed = isinstance(model, MoEGPT)
    opt = make_optimizer(model, spec)

    history: list[dict[str, Any]] = []
    train_seconds, window = 0.0, []
    for step in range(steps):
        t0 = time.perf_counter()
        x, y = sampler.next()
        loss = train_step(model, opt, x.to(device), y.to(device), lr_at(step, spec)).item()
        train_seconds += time.perf_counter() - t0
        if not math.isfinite(loss):
            raise TrialError(f"diverged at step {step}: loss={loss} (lr={lr_at(step, spec):.3g}, "
                             f"trial {req.trial_id})", kind="diverged")
        window.append(loss)
        if step + 1 in eval_at:
            if routed:
                model.reset_routing_stats()  # routing stats over this evaluation's forwards
            losses = evaluate(model, val, device)
            history.append({"step": step + 1, "tokens": (step + 1) * B * T, "losses": losses,
                            "train_loss": float(np.mean(window))})
            if routed:
                history[-1].update({k: v for k, v in model.routing_stats().items() if k in ROUTING_KEYS})
            window = []

    final = history[-1]
    why = final_failure(final, corpus.vocab_size, steps, req.trial_id)
    if why:
        raise TrialError(why, kind="diverged")
    metrics = trial_metrics(spec, corpus.vocab_size, final, train_seconds, time.perf_counter() - t_start)
    return TrialResult(final["losses"], history, metrics, req.trial_id, str(device))
