"""The proxy model of a spec, its optimizer, its learning-rate schedule and its sizes.

One place for what both the one-model reference trainer (:mod:`mixopt.proxies.train`) and the
batched engine (:mod:`mixopt.proxies.pack`, :mod:`mixopt.proxies.pack_train`) build from a
:class:`~mixopt.core.spec.ProxySpec`. Sizes and FLOPs come from the spec alone
(:func:`sizes`); the tests check the models hold exactly that many parameters.
"""

from __future__ import annotations

import math

import torch

from mixopt.core.spec import ProxySpec
from mixopt.proxies.gpt import GPT, GPTConfig, mup_multipliers
from mixopt.proxies.moe import MoEConfig, MoEGPT


def build_model(spec: ProxySpec, vocab_size: int) -> GPT:
    """The proxy model for ``spec.arch``: dense GPT or MoEGPT (a GPT subclass), initialised from the
    current torch RNG state (callers seed it with ``torch.manual_seed(spec.seed)``)."""
    if spec.arch == "moe":
        return MoEGPT(MoEConfig.from_spec(spec, vocab_size))
    return GPT(GPTConfig.from_spec(spec, vocab_size))


def lr_at(step: int, spec: ProxySpec) -> float:
    """Linear warmup over warmup_frac of the steps, then cosine to min_lr_frac * lr at the end."""
    steps, warmup = spec.steps, int(spec.warmup_frac * spec.steps)
    if step < warmup:
        return spec.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - 1 - warmup)  # 0 -> 1
    lo = spec.min_lr_frac * spec.lr
    return lo + 0.5 * (spec.lr - lo) * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def make_optimizer(model: GPT, spec: ProxySpec) -> torch.optim.AdamW:
    """AdamW (betas 0.9/0.95, fused); weight decay on 2-D weights (matmuls, embeddings), none on LayerNorm gains.

    Each param group carries ``lr_mult``, its learning rate over the schedule's (``train_step`` sets
    ``lr * lr_mult``): 1 under the standard parametrization; under muP 1/width_mult for the hidden
    matrices and the MoE router (:func:`mixopt.proxies.gpt.mup_multipliers`)."""
    groups: dict[tuple[bool, float], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((p.dim() >= 2, mup_multipliers(name, spec.width_mult)[1]), []).append(p)
    return torch.optim.AdamW([{"params": ps, "weight_decay": spec.weight_decay if decay else 0.0, "lr_mult": mult,
                               "lr": spec.lr * mult} for (decay, mult), ps in groups.items()],
                             lr=spec.lr, betas=(0.9, 0.95), fused=True)


def sizes(spec: ProxySpec, vocab_size: int) -> dict[str, int]:
    """The size metrics a trial reports, from the spec: params, non_embedding_params, active_params,
    active_non_embedding_params (tied embedding counted once) and training flops_per_token."""
    return {"params": spec.params(vocab_size), "non_embedding_params": spec.non_embedding_params(),
            "active_params": spec.active_params(vocab_size),
            "active_non_embedding_params": spec.active_non_embedding_params(),
            "flops_per_token": spec.flops_per_token(vocab_size)}
