"""A pack: K independent proxies of ONE architecture as one module (horizontal fusion, HFTA-style).

Every parameter of the solo model (``proxies/gpt.py``, ``proxies/moe.py``) appears here with the
same name and a leading K axis: ``wte.weight`` (K, V, C), ``blocks.i.attn.c_attn.weight``
(K, 3C, C), ``blocks.i.ln_1.weight`` (K, C), MoE ``blocks.i.moe.w_fc`` (K, E, C, H) ... Members
never mix: each matmul is a ``torch.bmm`` over the K axis, attention runs on (K*B, nh, T, hs),
and MoE routes member k's tokens only to its own experts (global expert id k*E + e), so the
K*E experts of all members run in one grouped matmul. ``forward`` returns per-member mean
losses (K,); backpropagating their SUM gives each member exactly its solo gradient.

Member k of ``PackGPT.from_specs(specs, V)`` starts from the weights of the solo
``build_model(specs[k], V)`` after ``torch.manual_seed(specs[k].seed)`` (built one by one and
copied in), and ``member_state_dict(k)`` loads back into a solo model.

Why explicit bmm rather than ``torch.func.vmap(functional_call)`` over K solo models: measured
on CPU (1 thread, K=8, fwd+bwd, V=4096) vmap ran 12.6k tok/s on dense-0.1m and 4.1k on
dense-1m (the CPU flash-attention kernel has no vmap batching rule: a per-member fallback loop)
against 11.1k / 5.6k for bmm with the
same plain cross-entropy, and vmap cannot batch MoE's data-dependent routing at all.

The lm-head + cross-entropy is fused (``linear_cross_entropy``): logits are made block by
block and the gradients computed in the forward, so the (K, N, V) logits never exist at once.
On CPU that keeps each block in cache (the solo path spends ~1/3 of a dense-0.1m step in
log_softmax over V = 4096); on GPU it bounds memory for large K.

Shapes: K members, B batch, T seq len, N = B*T tokens per member, C d_model, V vocab,
E experts per member, H expert hidden, k top-k.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache

import torch
import torch.nn as nn
from torch.nn import functional as F

from mixopt.core.spec import ProxySpec
from mixopt.proxies.gpt import GPT, GPTConfig
from mixopt.proxies.model import build_model
from mixopt.proxies.moe import MoEConfig

DISPATCH = ("auto", "grouped", "loop", "dense")
_COEF_FIELDS = ("aux_loss_coef", "z_loss_coef")  # MoE config fields that may differ per member


# --- building blocks ------------------------------------------------------------------------
class PackLinear(nn.Module):
    """K bias-free linears: weight (K, out, in); (K, N, in) -> (K, N, out)."""

    def __init__(self, K: int, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(K, n_out, n_in))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.bmm(x, self.weight.transpose(1, 2))


class PackLayerNorm(nn.Module):
    """K bias-free LayerNorms: weight (K, C); (K, N, C) -> (K, N, C)."""

    def __init__(self, K: int, C: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(K, C))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:]) * self.weight[:, None, :]


class PackEmbedding(nn.Module):
    """K embedding tables: weight (K, n, C)."""

    def __init__(self, K: int, n: int, C: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(K, n, C))


class PackAttention(nn.Module):
    def __init__(self, K: int, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.scale = cfg.n_head, cfg.attn_scale  # muP: 1/sqrt(hs * width_mult)
        self.c_attn = PackLinear(K, cfg.d_model, 3 * cfg.d_model)
        self.c_proj = PackLinear(K, cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor, B: int, T: int) -> torch.Tensor:
        """x (K, N, C) with N = B*T -> (K, N, C); causal attention per member and sequence."""
        K, N, C = x.shape
        nh, hs = self.n_head, C // self.n_head
        q, k, v = (t.reshape(K * B, T, nh, hs).transpose(1, 2)  # (K*B, nh, T, hs)
                   for t in self.c_attn(x).split(C, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)  # (K*B, nh, T, hs)
        return self.c_proj(y.transpose(1, 2).reshape(K, N, C))


class PackMLP(nn.Module):
    def __init__(self, K: int, C: int, H: int) -> None:
        super().__init__()
        self.c_fc = PackLinear(K, C, H)
        self.c_proj = PackLinear(K, H, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))  # (K, N, C) -> (K, N, H) -> (K, N, C)


@cache
def grouped_mm_works(device_type: str) -> bool:
    """Whether ``F.grouped_mm`` runs forward and backward here (CUDA: bf16, sm80+; CPU: fp32)."""
    if not hasattr(F, "grouped_mm") or (device_type == "cuda" and not torch.cuda.is_available()):
        return False
    dt = torch.bfloat16 if device_type == "cuda" else torch.float32
    try:
        a = torch.randn(40, 32, device=device_type, dtype=dt, requires_grad=True)
        b = torch.randn(3, 32, 16, device=device_type, dtype=dt, requires_grad=True)
        y = F.grouped_mm(a, b, offs=torch.tensor([8, 8, 40], device=device_type, dtype=torch.int32))
        y.backward(torch.randn_like(y))
        return bool(torch.isfinite(b.grad).all())
    except Exception:
        return False


def _gmm(a: torch.Tensor, b: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
    """Grouped matmul: rows of a (M, I) in groups ending at offs (G,), weights b (G, I, O) -> (M, O).

    bf16 on CUDA (its kernels take bf16 only) and under ``torch.compile`` on CPU too (the op's
    fake-tensor rule accepts bf16 only, so a compiled CPU pack, as the GPU suite's CPU rehearsal
    traces it, runs the CUDA path's dtypes); eager CPU keeps fp32.
    """
    if a.is_cuda or torch.compiler.is_compiling():
        return F.grouped_mm(a.bfloat16(), b.bfloat16(), offs=offs)
    return F.grouped_mm(a, b.to(a.dtype), offs=offs)


class PackMoE(nn.Module):
    """K MoE layers (``MoELayer`` semantics) dispatched as K*E experts in one pass.

    dispatch: "grouped" one ``F.grouped_mm`` over the expert-sorted assignments (static shapes,
    no host sync); "loop" a Python loop over the K*E experts (host sync for the split sizes);
    "dense" every expert on every token of its member, gated (E/top_k x the FLOPs; static).
    Capacity dropping keeps static shapes: dropped assignments get gate 0.
    After each forward: lb_loss, z_loss (K,); buffers load (K, E), assigned, dropped (K,).
    """

    def __init__(self, K: int, cfg: MoEConfig, dispatch: str) -> None:
        super().__init__()
        E, C, H = cfg.n_experts, cfg.d_model, cfg.expert_hidden
        self.K, self.n_experts, self.top_k, self.capacity_factor = K, E, cfg.top_k, cfg.capacity_factor
        self.dispatch = dispatch
        self.router = PackLinear(K, C, E)
        self.w_fc = nn.Parameter(torch.empty(K, E, C, H))
        self.w_proj = nn.Parameter(torch.empty(K, E, H, C))
        self.shared = PackMLP(K, C, H) if cfg.shared_expert else None
        self.register_buffer("load", torch.zeros(K, E, dtype=torch.long), persistent=False)
        self.register_buffer("assigned", torch.zeros(K, dtype=torch.long), persistent=False)
        self.register_buffer("dropped", torch.zeros(K, dtype=torch.long), persistent=False)
        self.lb_loss = self.z_loss = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        K, N, C = x.shape
        E, k = self.n_experts, self.top_k
        dispatch = resolve_dispatch(self.dispatch, x.device)
        logits = self.router(x)  # (K, N, E)
        probs = logits.float().softmax(dim=-1)  # (K, N, E)
        gate, expert = probs.topk(k, dim=-1)  # (K, N, k)
        if k > 1:
            gate = gate / gate.sum(dim=-1, keepdim=True)
        counts = torch.zeros(K, E, dtype=torch.long, device=x.device).scatter_add_(
            1, expert.reshape(K, -1), torch.ones_like(expert).reshape(K, -1))  # (K, E)
        self.lb_loss = E * ((counts.to(probs.dtype) / (N * k)) * probs.mean(dim=1)).sum(-1)  # (K,)
        self.z_loss = torch.logsumexp(logits.float(), dim=-1).square().mean(-1)  # (K,)
        glob = (expert + E * torch.arange(K, device=x.device)[:, None, None]).flatten()  # (K*N*k,)
        order = glob.argsort(stable=True)  # grouped by member, then expert; token order inside
        token, gate = order // k, gate.flatten()[order]  # (M,) global token in K*N, gate
        sizes = counts.flatten()  # (K*E,)
        kept = counts
        if self.capacity_factor > 0:
            cap = math.ceil(self.capacity_factor * N * k / E)
            rank = torch.arange(len(order), device=x.device) - (sizes.cumsum(0) - sizes)[glob[order]]
            gate, kept = gate * (rank < cap), counts.clamp(max=cap)
        with torch.no_grad():
            self.load += counts
            self.assigned += N * k
            self.dropped += N * k - kept.sum(-1)
        flat = x.reshape(K * N, C)
        w_fc, w_proj = self.w_fc.flatten(0, 1), self.w_proj.flatten(0, 1)  # (K*E, C, H), (K*E, H, C)
        if dispatch == "dense":  # all E experts on all N tokens of the member, then gated
            xe = x[:, None].expand(K, E, N, C).reshape(K * E, N, C)
            ye = torch.bmm(F.gelu(torch.bmm(xe, w_fc.to(xe.dtype))), w_proj.to(xe.dtype)).view(K, E, N, C)
            combine = x.new_zeros(K * N, E, dtype=gate.dtype).index_put_(
                (token, glob[order] % E), gate).view(K, N, E)  # (K, N, E) gate of each kept pair
            out = torch.einsum("kenc,kne->knc", ye, combine.to(ye.dtype))
        else:
            xs = flat[token]  # (M, C) contiguous per (member, expert)
            if dispatch == "grouped":
                offs = sizes.cumsum(0).to(torch.int32)
                ys = _gmm(F.gelu(_gmm(xs, w_fc, offs)), w_proj, offs)  # (M, C)
            else:
                ys = torch.cat([F.gelu(xe @ w1) @ w2 for xe, w1, w2 in
                                zip(xs.split(sizes.tolist()), w_fc.unbind(0), w_proj.unbind(0))])
            out = flat.new_zeros(K * N, C).index_add_(0, token, (ys * gate[:, None]).to(flat.dtype)).view(K, N, C)
        if self.shared is not None:
            out = out + self.shared(x)
        return out


class PackBlock(nn.Module):
    def __init__(self, K: int, cfg: GPTConfig, dispatch: str) -> None:
        super().__init__()
        self.ln_1 = PackLayerNorm(K, cfg.d_model)
        self.attn = PackAttention(K, cfg)
        self.ln_2 = PackLayerNorm(K, cfg.d_model)
        if isinstance(cfg, MoEConfig):
            self.moe = PackMoE(K, cfg, dispatch)
        else:
            self.mlp = PackMLP(K, cfg.d_model, 4 * cfg.d_model)

    def forward(self, x: torch.Tensor, B: int, T: int) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), B, T)
        ffn = self.moe if hasattr(self, "moe") else self.mlp
        return x + ffn(self.ln_2(x))


# --- fused lm-head + cross-entropy --------------------------------------------------------
def _ce_blocks(h: torch.Tensor, w: torch.Tensor, targets: torch.Tensor, rows: int, members: int, grads: bool,
               weights: torch.Tensor | None = None, token_loss: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Summed CE of logits h @ w^T per member, block by block; optionally d/dh and d/dw of the sum.

    h (K, N, C), w (K, V, C), targets (K, N) -> loss sum (K,) fp32, gh (K, N, C), gw (K, V, C).
    ``weights`` (K, N): each token's CE (and its gradient) multiplied by its weight. ``token_loss``
    (K, N) fp32, when given, receives every token's unweighted CE (for per-domain batch losses).
    On CUDA the matmuls run in bf16 (fp32 softmax), like autocast.
    """
    K, N, _ = h.shape
    dt = torch.bfloat16 if h.is_cuda and torch.is_autocast_enabled("cuda") else h.dtype
    hc, wc = h.to(dt), w.to(dt)
    loss = torch.zeros(K, dtype=torch.float32, device=h.device)
    gh = torch.empty(h.shape, dtype=torch.float32, device=h.device) if grads else None
    gw = torch.zeros(w.shape, dtype=torch.float32, device=h.device) if grads else None
    for k0 in range(0, K, members):
        ks = slice(k0, k0 + members)
        for s0 in range(0, N, rows):
            hb, tb = hc[ks, s0:s0 + rows], targets[ks, s0:s0 + rows, None]  # (g, r, C), (g, r, 1)
            logits = torch.bmm(hb, wc[ks].transpose(1, 2)).float()  # (g, r, V)
            tl = logits.gather(2, tb)  # (g, r, 1) target logit
            m = logits.amax(-1, keepdim=True)
            p = logits.sub_(m).exp_()  # unnormalized probabilities, in place
            s = p.sum(-1, keepdim=True)
            ce = m + s.log() - tl  # (g, r, 1)
            if token_loss is not None:
                token_loss[ks, s0:s0 + rows] = ce[..., 0].detach()
            wb = None if weights is None else weights[ks, s0:s0 + rows, None].float()  # (g, r, 1)
            loss[ks] += (ce if wb is None else ce * wb).sum(dim=(1, 2))
            if grads:
                p.div_(s).scatter_add_(2, tb, torch.full(tb.shape, -1.0, device=p.device))  # softmax - onehot
                if wb is not None:
                    p.mul_(wb)
                p = p.to(dt)
                gh[ks, s0:s0 + rows] = torch.bmm(p, wc[ks])
                gw[ks] += torch.bmm(p.transpose(1, 2), hb).float()
    return loss, gh, gw


class _LinearCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, h: torch.Tensor, w: torch.Tensor,  # type: ignore[override]
                targets: torch.Tensor, rows: int, members: int, weights: torch.Tensor | None = None,
                token_loss: torch.Tensor | None = None) -> torch.Tensor:
        loss, gh, gw = _ce_blocks(h, w, targets, rows, members, True, weights, token_loss)
        n = h.shape[1]
        ctx.save_for_backward(gh.div_(n).to(h.dtype), gw.div_(n).to(w.dtype))
        return loss / n

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, g: torch.Tensor) -> tuple:  # type: ignore[override]
        gh, gw = ctx.saved_tensors
        g = g[:, None, None]
        return gh * g.to(gh.dtype), gw * g.to(gw.dtype), None, None, None, None, None


def linear_cross_entropy(h: torch.Tensor, w: torch.Tensor, targets: torch.Tensor,
                         rows: int | None = None, members: int | None = None, weights: torch.Tensor | None = None,
                         token_loss: torch.Tensor | None = None) -> torch.Tensor:
    """Per-member mean CE of logits = h @ w^T without materializing all logits.

    h (K, N, C), w (K, V, C), targets (K, N) int64 -> (K,) fp32. Blocks of ``members`` x ``rows``
    (default CPU: 1 member x ~2 MiB of fp32 logits, cache sized; CUDA: all rows, <= 1 GiB of logits).
    ``weights`` (K, N), normalized to mean 1 per member: the weighted mean sum_t w_t CE_t / sum_t w_t
    (DoReMi's reweighted objective). ``token_loss`` (K, N) fp32 receives every token's CE.
    """
    K, N, _ = h.shape
    V = w.shape[1]
    if rows is None:
        rows = N if h.is_cuda else max(32, min(N, 2**19 // V))
    if members is None:
        members = max(1, min(K, 2**28 // (N * V))) if h.is_cuda else 1
    if weights is not None:
        weights = weights.float() * (N / weights.float().sum(1, keepdim=True).clamp_min(1e-30))
    if torch.is_grad_enabled() and (h.requires_grad or w.requires_grad):
        return _LinearCE.apply(h, w, targets, rows, members, weights, token_loss)
    return _ce_blocks(h, w, targets, rows, members, False, weights, token_loss)[0] / N


# --- the pack -----------------------------------------------------------------------------
class PackGPT(nn.Module):
    """K proxies of one architecture (dense or MoE). See the module docstring.

    After a forward of an MoE pack, ``aux_loss`` (K,) is each member's weighted router loss.
    """

    def __init__(self, cfg: GPTConfig, K: int, dispatch: str = "auto",
                 aux_coefs: Sequence[tuple[float, float]] | None = None) -> None:
        super().__init__()
        if dispatch not in DISPATCH:
            raise ValueError(f"dispatch: {dispatch!r}; allowed: {', '.join(DISPATCH)}")
        self.cfg, self.K = cfg, K
        self.moe = isinstance(cfg, MoEConfig)
        self.dispatch = dispatch
        self.wte = PackEmbedding(K, cfg.vocab_size, cfg.d_model)
        self.wpe = PackEmbedding(K, cfg.seq_len, cfg.d_model)
        self.blocks = nn.ModuleList(PackBlock(K, cfg, dispatch) for _ in range(cfg.n_layer))
        self.ln_f = PackLayerNorm(K, cfg.d_model)
        coefs = aux_coefs or [(getattr(cfg, "aux_loss_coef", 0.0), getattr(cfg, "z_loss_coef", 0.0))] * K
        self.register_buffer("aux_coef", torch.tensor(coefs, dtype=torch.float32).reshape(K, 2), persistent=False)
        self.aux_loss: torch.Tensor | None = None

    # construction from solo models
    @staticmethod
    def config_of(spec: ProxySpec, vocab_size: int) -> GPTConfig:
        """The model config of a spec (``MoEConfig`` for an MoE spec)."""
        return GPTConfig.from_spec(spec, vocab_size) if spec.arch != "moe" else MoEConfig.from_spec(spec, vocab_size)

    @classmethod
    def from_specs(cls, specs: Sequence[ProxySpec], vocab_size: int, dispatch: str = "auto") -> PackGPT:
        """Member k = ``build_model(specs[k], vocab_size)`` right after ``torch.manual_seed(specs[k].seed)``.

        Specs must give one architecture (MoE aux/z-loss coefficients may differ per member).
        """
        cfgs = [cls.config_of(s, vocab_size) for s in specs]
        base = _arch_key(cfgs[0])
        for i, c in enumerate(cfgs):
            if _arch_key(c) != base:
                raise ValueError(f"pack member {i} has another architecture: {c} vs {cfgs[0]}")
        coefs = [tuple(getattr(c, f, 0.0) for f in _COEF_FIELDS) for c in cfgs]
        pack = cls(cfgs[0], len(specs), dispatch, coefs)
        for k, spec in enumerate(specs):
            torch.manual_seed(spec.seed)
            pack.load_member(k, build_model(spec, vocab_size))
        return pack

    @torch.no_grad()
    def load_member(self, k: int, model: GPT) -> None:
        """Copy a solo model's weights into member k (names match; the tied lm_head is wte)."""
        solo = dict(model.named_parameters())
        for name, p in self.named_parameters():
            p[k].copy_(solo[name])

    def member_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's weights under the solo model's names (``GPT.load_state_dict`` takes it)."""
        sd = {name: p[k].detach().clone() for name, p in self.named_parameters()}
        return sd | {"lm_head.weight": sd["wte.weight"]}

    # forward
    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (K, B, T) int64 -> final hidden states (K, B*T, C) after ln_f (and muP's output multiplier)."""
        K, B, T = idx.shape
        if T > self.cfg.seq_len:
            raise ValueError(f"sequence length {T} exceeds the model's seq_len {self.cfg.seq_len}")
        V = self.cfg.vocab_size
        ids = idx + V * torch.arange(K, device=idx.device)[:, None, None]  # member k's rows of (K*V, C)
        x = F.embedding(ids, self.wte.weight.flatten(0, 1)) + self.wpe.weight[:, None, :T]  # (K, B, T, C)
        x = x.reshape(K, B * T, -1)
        for block in self.blocks:
            x = block(x, B, T)
        if self.moe:
            lb = torch.stack([b.moe.lb_loss for b in self.blocks]).mean(0)  # (K,)
            z = torch.stack([b.moe.z_loss for b in self.blocks]).mean(0)
            self.aux_loss = self.aux_coef[:, 0] * lb + self.aux_coef[:, 1] * z
        x = self.ln_f(x)
        # muP's output multiplier (mup_output_mult / width_mult) on the logits h @ wte^T, applied to h (the same product)
        return x if self.cfg.output_mult == 1.0 else x * self.cfg.output_mult

    def forward(self, idx: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None,
                token_loss: torch.Tensor | None = None) -> torch.Tensor:
        """idx, targets (K, B, T) int64 -> per-member mean cross-entropy (K,) fp32 (aux loss apart).

        ``weights`` (K, B, T): per-token loss weights (a weighted mean per member); ``token_loss`` (K, B*T)
        fp32, when given, receives each token's CE (see :func:`linear_cross_entropy`)."""
        K = idx.shape[0]
        return linear_cross_entropy(self.hidden(idx), self.wte.weight, targets.reshape(K, -1),
                                    weights=None if weights is None else weights.reshape(K, -1), token_loss=token_loss)

    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (K, B, T) -> logits (K, B, T, V) (materialized; for tests and sampling)."""
        K, B, T = idx.shape
        return torch.bmm(self.hidden(idx), self.wte.weight.transpose(1, 2)).view(K, B, T, -1)

    # routing statistics (MoE)
    def reset_routing_stats(self) -> None:
        for b in self.blocks:
            for t in (b.moe.load, b.moe.assigned, b.moe.dropped):
                t.zero_()

    def routing_stats(self) -> list[dict[str, float]]:
        """Per member, like ``MoEGPT.routing_stats`` (load CV, normalized entropy, dropped fraction)."""
        load = torch.stack([b.moe.load for b in self.blocks], 1).double().cpu()  # (K, L, E)
        assigned = sum(b.moe.assigned for b in self.blocks).cpu()  # (K,)
        dropped = sum(b.moe.dropped for b in self.blocks).cpu()
        f = load / load.sum(-1, keepdim=True).clamp_min(1)  # (K, L, E)
        E = f.shape[-1]
        cv = f.std(-1, unbiased=False) / f.mean(-1)
        ent = -(f * f.clamp_min(1e-30).log()).sum(-1) / math.log(E) if E > 1 else torch.ones(f.shape[:2])
        return [{"routing_load_cv": cv[k].mean().item(), "routing_entropy": ent[k].mean().item(),
                 "routing_dropped_frac": dropped[k].item() / max(1, assigned[k].item())} for k in range(self.K)]


def _arch_key(cfg: GPTConfig) -> tuple:
    """The config without the per-member MoE loss coefficients."""
    d = dict(vars(cfg))
    for f in _COEF_FIELDS:
        d.pop(f, None)
    return type(cfg).__name__, tuple(sorted(d.items()))


def resolve_dispatch(dispatch: str, device: torch.device) -> str:
    """"auto" -> grouped where ``F.grouped_mm`` works on this device, else loop (CPU) / dense (CUDA)."""
    if dispatch != "auto":
        return dispatch
    if grouped_mm_works(device.type):
        return "grouped"
    return "dense" if device.type == "cuda" else "loop"


def set_dispatch(pack: PackGPT, dispatch: str) -> None:
    """Switch every MoE layer's dispatch mode (for benchmarks and tests)."""
    pack.dispatch = dispatch
    for b in pack.blocks:
        if hasattr(b, "moe"):
            b.moe.dispatch = dispatch
