"""muP in the one-model reference (the engine's equality with it is in test_pack.py)."""

import math
import re
from dataclasses import replace

import pytest
import torch

from mixopt.core.errors import ConfigError
from mixopt.core.spec import MUP_BASE_WIDTH, MUP_OUTPUT_MULT, ProxySpec
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


def test_mup_at_the_base_width_is_the_standard_model_but_its_read_out_multiplier():
    (_, std), (spec, mup) = _built("moe-w64", "standard"), _built("moe-w64", "mup")
    assert all(torch.equal(a, b) for a, b in zip(std.state_dict().values(), mup.state_dict().values()))
    idx = torch.randint(0, V, (2, 16))
    assert spec.output_mult == MUP_OUTPUT_MULT == 4.0
    torch.testing.assert_close(mup(idx, idx)[0], std(idx, idx)[0] * MUP_OUTPUT_MULT)
    # alpha = 1: the standard model exactly; the multiplier is alpha / width_mult at any width
    one = replace(spec, mup_output_mult=1.0)
    torch.manual_seed(0)
    assert torch.equal(std(idx, idx)[1], build_model(one, V)(idx, idx)[1])
    assert ProxySpec(preset="moe-w256", parametrization="mup", mup_output_mult=2.0).output_mult == 0.5
    assert ProxySpec(preset="moe-w256").output_mult == 1.0


def test_specs_stored_before_the_read_out_multiplier_read_back_as_alpha_1():
    from mixopt.study.mlflow_storage import _spec_from_params

    old = {"proxy.preset": "moe-w128", "proxy.parametrization": "mup"}  # params of a muP trial before the key
    assert _spec_from_params(old).mup_output_mult == 1.0
    assert _spec_from_params({**old, "proxy.mup_output_mult": "4.0"}).mup_output_mult == 4.0
    assert _spec_from_params({"proxy.preset": "moe-w128"}) == ProxySpec(preset="moe-w128")


@pytest.mark.parametrize("kw, needle", [
    ({"parametrization": "mup", "mup_output_mult": 0}, "proxy.mup_output_mult: 0 must be a positive finite number"),
    ({"parametrization": "mup", "mup_output_mult": float("nan")}, "proxy.mup_output_mult: nan must be"),
    ({"mup_output_mult": 2.0}, "proxy.mup_output_mult: 2.0 is muP's read-out multiplier; set it only with "
                               "parametrization: mup"),
])
def test_mup_output_mult_refused_with_one_line(kw, needle):
    with pytest.raises(ConfigError, match=re.escape(needle)):
        ProxySpec(preset="moe-w64", **kw)


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


def test_mup_logits_are_the_read_out_times_alpha_over_width_mult():
    spec, mup = _built("dense-3k", "mup")
    x = torch.randint(0, V, (2, 16))
    with torch.no_grad():
        h = mup.wte(x) + mup.wpe(mup.pos[:16])
        for b in mup.blocks:
            h = b(h)
        want = mup.lm_head(mup.ln_f(h)) * MUP_OUTPUT_MULT / (spec.d_model / 64)
        torch.testing.assert_close(mup(x)[0], want)


def _coordinate_change(preset: str, param: str, steps: int = 5, lr: float = 0.01) -> tuple[float, float]:
    """Mean |change| of the last block's output and of the logits on a fixed batch after ``steps`` steps
    of the product's optimizer and step (muP's "coordinate check", Tensor Programs V, Fig. 5)."""
    spec = ProxySpec(preset=preset, seq_len=32, batch_size=8, tokens=32 * 8 * steps, parametrization=param)
    torch.manual_seed(0)
    model = build_model(spec, 512)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 512, (8, 32), generator=g)
    y = (x * 7 + 3) % 512  # a learnable map
    out = {}
    model.blocks[-1].register_forward_hook(lambda mod, i, o: out.__setitem__("h", o.detach().clone()))
    with torch.no_grad():
        logits0 = model(x)[0]
    h0 = out["h"]
    opt = make_optimizer(model, spec)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        train_step(model, opt, x, y, lr)
    with torch.no_grad():
        logits1 = model(x)[0]
    return (out["h"] - h0).abs().mean().item(), (logits1 - logits0).abs().mean().item()


@pytest.mark.parametrize("arch", ["dense", "moe"])
def test_mup_coordinate_check_updates_do_not_grow_with_width(arch):
    """The check muP is built to pass: after a few Adam steps at one lr, the change of the hidden states and
    logits stays the same size from width 64 to 256 under muP, and grows with width under the standard
    parametrization (measured, last block: dense 0.27 -> 15.7 under standard, 0.16-0.25 under muP; MoE
    0.14 -> 9.8 and 0.12-0.15; logits under muP 1.1-1.8 dense, 1.2-2.0 MoE)."""
    widths = (64, 128, 256)
    for param, ok in (("mup", lambda r: r < 2.5), ("standard", lambda r: r > 5)):
        changes = [_coordinate_change(f"{arch}-w{w}", param) for w in widths]
        hidden, logits = zip(*changes)
        ratio = max(hidden) / min(hidden)
        assert ok(ratio), (param, hidden, logits)
        if param == "mup":
            assert max(logits) / min(logits) < 2.5, logits
