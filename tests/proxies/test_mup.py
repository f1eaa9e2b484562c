"""muP in the one-model reference (the engine's equality with it is in test_pack.py)."""

import math

import pytest
import torch

from mixopt.core.errors import ConfigError
from mixopt.core.spec import MUP_BASE_WIDTH, ProxySpec
from mixopt.proxies.gpt import mup_multipliers
from mixopt.proxies.model import build_model, make_optimizer
from mixopt.proxies.train import train_step

V = 64


def _built(preset: str, param: str, seed: int = 0):
    spec = ProxySpec(preset=preset, seq_len=16, batch_size=2, tokens=64, parametrization=param)
    torch.manual_seed(seed)
    return spec, build_model(spec, V)


def test_spec_parametrization_and_width_mult():
    assert ProxySpec(preset="moe-w256", parametrization="mup").width_mult == 256 / MUP_BASE_WIDTH == 4.0
    assert ProxySpec(preset="moe-w256").width_mult == 1.0  # standard: no multipliers anywhere
    with pytest.raises(ConfigError, match="proxy.parametrization: 'mu'; allowed: standard, mup"):
        ProxySpec(parametrization="mu")
    assert ProxySpec(preset="moe-w64").pack_key() != ProxySpec(preset="moe-w64", parametrization="mup").pack_key()


def test_mup_at_the_base_width_is_the_standard_model():
    (_, std), (_, mup) = _built("moe-w64", "standard"), _built("moe-w64", "mup")
    assert all(torch.equal(a, b) for a, b in zip(std.state_dict().values(), mup.state_dict().values()))
    idx = torch.randint(0, V, (2, 16))
    assert torch.equal(std(idx, idx)[1], mup(idx, idx)[1])


@pytest.mark.parametrize("preset", ["moe-w128", "dense-3k"])
def test_mup_scales_hidden_init_router_and_lr_from_the_same_draws(preset):
    (spec, std), (_, mup) = _built(preset, "standard"), _built(preset, "mup")
    m = spec.with_preset(preset, parametrization="mup").width_mult
    assert m == spec.d_model / 64 and m != 1.0
    sd = dict(std.named_parameters())
    for name, p in mup.named_parameters():
        init, lr = mup_multipliers(name, m)
        torch.testing.assert_close(p, sd[name] * init, rtol=1e-6, atol=0)  # the same RNG draws, rescaled
        if name.endswith(("c_attn.weight", "c_fc.weight", "moe.w_proj")):
            assert (init, lr) == (1 / math.sqrt(m), 1 / m), name  # hidden: variance ~ 1/fan_in, Adam lr / m
        elif name.endswith("router.weight"):
            assert (init, lr) == (1 / m, 1 / m)  # an output layer of fan-out E (muP for MoE)
        elif name.startswith(("wte", "wpe")) or p.dim() == 1:
            assert (init, lr) == (1.0, 1.0), name  # embeddings (tied read-out) and LayerNorm gains: unscaled
    assert mup.cfg.attn_scale == pytest.approx(1 / math.sqrt(spec.d_model // spec.n_head * m))
    x = torch.randint(0, V, (2, 16))
    mspec = spec.with_preset(preset, parametrization="mup")
    opt = make_optimizer(mup, mspec)
    train_step(mup, opt, x, x, 0.01)
    got = {(g["weight_decay"] > 0, g["lr_mult"]): g["lr"] for g in opt.param_groups}
    assert got[(True, 1.0)] == pytest.approx(0.01) and got[(False, 1.0)] == pytest.approx(0.01)
    assert got[(True, 1 / m)] == pytest.approx(0.01 / m)


def test_mup_logits_are_the_read_out_over_width_mult():
    spec, mup = _built("dense-3k", "mup")
    x = torch.randint(0, V, (2, 16))
    with torch.no_grad():
        h = mup.wte(x) + mup.wpe(mup.pos[:16])
        for b in mup.blocks:
            h = b(h)
        want = mup.lm_head(mup.ln_f(h)) / (spec.d_model / 64)
        torch.testing.assert_close(mup(x)[0], want)
