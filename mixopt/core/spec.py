"""ProxySpec: what one proxy trial trains, and the arithmetic of its size and cost.

The arithmetic here (parameters, active parameters, FLOPs per token) is the single source of
truth; the torch models in ``proxies/gpt.py`` (dense) and ``proxies/moe.py`` (mixture of
experts) report the same numbers and tests check they agree. Keeping it torch-free lets the
driver budget FLOPs without importing torch.

Dense or MoE is decided by the preset name: ``arch`` may be left out (it is derived from the
preset); if given, it must agree with the preset. The MoE fields (``n_experts`` ...
``capacity_factor``) left out take the MoE preset's values; on a dense spec they must stay
unset (or at their neutral values 0 / False, which is what a resolved dense spec holds).
After construction every field holds a concrete value (no ``None``), so ``to_dict()`` round-
trips through YAML and MLflow params.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mixopt.core.errors import ConfigError

# name -> (n_layer, n_head, d_model). Non-embedding params ~ 12 * n_layer * d_model**2.
DENSE_PRESETS: dict[str, tuple[int, int, int]] = {
    # tiny rungs for CPU-sized ladders and transfer checks (bench/bench_transfer.sh --size cpu)
    "dense-3k": (1, 2, 16),  # ~3.1k non-embedding params
    "dense-6k": (2, 2, 16),  # ~6.2k
    "dense-14k": (2, 2, 24),  # ~13.9k
    "dense-37k": (3, 2, 32),  # ~37k
    "dense-0.1m": (2, 2, 64),  # ~0.10M non-embedding params
    "dense-0.5m": (4, 4, 96),  # ~0.44M
    "dense-1m": (5, 4, 128),  # ~0.98M
    "dense-3m": (6, 6, 192),  # ~2.7M
    "dense-10m": (8, 5, 320),  # ~9.8M
    # a width family (2 layers, 4 heads): the dense backbones of moe-w64/128/256 (muP's lr transfer)
    "dense-w64": (2, 4, 64),  # ~0.10M
    "dense-w128": (2, 4, 128),  # ~0.39M
    "dense-w256": (2, 4, 256),  # ~1.6M
}

# name -> (n_layer, n_head, d_model, n_experts E, top_k, granularity G, shared_expert).
# Expert FFN hidden = 4 * d_model / G. Each preset's ACTIVE non-embedding params are close to
# the dense preset of the same backbone (top_k + shared = G), so ``moe-1m`` vs ``dense-1m``
# compares equal per-token compute; total params are ~E/G times larger in the FFNs.
MOE_PRESETS: dict[str, tuple[int, int, int, int, int, int, bool]] = {
    "moe-0.1m": (2, 2, 64, 4, 2, 2, False),  # ~0.10M active / ~0.16M total non-embedding
    "moe-1m": (5, 4, 128, 8, 2, 2, False),  # ~0.99M active / ~2.96M total
    "moe-1m-fg": (5, 4, 128, 16, 3, 4, True),  # fine-grained + shared: ~0.99M / ~3.1M
    "moe-3m": (6, 6, 192, 8, 2, 2, False),  # ~2.7M active / ~8.0M total
    # a width family (2 layers, 4 heads, 8 experts, top-2) for muP's lr transfer (bench/bench_mup.py)
    "moe-w64": (2, 4, 64, 8, 2, 2, False),  # ~0.10M active / ~0.30M total
    "moe-w128": (2, 4, 128, 8, 2, 2, False),  # ~0.40M active / ~1.2M total
    "moe-w256": (2, 4, 256, 8, 2, 2, False),  # ~1.6M active / ~4.7M total
}
MOE_DEFAULT_AUX_LOSS_COEF = 0.01  # Switch Transformer load-balancing coefficient
MOE_DEFAULT_Z_LOSS_COEF = 0.001  # ST-MoE router z-loss coefficient
ARCHS = ("dense", "moe")
PARAMETRIZATIONS = ("standard", "mup")
#: muP's base width: width_mult = d_model / MUP_BASE_WIDTH, so a d_model-64 proxy has the same init and lr
#: multipliers in both parametrizations; only its logits are multiplied by MUP_OUTPUT_MULT (``mixopt.proxies.gpt``)
MUP_BASE_WIDTH = 64
#: muP's read-out multiplier at the base width (its "alpha_output", a base-width hyperparameter): the logits
#: are multiplied by mup_output_mult / width_mult. Tuned at d_model 64 alone, as muP prescribes (MoE proxies
#: of ``bench/bench_mup.py`` on the pip corpus: 1, 2, 4, 8, 16 -> best 4), then checked for transfer to 128, 256
MUP_OUTPUT_MULT = 4.0


def upgrade_stored_spec(d: dict[str, Any]) -> dict[str, Any]:
    """A spec mapping read back from a store (MLflow params, a study's saved config): one written before
    ``mup_output_mult`` existed trained muP with the read-out multiplier 1, not today's default; say so,
    so that it is not taken for a spec of today's default. Other mappings are returned as they are."""
    if d.get("parametrization") == "mup" and "mup_output_mult" not in d:
        return {**d, "mup_output_mult": 1.0}
    return d


_MOE_FIELDS = ("n_experts", "top_k", "granularity", "shared_expert", "aux_loss_coef", "z_loss_coef",
               "capacity_factor")
_DERIVED_FROM_PRESET = ("arch",) + _MOE_FIELDS


def preset_arch(preset: str) -> str | None:
    """'dense' or 'moe' for a known preset name, else None."""
    return "dense" if preset in DENSE_PRESETS else "moe" if preset in MOE_PRESETS else None


def merge_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``{**base, **overrides}`` for ``ProxySpec.to_dict()`` dicts, preset-aware.

    When ``overrides`` changes the preset, the fields that the old preset decided (``arch`` and
    the MoE fields) are reset to "from the new preset" unless ``overrides`` sets them, so a
    ladder rung ``{preset: moe-1m}`` over a dense base proxy (or the reverse) just works. Likewise a
    rung that turns a muP base standard drops the base's read-out multiplier (a muP key) unless it sets it.
    """
    merged = {**base, **overrides}
    if "preset" in overrides and overrides["preset"] != base.get("preset"):
        for k in _DERIVED_FROM_PRESET:
            if k not in overrides:
                merged[k] = None
    if overrides.get("parametrization") == "standard" and "mup_output_mult" not in overrides:
        merged["mup_output_mult"] = MUP_OUTPUT_MULT
    return merged


#: arguments of ``mixopt.online.make_mixer`` that are not the mixer's options (the engine sets them)
RESERVED_ONLINE_KEYS = frozenset({"name", "domains", "start", "study"})

#: ``online_options`` keys that are the engine's, not the mixer's: how many validation sequences per domain an
#: evaluation of the mixer scores (``eval_sequences``, or ``eval_batches`` whole batches), the first of the
#: trials' own fixed ones
ENGINE_ONLINE_KEYS = ("eval_sequences", "eval_batches")

#: the engine's default ``eval_sequences`` (at most the trials' ``eval_batches * batch_size``): at Aioli's
#: published defaults on 6 domains its evaluations took 18 % of a run's wall time with 16 sequences and 11 %
#: with 8, while the mixture each round ends on moved by at most 0.0035 (L1) between 8 and 64 sequences
#: (docs/online.md, "What an evaluation costs")
ONLINE_EVAL_SEQUENCES = 8

#: ProxySpec fields that may differ between the members of one pack (each member has its own)
PER_MEMBER = ("seed", "lr", "warmup_frac", "min_lr_frac", "weight_decay", "aux_loss_coef", "z_loss_coef", "online",
              "online_options")


@dataclass(frozen=True)
class ProxySpec:
    """A proxy model and its training budget (what a trial trains; on a ladder, its rung).

    Attributes:
        arch: "dense" or "moe"; derived from the preset when left out (None), else must agree.
        preset: named architecture from ``DENSE_PRESETS`` or ``MOE_PRESETS`` (sets n_layer,
            n_head, d_model and, for MoE, the expert layout below).
        tokens: training tokens (the token budget), e.g. 2_000_000.
        seq_len: context length T in tokens.
        batch_size: sequences per optimizer step (B); tokens per step = B * T.
        lr: peak learning rate (AdamW); warmup_frac of steps warm up linearly, then cosine
            decay to ``min_lr_frac * lr``.
        eval_batches: fixed held-out batches per domain for validation loss.
        evals: how many times validation loss is measured during training (last = final).
        seed: seeds model init and batch sampling.
        n_experts: MoE only: routed experts E per layer (None = preset's).
        top_k: MoE only: experts each token is sent to (None = preset's).
        granularity: MoE only: G; expert FFN hidden = 4 * d_model / G (None = preset's).
        shared_expert: MoE only: one always-on expert of the same size (None = preset's).
        aux_loss_coef: MoE only: weight of the Switch load-balancing loss E * sum_e f_e * P_e,
            averaged over layers (None = 0.01; 0 disables).
        z_loss_coef: MoE only: weight of the router z-loss mean(logsumexp(logits)^2), averaged
            over layers (None = 0.001; 0 disables).
        capacity_factor: MoE only: each expert takes at most ceil(cf * tokens * top_k / E)
            assignments per forward, the rest are dropped (their expert output is zero);
            None or 0 = no capacity limit, nothing dropped.
        online: an online mixer that changes the mixture while the proxy trains ("aioli", "doremi",
            "static"; ``mixopt.online``), starting from the trial's mixture; "" (default): the mixture
            stays fixed.
        online_options: the mixer's options (a mapping; kept as canonical JSON text).
        parametrization: "standard" (GPT-2 init, one lr) or "mup" (Maximal Update Parametrization for
            Adam, Tensor Programs V, and its MoE form, arXiv 2508.09752: hidden weights' init variance
            and Adam lr / ``width_mult``, output logits x ``mup_output_mult / width_mult``, attention
            1/d; ``width_mult`` = d_model / ``MUP_BASE_WIDTH``); see ``mixopt.proxies.gpt``.
        mup_output_mult: muP only: the logits' multiplier at the base width (muP's base-width
            hyperparameter; default ``MUP_OUTPUT_MULT`` = 4, tuned at d_model 64).

    Dense specs hold the neutral values 0 / False / 0.0 in the MoE fields after construction.

    Example:
        >>> s = ProxySpec(preset="dense-0.1m", tokens=1_000_000)
        >>> s.non_embedding_params()
        98624
        >>> m = ProxySpec(preset="moe-1m")
        >>> (m.arch, m.n_experts, m.top_k, m.active_non_embedding_params())
        ('moe', 8, 2, 989568)
    """

    arch: str | None = None
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
    n_experts: int | None = None
    top_k: int | None = None
    granularity: int | None = None
    shared_expert: bool | None = None
    aux_loss_coef: float | None = None
    z_loss_coef: float | None = None
    capacity_factor: float | None = None
    online: str | None = ""  # None (a param read back as YAML) means ""
    online_options: Any = ""
    parametrization: str = "standard"
    mup_output_mult: float = MUP_OUTPUT_MULT

    def __post_init__(self) -> None:
        self._resolve()
        self._canonical_online()
        self.validate()

    def _canonical_online(self, where: str = "proxy") -> None:
        """``online`` a name or ""; ``online_options`` a mapping (or its JSON text) -> canonical JSON ("" when empty)."""
        if self.online is None:
            object.__setattr__(self, "online", "")
        if not isinstance(self.online, str):
            raise ConfigError(f"{where}.online: {self.online!r} must be an online mixer's name (aioli, doremi, static)")
        opts = self.online_options
        if opts is None or opts == "":
            opts = {}
        elif isinstance(opts, str):
            try:
                opts = json.loads(opts)
            except ValueError:
                raise ConfigError(f"{where}.online_options: {opts!r} is not a mapping of the mixer's options") from None
        if not isinstance(opts, dict):
            raise ConfigError(f"{where}.online_options: {opts!r} must be a mapping of the mixer's options")
        if opts and not self.online:
            raise ConfigError(f"{where}.online_options: given without proxy.online; allowed: set online too")
        taken = sorted(set(opts) & RESERVED_ONLINE_KEYS)
        if taken:
            raise ConfigError(f"{where}.online_options.{taken[0]}: set by the engine (the trial's mixture and id), "
                              "not an option; allowed: the mixer's own options, eval_sequences and eval_batches")
        object.__setattr__(self, "online_options", json.dumps(opts, sort_keys=True) if opts else "")

    def online_config(self) -> dict[str, Any]:
        """The online mixer's options as a mapping ({} without a mixer)."""
        return json.loads(self.online_options) if self.online_options else {}

    def online_eval_sequences(self, where: str = "proxy") -> int:
        """Validation sequences per domain of one online-mixer evaluation in the engine (``online_options``'
        ``eval_sequences``, or ``eval_batches`` x ``batch_size``; default :data:`ONLINE_EVAL_SEQUENCES`), at most
        the trials' ``eval_batches * batch_size`` fixed ones. Raises ConfigError naming the key when wrong."""
        opts, avail = self.online_config(), self.eval_batches * self.batch_size
        given = [k for k in ENGINE_ONLINE_KEYS if k in opts]
        if len(given) > 1:
            raise ConfigError(f"{where}.online_options: eval_sequences and eval_batches both given; allowed: one "
                              "(eval_batches counts whole batches of batch_size sequences)")
        if not given:
            return min(ONLINE_EVAL_SEQUENCES, avail)
        key, val = given[0], opts[given[0]]
        if isinstance(val, bool) or not isinstance(val, int) or val < 1:
            raise ConfigError(f"{where}.online_options.{key}: {val!r} must be an integer >= 1")
        n = val if key == "eval_sequences" else val * self.batch_size
        if n > avail:
            raise ConfigError(f"{where}.online_options.{key}: {val!r} asks for {n} validation sequences per domain; "
                              f"allowed: at most the trials' fixed ones, {where}.eval_batches x batch_size = "
                              f"{self.eval_batches} x {self.batch_size} = {avail}")
        return n

    def _resolve(self, where: str = "proxy") -> None:
        """Fill ``arch`` and the MoE fields left as None from the preset (frozen: via object)."""
        if not isinstance(self.preset, str) or preset_arch(self.preset) is None:
            raise ConfigError(f"{where}.preset: unknown preset {self.preset!r}; "
                              f"allowed: {', '.join([*DENSE_PRESETS, *MOE_PRESETS])}")
        arch = preset_arch(self.preset)
        if self.arch is not None and self.arch not in ARCHS:
            raise ConfigError(f"{where}.arch: {self.arch!r} is not available; allowed: 'dense', 'moe'")
        if self.arch is not None and self.arch != arch:
            same = [*(DENSE_PRESETS if self.arch == "dense" else MOE_PRESETS)]
            raise ConfigError(f"{where}.arch: {self.arch!r} does not match preset {self.preset!r} "
                              f"(a {arch} preset); leave arch out or pick a {self.arch} preset: "
                              f"{', '.join(same)}")
        if arch == "dense":
            fill = dict(n_experts=0, top_k=0, granularity=0, shared_expert=False, aux_loss_coef=0.0,
                        z_loss_coef=0.0, capacity_factor=0.0)
            for k, neutral in fill.items():
                val = getattr(self, k)
                if val is not None and val != neutral:
                    raise ConfigError(f"{where}.{k}: {val!r} is only meaningful for arch 'moe' "
                                      f"(preset {self.preset!r} is dense); allowed: leave it out")
        else:
            _, _, _, e, k, g, shared = MOE_PRESETS[self.preset]
            fill = dict(n_experts=e, top_k=k, granularity=g, shared_expert=shared,
                        aux_loss_coef=MOE_DEFAULT_AUX_LOSS_COEF, z_loss_coef=MOE_DEFAULT_Z_LOSS_COEF,
                        capacity_factor=0.0)
        object.__setattr__(self, "arch", arch)
        for k, default in fill.items():
            if getattr(self, k) is None:
                object.__setattr__(self, k, default)

    def validate(self, where: str = "proxy") -> None:
        if preset_arch(self.preset) is None or self.arch != preset_arch(self.preset):
            self._resolve(where)  # raises the preset / arch error
        if self.arch == "moe":
            self._validate_moe(where)
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
        if self.parametrization not in PARAMETRIZATIONS:
            raise ConfigError(f"{where}.parametrization: {self.parametrization!r}; allowed: standard, mup")
        m = self.mup_output_mult
        if not isinstance(m, (int, float)) or isinstance(m, bool) or not (math.isfinite(m) and m > 0):
            raise ConfigError(f"{where}.mup_output_mult: {m!r} must be a positive finite number")
        if self.parametrization != "mup" and m != MUP_OUTPUT_MULT:
            raise ConfigError(f"{where}.mup_output_mult: {m!r} is muP's read-out multiplier; set it only with "
                              "parametrization: mup")
        if self.lr <= 0:
            raise ConfigError(f"{where}.lr: must be > 0")

    def _validate_moe(self, where: str) -> None:
        for key in ("n_experts", "top_k", "granularity"):
            val = getattr(self, key)
            if not isinstance(val, int) or isinstance(val, bool) or val < 1:
                raise ConfigError(f"{where}.{key}: {val!r} must be a positive integer")
        if self.top_k > self.n_experts:
            raise ConfigError(f"{where}.top_k: {self.top_k} exceeds n_experts = {self.n_experts}; "
                              f"allowed: 1..{self.n_experts}")
        if (4 * self.d_model) % self.granularity:
            raise ConfigError(f"{where}.granularity: {self.granularity} does not divide the dense FFN "
                              f"width 4*d_model = {4 * self.d_model}; allowed: a divisor of it")
        if not isinstance(self.shared_expert, bool):
            raise ConfigError(f"{where}.shared_expert: {self.shared_expert!r} must be true or false")
        for key, hi in (("aux_loss_coef", 10.0), ("z_loss_coef", 10.0), ("capacity_factor", 64.0)):
            val = getattr(self, key)
            if not isinstance(val, (int, float)) or isinstance(val, bool) or not (0.0 <= val <= hi):
                raise ConfigError(f"{where}.{key}: {val!r} must be a number in [0, {hi}]"
                                  + (" (0 = no capacity limit)" if key == "capacity_factor" else ""))

    # --- architecture -------------------------------------------------------------------
    @property
    def _shape(self) -> tuple:
        return DENSE_PRESETS.get(self.preset) or MOE_PRESETS[self.preset]

    @property
    def n_layer(self) -> int:
        return self._shape[0]

    @property
    def n_head(self) -> int:
        return self._shape[1]

    @property
    def d_model(self) -> int:
        return self._shape[2]

    @property
    def expert_hidden(self) -> int:
        """FFN width of one (routed or shared) expert: 4 * d_model / granularity; dense: 4 * d."""
        return 4 * self.d_model // (self.granularity if self.arch == "moe" else 1)

    @property
    def width_mult(self) -> float:
        """muP's width multiplier d_model / MUP_BASE_WIDTH (1.0 under the standard parametrization)."""
        return self.d_model / MUP_BASE_WIDTH if self.parametrization == "mup" else 1.0

    @property
    def output_mult(self) -> float:
        """The logits' multiplier: ``mup_output_mult / width_mult`` under muP, 1.0 under the standard one."""
        return self.mup_output_mult / self.width_mult if self.parametrization == "mup" else 1.0

    @property
    def activation_ratio(self) -> float:
        """Active / total routed experts, (top_k + shared) / (E + shared); 1.0 for dense."""
        if self.arch != "moe":
            return 1.0
        s = int(self.shared_expert)
        return (self.top_k + s) / (self.n_experts + s)

    def with_preset(self, preset: str, **changes: Any) -> ProxySpec:
        """A copy on another preset (either arch); fields the old preset decided are re-derived."""
        d = merge_overrides(self.to_dict(), {"preset": preset, **changes})
        return ProxySpec(**d)

    @property
    def steps(self) -> int:
        """Optimizer steps: tokens // (batch_size * seq_len)."""
        return self.tokens // (self.batch_size * self.seq_len)

    def _block_params(self, experts: int) -> int:
        """One block with ``experts`` FFN experts counted (all E for total, top_k for active).

        Dense: qkv 3d² + proj d² + MLP 8d² + two bias-free LayerNorms 2d.
        MoE: the MLP becomes a router d*E + (experts + shared) * 2*d*h, h = 4d/G.
        """
        d = self.d_model
        if self.arch != "moe":
            return 12 * d * d + 2 * d
        ffn = (experts + int(self.shared_expert)) * 2 * d * self.expert_hidden
        return 4 * d * d + d * self.n_experts + ffn + 2 * d

    def non_embedding_params(self) -> int:
        """All parameters except the embeddings (every expert counted); plus final LN d."""
        return self.n_layer * self._block_params(self.n_experts) + self.d_model

    def active_non_embedding_params(self) -> int:
        """Non-embedding params one token uses: attention, router, top_k + shared experts, LNs.

        Equals ``non_embedding_params()`` for dense specs.
        """
        if self.arch != "moe":
            return self.non_embedding_params()
        return self.n_layer * self._block_params(self.top_k) + self.d_model

    def _embedding_params(self, vocab_size: int) -> int:
        return vocab_size * self.d_model + self.seq_len * self.d_model

    def params(self, vocab_size: int) -> int:
        """Total params: non-embedding + tied token embedding V*d + learned positions T*d."""
        return self.non_embedding_params() + self._embedding_params(vocab_size)

    def active_params(self, vocab_size: int) -> int:
        """Params a token uses: active non-embedding + embeddings (= ``params`` for dense)."""
        return self.active_non_embedding_params() + self._embedding_params(vocab_size)

    def flops_per_token(self, vocab_size: int) -> int:
        """Training FLOPs per token (forward + backward), PaLM/nanoGPT estimate.

        6 * (active non-embedding params + lm-head V*d) + 12 * n_layer * d_model * seq_len
        (attention). Routing overhead (softmax, top-k, sort, gather/scatter) is not counted.
        """
        n = self.active_non_embedding_params() + vocab_size * self.d_model
        return 6 * n + 12 * self.n_layer * self.d_model * self.seq_len

    def pack_key(self) -> tuple[tuple[str, Any], ...]:
        """The fields the members of a pack share (all but :data:`PER_MEMBER`): trials whose
        specs have equal keys can be trained as one batched pack (``mixopt.proxies.pack_train``)."""
        return tuple((k, v) for k, v in self.to_dict().items() if k not in PER_MEMBER)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "proxy") -> ProxySpec:
        fields = {f.name for f in dataclasses.fields(cls)}
        for k in d:
            if k not in fields:
                raise ConfigError(f"{where}.{k}: unknown key; allowed: {', '.join(sorted(fields))}")
        return cls(**d)


def rung_index(spec: ProxySpec | None, ladder: Sequence[ProxySpec]) -> int | None:
    """Index of ``spec`` in a scale ladder (None: no spec, no ladder, or not on it)."""
    if spec is None or not ladder:
        return None
    try:
        return list(ladder).index(spec)
    except ValueError:
        return None

