"""A small mixture-of-experts GPT for proxy trials, read top to bottom (beside ``gpt.py``).

The backbone is the dense GPT's (reused, not copied: embeddings, attention, init, forward);
each block's MLP becomes an MoE layer. For N = B*T tokens x (N, C), E experts, top-k, G:

    z = x W_r                                    router logits (N, E), bias-free
    p = softmax(z); e_1..e_k = top-k of p        gates g_j = p_{e_j} / sum_j p_{e_j} (k > 1)
    y = sum_j g_j FFN_{e_j}(x) [+ FFN_shared(x)] FFN(x) = gelu(x W1) W2, hidden H = 4C / G

Routing has no per-token Python loop: the N*k (token, expert) assignments are sorted by
expert, the tokens gathered once into one contiguous (N*k, C) matrix, each expert runs its two
matmuls on its contiguous slice (a Python loop over the E experts), and the gated outputs go
back with one ``index_add_``. With a capacity factor cf each expert keeps its first
ceil(cf * N * k / E) assignments (token order); the rest are dropped: they add zero, the
residual stream passes the token through unchanged, and they are counted.

Auxiliary losses, each averaged over layers; ``model.aux_loss`` is their weighted sum, which the
training step adds to the cross-entropy (``forward`` returns (logits, CE) like GPT):
    load balance = E * sum_e f_e * P_e   (Switch Transformer, Fedus et al. 2021) f_e: fraction
        of assignments routed to e, P_e: mean router probability of e; = 1 at uniform routing
    z-loss = mean over tokens of logsumexp(z)^2   (ST-MoE, Zoph et al. 2022)

Under ``parametrization: mup`` (arXiv 2508.09752, "muP for MoE"; see ``gpt.py``) the experts are
hidden matrices (init std / sqrt(width_mult), Adam lr / width_mult) and the router, whose
fan-out E does not grow with width, an output layer (init std and Adam lr / width_mult).

Sizes and FLOPs are defined by ``mixopt.core.spec.ProxySpec`` (active params count the router,
top_k routed experts and the shared expert of every layer); the tests count this module's tensors
against them.

Example:
    >>> from mixopt.core.spec import ProxySpec
    >>> spec = ProxySpec(preset="moe-0.1m")
    >>> model = MoEGPT(MoEConfig.from_spec(spec, vocab_size=512))
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
from mixopt.proxies.gpt import GPT, MLP, CausalSelfAttention, GPTConfig


@dataclass(frozen=True)
class MoEConfig(GPTConfig):
    n_experts: int = 4
    top_k: int = 2
    granularity: int = 1
    shared_expert: bool = False
    aux_loss_coef: float = 0.01
    z_loss_coef: float = 0.001
    capacity_factor: float = 0.0  # 0 = no capacity limit

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.top_k <= self.n_experts:
            raise ValueError(f"top_k={self.top_k} must be in 1..n_experts={self.n_experts}")
        if (4 * self.d_model) % self.granularity:
            raise ValueError(f"granularity={self.granularity} does not divide 4*d_model={4 * self.d_model}")

    @property
    def expert_hidden(self) -> int:
        return 4 * self.d_model // self.granularity

    @classmethod
    def from_spec(cls, spec: ProxySpec, vocab_size: int) -> MoEConfig:
        if spec.arch != "moe":
            raise ValueError(f"MoEConfig needs an arch 'moe' spec, got preset {spec.preset!r}")
        return cls(vocab_size=vocab_size, seq_len=spec.seq_len, n_layer=spec.n_layer,
                   n_head=spec.n_head, d_model=spec.d_model, n_experts=spec.n_experts,
                   top_k=spec.top_k, granularity=spec.granularity, shared_expert=spec.shared_expert,
                   aux_loss_coef=spec.aux_loss_coef, z_loss_coef=spec.z_loss_coef,
                   capacity_factor=spec.capacity_factor, width_mult=spec.width_mult, output_mult=spec.output_mult)


class MoELayer(nn.Module):
    """Top-k routed experts (+ optional shared expert) in place of the dense MLP.

    After each forward: ``lb_loss`` and ``z_loss`` (scalars with grad) and the running routing
    counts ``load`` (E,) assignments per expert, ``dropped`` and ``assigned`` (since reset).
    """

    def __init__(self, cfg: MoEConfig) -> None:
        super().__init__()
        E, C, H = cfg.n_experts, cfg.d_model, cfg.expert_hidden
        self.n_experts, self.top_k, self.capacity_factor = E, cfg.top_k, cfg.capacity_factor
        self.router = nn.Linear(C, E, bias=False)
        self.w_fc = nn.Parameter(torch.empty(E, C, H))  # expert e: x (n, C) @ w_fc[e] -> (n, H)
        self.w_proj = nn.Parameter(torch.empty(E, H, C))  # (n, H) @ w_proj[e] -> (n, C)
        nn.init.normal_(self.w_fc, mean=0.0, std=0.02)
        nn.init.normal_(self.w_proj, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))  # like c_proj
        self.shared = MLP(cfg, hidden=H) if cfg.shared_expert else None
        for name in ("load", "dropped", "assigned"):
            self.register_buffer(name, torch.zeros(E if name == "load" else (), dtype=torch.long),
                                 persistent=False)
        self.lb_loss = self.z_loss = None

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (N, C) -> token (M,), gate (M,), kept (E,) per-expert sizes, counts (E,).

        ``token``/``gate`` list the kept assignments grouped by expert (M = N*k minus dropped);
        also sets ``lb_loss`` and ``z_loss``.
        """
        N, E, k = x.shape[0], self.n_experts, self.top_k
        logits = self.router(x)  # (N, E)
        probs = logits.softmax(dim=-1)  # (N, E)
        gate, expert = probs.topk(k, dim=-1)  # (N, k) each
        if k > 1:  # renormalize over the chosen k (k = 1 keeps p so the router gets gradient)
            gate = gate / gate.sum(dim=-1, keepdim=True)
        flat = expert.flatten()  # (N*k,) assignment a = n*k + j goes to expert flat[a]
        order = flat.argsort(stable=True)  # assignments grouped by expert, token order inside
        counts = torch.bincount(flat, minlength=E)  # (E,)
        token, gate = order // k, gate.flatten()[order]  # (N*k,) each
        kept = counts
        if self.capacity_factor > 0:
            cap = math.ceil(self.capacity_factor * N * k / E)
            start = counts.cumsum(0) - counts  # (E,) first sorted slot of each expert
            rank = torch.arange(N * k, device=x.device) - start.repeat_interleave(counts)  # (N*k,)
            keep = rank < cap
            token, gate, kept = token[keep], gate[keep], counts.clamp(max=cap)
        f = counts.to(probs.dtype) / (N * k)  # (E,) fraction of assignments per expert
        self.lb_loss = E * (f * probs.mean(dim=0)).sum()
        self.z_loss = torch.logsumexp(logits, dim=-1).square().mean()
        with torch.no_grad():
            self.load += counts
            self.assigned += N * k
            self.dropped += N * k - kept.sum()
        return token, gate, kept, counts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        x = x.reshape(B * T, C)  # (N, C)
        token, gate, kept, _ = self.route(x)
        xs = x[token]  # (M, C) gathered once, contiguous per expert
        outs = [F.gelu(xe @ w1) @ w2  # (n_e, C) -> (n_e, H) -> (n_e, C)
                for xe, w1, w2 in zip(xs.split(kept.tolist()), self.w_fc.unbind(0), self.w_proj.unbind(0))
                if xe.shape[0]]
        y = torch.cat(outs) * gate[:, None] if outs else xs  # (M, C)
        out = x.new_zeros(B * T, C).index_add_(0, token, y)  # (N, C); dropped tokens stay 0
        if self.shared is not None:
            out = out + self.shared(x)
        return out.view(B, T, C)


class MoEBlock(nn.Module):
    def __init__(self, cfg: MoEConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model, bias=False)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model, bias=False)
        self.moe = MoELayer(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.moe(self.ln_2(x))


class MoEGPT(GPT):
    """GPT with MoE blocks. After each forward: ``aux_losses`` {"load_balance", "z_loss"} (means
    over layers, with grad) and ``aux_loss`` = aux_loss_coef * lb + z_loss_coef * z."""

    block_cls = MoEBlock

    def __init__(self, cfg: MoEConfig) -> None:
        super().__init__(cfg)
        self.aux_losses: dict[str, torch.Tensor] = {}
        self.aux_loss: torch.Tensor | None = None

    def moe_layers(self) -> list[MoELayer]:
        return [b.moe for b in self.blocks]

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Like GPT.forward: (B, T) ids -> logits (B, T, V), mean CE (without the aux losses)."""
        logits, loss = super().forward(idx, targets)
        layers = self.moe_layers()
        self.aux_losses = {"load_balance": torch.stack([m.lb_loss for m in layers]).mean(),
                           "z_loss": torch.stack([m.z_loss for m in layers]).mean()}
        self.aux_loss = (self.cfg.aux_loss_coef * self.aux_losses["load_balance"]
                         + self.cfg.z_loss_coef * self.aux_losses["z_loss"])
        return logits, loss

    # --- routing statistics ----------------------------------------------------------------
    def reset_routing_stats(self) -> None:
        for m in self.moe_layers():
            for counter in (m.load, m.dropped, m.assigned):
                counter.zero_()

    def routing_stats(self) -> dict[str, float | list[list[float]]]:
        """Routing since the last reset, over all forwards.

        routing_load: (L, E) fraction of assignments per expert; routing_load_cv: coefficient of
        variation std/mean of the load over experts (0 = balanced), mean over layers;
        routing_entropy: load entropy / log E (1 = balanced), mean over layers;
        routing_dropped_frac: assignments dropped over capacity / all assignments.
        """
        layers = self.moe_layers()
        load = torch.stack([m.load for m in layers]).double()  # (L, E)
        assigned = sum(int(m.assigned) for m in layers)
        if assigned == 0:
            nan = float("nan")
            return {"routing_load_cv": nan, "routing_entropy": nan, "routing_dropped_frac": nan,
                    "routing_load": []}
        f = load / load.sum(dim=1, keepdim=True)  # (L, E)
        E = f.shape[1]
        cv = f.std(dim=1, unbiased=False) / f.mean(dim=1)  # (L,)
        ent = -(f * f.clamp_min(1e-30).log()).sum(dim=1) / math.log(E) if E > 1 else torch.ones(len(f))
        return {"routing_load_cv": cv.mean().item(), "routing_entropy": ent.mean().item(),
                "routing_dropped_frac": sum(int(m.dropped) for m in layers) / assigned,
                "routing_load": f.tolist()}
