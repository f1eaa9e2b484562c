"""ProxySpec arithmetic (dense and MoE), arch derivation, MoE field validation, round trips."""

import pytest
import yaml

from mixopt.core.errors import ConfigError
from mixopt.core.spec import DENSE_PRESETS, MOE_PRESETS, ProxySpec, merge_overrides
from mixopt.run.config import from_dict

V = 4096


def test_dense_numbers_unchanged_and_moe_fields_neutral():
    s = ProxySpec(preset="dense-1m")
    assert (s.arch, s.non_embedding_params(), s.params(V)) == ("dense", 984448, 984448 + V * 128 + 128 * 128)
    assert s.active_non_embedding_params() == s.non_embedding_params() and s.active_params(V) == s.params(V)
    assert s.flops_per_token(V) == 6 * (984448 + V * 128) + 12 * 5 * 128 * 128
    assert (s.n_experts, s.top_k, s.granularity, s.shared_expert) == (0, 0, 0, False)
    assert (s.aux_loss_coef, s.z_loss_coef, s.capacity_factor) == (0.0, 0.0, 0.0)
    assert s.activation_ratio == 1.0 and ProxySpec() == ProxySpec(arch="dense")


def by_hand(L, d, E, k, G, shared, T=128):
    """Independent count: attention 4d², router dE, experts 2dh each, 2 LNs; final LN d."""
    h = 4 * d // G
    block = lambda n: 4 * d * d + d * E + (n + shared) * 2 * d * h + 2 * d  # noqa: E731
    total, active = L * block(E) + d, L * block(k) + d
    flops = 6 * (active + V * d) + 12 * L * d * T
    return total, active, flops


@pytest.mark.parametrize("preset", list(MOE_PRESETS))
def test_moe_arithmetic(preset):
    s = ProxySpec(preset=preset)
    L, nh, d, E, k, G, shared = MOE_PRESETS[preset]
    total, active, flops = by_hand(L, d, E, k, G, int(shared))
    assert s.arch == "moe" and (s.n_experts, s.top_k, s.granularity, s.shared_expert) == (E, k, G, shared)
    assert s.non_embedding_params() == total and s.active_non_embedding_params() == active
    emb = V * d + 128 * d
    assert s.params(V) == total + emb and s.active_params(V) == active + emb
    assert s.flops_per_token(V) == flops
    assert s.expert_hidden == 4 * d // G
    assert s.activation_ratio == pytest.approx((k + shared) / (E + shared))
    # each MoE preset matches the dense preset on its backbone within 2% of active params
    dense = next(ProxySpec(preset=p) for p, sh in DENSE_PRESETS.items() if sh == (L, nh, d))
    assert s.active_non_embedding_params() == pytest.approx(dense.non_embedding_params(), rel=0.02)


def test_moe_overrides_change_total_or_active():
    base = ProxySpec(preset="moe-1m")
    more = ProxySpec(preset="moe-1m", n_experts=16)
    assert more.non_embedding_params() > base.non_embedding_params()
    assert more.active_non_embedding_params() == base.active_non_embedding_params() + 5 * 128 * 8  # router
    top1 = ProxySpec(preset="moe-1m", top_k=1)
    assert top1.active_non_embedding_params() < base.active_non_embedding_params()
    assert top1.flops_per_token(V) < base.flops_per_token(V)
    assert ProxySpec(preset="moe-1m", n_experts=8, aux_loss_coef=0.01) == base  # same as preset values


@pytest.mark.parametrize("kw, needle", [
    ({"arch": "moe", "preset": "dense-1m"}, r"proxy\.arch: 'moe' does not match preset 'dense-1m'.*moe-1m"),
    ({"arch": "dense", "preset": "moe-1m"}, r"proxy\.arch: 'dense' does not match preset 'moe-1m'.*dense-1m"),
    ({"arch": "sparse"}, r"proxy\.arch: 'sparse' is not available; allowed: 'dense', 'moe'"),
    ({"preset": "moe-7b"}, r"proxy\.preset: unknown preset 'moe-7b'; allowed: .*dense-1m.*moe-1m"),
    ({"n_experts": 8}, r"proxy\.n_experts: 8 is only meaningful for arch 'moe'.*allowed: leave it out"),
    ({"capacity_factor": 1.25}, r"proxy\.capacity_factor: 1\.25 is only meaningful for arch 'moe'"),
    ({"preset": "moe-1m", "top_k": 9}, r"proxy\.top_k: 9 exceeds n_experts = 8; allowed: 1\.\.8"),
    ({"preset": "moe-1m", "n_experts": 0}, r"proxy\.n_experts: 0 must be a positive integer"),
    ({"preset": "moe-1m", "granularity": 3}, r"proxy\.granularity: 3 does not divide .* 512; allowed"),
    ({"preset": "moe-1m", "capacity_factor": -1.0}, r"proxy\.capacity_factor: -1\.0 must be a number in \[0"),
    ({"preset": "moe-1m", "aux_loss_coef": "big"}, r"proxy\.aux_loss_coef: 'big' must be a number"),
    ({"preset": "moe-1m", "shared_expert": 1}, r"proxy\.shared_expert: 1 must be true or false"),
])
def test_validation_errors(kw, needle):
    with pytest.raises(ConfigError, match=needle):
        ProxySpec(**kw)


def test_round_trips_through_yaml_and_mlflow_style_strings():
    for s in (ProxySpec(preset="moe-1m-fg", capacity_factor=1.5), ProxySpec(preset="dense-0.5m")):
        d = s.to_dict()
        assert None not in d.values()  # MLflow params are str(v); 'None' would not parse back
        assert from_dict(ProxySpec, yaml.safe_load(yaml.safe_dump(d)), "proxy") == s
        assert from_dict(ProxySpec, {k: yaml.safe_load(str(v)) for k, v in d.items()}, "proxy") == s
    with pytest.raises(ConfigError, match=r"ladder\[0\]\.top_k"):
        from_dict(ProxySpec, {"preset": "moe-1m", "top_k": 20}, "ladder[0]")


def test_changing_preset_rederives_arch_and_moe_fields():
    dense, moe = ProxySpec(preset="dense-1m", seq_len=64), ProxySpec(preset="moe-1m-fg", seq_len=64)
    assert dense.with_preset("moe-1m-fg") == moe and moe.with_preset("dense-1m") == dense
    assert dense.with_preset("moe-1m", top_k=1).top_k == 1
    merged = merge_overrides(moe.to_dict(), {"preset": "moe-3m"})
    assert ProxySpec(**merged).n_experts == MOE_PRESETS["moe-3m"][3]
    same = merge_overrides(moe.to_dict(), {"tokens": 2048})  # preset unchanged: keep every field
    assert ProxySpec(**same) == ProxySpec(preset="moe-1m-fg", seq_len=64, tokens=2048)


def test_a_rung_that_turns_a_mup_base_standard_drops_its_read_out_multiplier():
    base = ProxySpec(preset="dense-w64", parametrization="mup", mup_output_mult=8.0).to_dict()
    std = ProxySpec(**merge_overrides(base, {"preset": "dense-w128", "parametrization": "standard"}))
    assert std.parametrization == "standard" and std.output_mult == 1.0
    assert ProxySpec(**merge_overrides(base, {"preset": "dense-w128"})).mup_output_mult == 8.0  # still muP: kept
    with pytest.raises(ConfigError, match="set it only with parametrization: mup"):  # set by the rung itself
        ProxySpec(**merge_overrides(base, {"parametrization": "standard", "mup_output_mult": 2.0}))
