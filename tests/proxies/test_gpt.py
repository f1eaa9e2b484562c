"""The proxy GPT: sizes agree with ProxySpec, shapes, causality, init."""

import math

import pytest
import torch

from mixopt.core.spec import DENSE_PRESETS, ProxySpec
from mixopt.proxies.gpt import GPT, GPTConfig

V = 512


@pytest.mark.parametrize("preset", list(DENSE_PRESETS))
def test_the_model_holds_the_params_the_spec_counts(preset):
    spec = ProxySpec(preset=preset, seq_len=64, tokens=64 * 16)
    model = GPT(GPTConfig.from_spec(spec, V))
    assert model.num_params(non_embedding=True) == spec.non_embedding_params()
    assert model.num_params(non_embedding=False) == spec.params(V)
    assert spec.active_params(V) == spec.params(V)  # dense: every parameter is active
    # every linear and layernorm is bias-free; the head is tied to the embedding
    assert not any(n.endswith(".bias") for n, _ in model.named_parameters())
    assert model.lm_head.weight is model.wte.weight


def tiny(T=16):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=V, seq_len=T, n_layer=2, n_head=2, d_model=32))


def test_forward_shapes_and_initial_loss():
    model = tiny()
    idx = torch.randint(0, V, (3, 16))
    logits, loss = model(idx)
    assert logits.shape == (3, 16, V) and loss is None
    logits, loss = model(idx[:, :10], idx[:, 1:11])  # shorter than seq_len is fine
    assert logits.shape == (3, 10, V) and loss.shape == ()
    assert abs(loss.item() - math.log(V)) < 0.1  # near-uniform predictions at init
    with pytest.raises(ValueError, match="seq_len"):
        model(torch.randint(0, V, (1, 17)))


def test_causal_future_tokens_do_not_leak():
    model = tiny()
    a = torch.randint(0, V, (2, 16))
    b = a.clone()
    b[:, 10:] = (b[:, 10:] + 1) % V
    la, lb = model(a)[0], model(b)[0]
    torch.testing.assert_close(la[:, :10], lb[:, :10])
    assert not torch.allclose(la[:, 10:], lb[:, 10:])


def test_residual_projection_init_is_scaled():
    model = GPT(GPTConfig(vocab_size=V, seq_len=16, n_layer=8, n_head=2, d_model=128))
    std_proj = model.blocks[0].mlp.c_proj.weight.std().item()
    std_fc = model.blocks[0].mlp.c_fc.weight.std().item()
    assert std_proj == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert std_fc == pytest.approx(0.02, rel=0.05)


def test_config_rejects_indivisible_heads():
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_head=3, d_model=64)
