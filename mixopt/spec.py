"""ProxySpec: what one proxy trial trains, and the arithmetic of its size and cost.

The arithmetic here (parameters, FLOPs per token) is the single source of truth; the torch
model in ``proxies/gpt.py`` reports the same numbers and a test checks they agree. Keeping it
torch-free lets the driver budget FLOPs without importing torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from mixopt.errors import ConfigError

# name -> (n_layer, n_head, d_model). Non-embedding params ~ 12 * n_layer * d_model**2.
DENSE_PRESETS: dict[str, tuple[int, int, int]] = {
    "dense-0.1m": (2, 2, 64),  # ~0.10M non-embedding params
    "dense-0.5m": (4, 4, 96),  # ~0.44M
    "dense-1m": (5, 4, 128),  # ~0.98M
    "dense-3m": (6, 6, 192),  # ~2.7M
    "dense-10m": (8, 5, 320),  # ~9.8M
}


@dataclass(frozen=True)
class ProxySpec:
    """A proxy model and its training budget (the fidelity of a trial).

    Attributes:
        preset: named architecture from ``DENSE_PRESETS`` (sets n_layer, n_head, d_model).
        tokens: training tokens (the token budget), e.g. 2_000_000.
        seq_len: context length T in tokens.
        batch_size: sequences per optimizer step (B); tokens per step = B * T.
        lr: peak learning rate (AdamW); warmup_frac of steps warm up linearly, then cosine
            decay to ``min_lr_frac * lr``.
        eval_batches: fixed held-out batches per domain for validation loss.
        evals: how many times validation loss is measured during training (last = final).
        seed: seeds model init and batch sampling.

    Example:
        >>> s = ProxySpec(preset="dense-0.1m", tokens=1_000_000)
        >>> s.non_embedding_params()
        98624
    """

    arch: str = "dense"
    preset: str = "dense-0.1m"
    tokens: int = 1_000_000
    seq_len: int = 128
    batch_size: int = 16
    lr: float = 3e-3
    warmup_frac: float = 0.1
    min_lr_frac: float = 0.1
    weight_decay: float = 0.1
    eval_batches: int = 8
    evals: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, where: str = "proxy") -> None:
        if self.arch != "dense":
            raise ConfigError(f"{where}.arch: {self.arch!r} is not available; allowed: 'dense'")
        if self.preset not in DENSE_PRESETS:
            raise ConfigError(
                f"{where}.preset: unknown preset {self.preset!r}; allowed: {', '.join(DENSE_PRESETS)}"
            )
        for key in ("tokens", "seq_len", "batch_size", "eval_batches", "evals"):
            val = getattr(self, key)
            if not isinstance(val, int) or isinstance(val, bool) or val < 1:
                raise ConfigError(f"{where}.{key}: {val!r} must be a positive integer")
        if self.tokens < self.seq_len * self.batch_size:
            raise ConfigError(
                f"{where}.tokens: {self.tokens} is less than one step "
                f"(batch_size*seq_len = {self.batch_size * self.seq_len})"
            )
        for key, lo, hi in (("lr", 0.0, 1.0), ("warmup_frac", 0.0, 1.0), ("min_lr_frac", 0.0, 1.0),
                            ("weight_decay", 0.0, 10.0)):
            val = getattr(self, key)
            if not isinstance(val, (int, float)) or isinstance(val, bool) or not (lo <= val <= hi):
                raise ConfigError(f"{where}.{key}: {val!r} must be a number in [{lo}, {hi}]")
        if self.lr <= 0:
            raise ConfigError(f"{where}.lr: must be > 0")

    # --- architecture -------------------------------------------------------------------
    @property
    def n_layer(self) -> int:
        return DENSE_PRESETS[self.preset][0]

    @property
    def n_head(self) -> int:
        return DENSE_PRESETS[self.preset][1]

    @property
    def d_model(self) -> int:
        return DENSE_PRESETS[self.preset][2]

    @property
    def steps(self) -> int:
        """Optimizer steps: tokens // (batch_size * seq_len)."""
        return self.tokens // (self.batch_size * self.seq_len)

    def non_embedding_params(self) -> int:
        """Per block: qkv 3d² + proj d² + MLP 8d² + two bias-free LayerNorms 2d; plus final LN d."""
        d = self.d_model
        return self.n_layer * (12 * d * d + 2 * d) + d

    def params(self, vocab_size: int) -> int:
        """Total params: non-embedding + tied token embedding V*d + learned positions T*d."""
        return self.non_embedding_params() + vocab_size * self.d_model + self.seq_len * self.d_model

    def flops_per_token(self, vocab_size: int) -> int:
        """Training FLOPs per token (forward + backward), PaLM/nanoGPT estimate.

        6 * (non-embedding params + lm-head V*d) + 12 * n_layer * d_model * seq_len (attention).
        """
        n = self.non_embedding_params() + vocab_size * self.d_model
        return 6 * n + 12 * self.n_layer * self.d_model * self.seq_len

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "proxy") -> "ProxySpec":
        fields = {f.name for f in dataclasses.fields(cls)}
        for k in d:
            if k not in fields:
                raise ConfigError(f"{where}.{k}: unknown key; allowed: {', '.join(sorted(fields))}")
        return cls(**d)
