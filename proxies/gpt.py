"""A small dense GPT for proxy trials, read top to bottom (nanoGPT style).

Architecture (matches the arithmetic in ``mixopt.core.spec.ProxySpec``, which a test checks):
learned position embedding, pre-LayerNorm blocks of causal self-attention and a 4x GELU MLP,
bias-free Linear and LayerNorm layers, final LayerNorm, lm_head tied to the token embedding.

Shapes: B batch, T sequence length, C = d_model, nh heads, hs = C // nh head size, V vocab.

Parametrization (``ProxySpec.parametrization``): "standard" is GPT-2's (every weight N(0, 0.02), the
residual projections 0.02/sqrt(2 n_layer), attention 1/sqrt(hs), one learning rate). "mup" is the
Maximal Update Parametrization for Adam (Yang et al. 2022, "Tensor Programs V", Table 3 with the
output multiplier of its Table 8 for the tied read-out), anchored at ``MUP_BASE_WIDTH`` = 64, with
width_mult m = d_model / 64 (a d_model-64 model has the standard one's init and learning rates; its logits
are multiplied by alpha):

* hidden matrices (attention qkv and projection, MLP in and out; MoE experts; :func:`mup_multipliers`):
  init std / sqrt(m) (variance ~ 1/fan_in), Adam lr / m;
* the MoE router, an output layer of finite fan-out E (arXiv 2508.09752, "muP for MoE"): init std / m,
  Adam lr / m;
* embeddings (token, position; the token embedding is also the tied read-out) and LayerNorm gains:
  unscaled; the logits are multiplied by alpha/m instead, alpha = ``spec.mup_output_mult`` (muP's read-out
  multiplier at the base width, default 4: tuned at d_model 64 alone, as muP prescribes; with alpha = 1, the
  standard model's read-out at the base width, MoE proxies of width 256 reached 5.37-5.74 against the
  standard parametrization's 4.67, and their best lr moved up with width, ``bench/bench_mup.py``);
* attention scores scaled by 1/sqrt(hs * m): 1/sqrt(hs) at the base width, ~1/hs (muP's 1/d) as the
  heads widen.

Example:
    >>> from mixopt.core.spec import ProxySpec
    >>> spec = ProxySpec(preset="dense-0.1m")
    >>> model = GPT(GPTConfig.from_spec(spec, vocab_size=512))
    >>> model.num_params(non_embedding=True) == spec.non_embedding_params()
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from mixopt.core.spec import ProxySpec


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 512
    seq_len: int = 128
    n_layer: int = 2
    n_head: int = 2
    d_model: int = 64
    width_mult: float = 1.0  # muP's d_model / base width; 1.0 = the standard parametrization
    output_mult: float = 1.0  # the logits' multiplier: muP's mup_output_mult / width_mult; 1.0 = standard

    def __post_init__(self) -> None:
        if self.d_model % self.n_head != 0:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_head={self.n_head}")

    @property
    def attn_scale(self) -> float | None:
        """Attention's score scale: None (SDPA's 1/sqrt(hs)) for standard, 1/sqrt(hs * m) for muP."""
        return None if self.width_mult == 1.0 else 1.0 / math.sqrt(self.d_model // self.n_head * self.width_mult)

    @classmethod
    def from_spec(cls, spec: ProxySpec, vocab_size: int) -> GPTConfig:
        return cls(vocab_size=vocab_size, seq_len=spec.seq_len, n_layer=spec.n_layer,
                   n_head=spec.n_head, d_model=spec.d_model, width_mult=spec.width_mult,
                   output_mult=spec.output_mult)


_HIDDEN = ("attn.c_attn.weight", "attn.c_proj.weight", "c_fc.weight", "c_proj.weight", "moe.w_fc", "moe.w_proj")


def mup_multipliers(name: str, width_mult: float) -> tuple[float, float]:
    """(init std multiplier, Adam lr multiplier) of the parameter called ``name`` (the solo model's name;
    the batched pack's parameters carry the same names): hidden matrices (1/sqrt(m), 1/m), the MoE router
    (1/m, 1/m), everything else (1, 1). Both 1 when ``width_mult`` is 1."""
    if width_mult == 1.0:
        return 1.0, 1.0
    if name.endswith("moe.router.weight"):
        return 1.0 / width_mult, 1.0 / width_mult
    if name.endswith(_HIDDEN):
        return 1.0 / math.sqrt(width_mult), 1.0 / width_mult
    return 1.0, 1.0


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.scale = cfg.n_head, cfg.attn_scale
        self.c_attn = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)  # q, k, v in one matmul
        self.c_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or 4 * cfg.d_model  # H: 4C for the dense MLP, smaller for MoE experts
        self.c_fc = nn.Linear(cfg.d_model, hidden, bias=False)
        self.c_proj = nn.Linear(hidden, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))  # (B, T, C) -> (B, T, H) -> (B, T, C)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model, bias=False)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model, bias=False)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    block_cls: type[nn.Module] = Block  # proxies/moe.py swaps in its MoE block

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.seq_len, cfg.d_model)
        self.blocks = nn.ModuleList(self.block_cls(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, bias=False)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying: one (V, C) matrix
        self.register_buffer("pos", torch.arange(cfg.seq_len), persistent=False)  # (T,)
        self.apply(self._init_weights)
        # GPT-2: scale the residual projections by 1/sqrt(2 * n_layer).
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))
        if cfg.width_mult != 1.0:  # muP: rescale in place (no RNG draws: the same stream as standard)
            with torch.no_grad():
                for name, p in self.named_parameters():
                    p.mul_(mup_multipliers(name, cfg.width_mult)[0])

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """The parameters this module holds (tied weights once; non_embedding drops wte and wpe): a count
        of its tensors, which the tests hold equal to ``ProxySpec.params`` / ``non_embedding_params``,
        where sizes and FLOPs per token are defined."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.wte.weight.numel() + self.wpe.weight.numel()
        return n

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx, targets: (B, T) int64 token ids, T <= seq_len -> logits (B, T, V), mean CE loss."""
        B, T = idx.shape
        if T > self.cfg.seq_len:
            raise ValueError(f"sequence length {T} exceeds the model's seq_len {self.cfg.seq_len}")
        x = self.wte(idx) + self.wpe(self.pos[:T])  # (B, T, C)
        for block in self.blocks:
            x = block(x)  # (B, T, C)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        if self.cfg.output_mult != 1.0:
            logits = logits * self.cfg.output_mult  # muP's output multiplier (tied read-out)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(B * T, -1), targets.reshape(B * T))
        return logits, loss
