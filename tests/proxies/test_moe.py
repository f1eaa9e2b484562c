"""The MoE proxy: sizes agree with ProxySpec, routing against a per-token reference, capacity
dropping, auxiliary losses, routing statistics, and a real trial through run_trial."""

import json
import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from mixopt.core.spec import MOE_PRESETS, ProxySpec
from mixopt.proxies.model import build_model
from mixopt.proxies.moe import MoEConfig, MoEGPT, MoELayer
from mixopt.proxies.train import run_trial

V = 64


@pytest.mark.parametrize("preset", list(MOE_PRESETS))
def test_the_model_holds_the_params_the_spec_counts(preset):
    spec = ProxySpec(preset=preset, seq_len=64, tokens=64 * 16)
    model = MoEGPT(MoEConfig.from_spec(spec, V))
    assert model.num_params(non_embedding=True) == spec.non_embedding_params()
    assert model.num_params(non_embedding=False) == spec.params(V)
    # active: every tensor but the routed experts a token skips (E - top_k per layer), counted on the module
    skipped = sum((m.n_experts - m.top_k) * (m.w_fc[0].numel() + m.w_proj[0].numel()) for m in model.moe_layers())
    assert model.num_params(non_embedding=True) - skipped == spec.active_non_embedding_params()
    assert model.num_params(non_embedding=False) - skipped == spec.active_params(V)
    assert spec.active_non_embedding_params() < spec.non_embedding_params()
    assert not any(n.endswith(".bias") for n, _ in model.named_parameters())
    assert model.lm_head.weight is model.wte.weight


def tiny_cfg(**kw):
    return MoEConfig(**({"vocab_size": V, "seq_len": 16, "n_layer": 2, "n_head": 2, "d_model": 32,
                         "n_experts": 4, "top_k": 2, "granularity": 2} | kw))


def layer(sharp=3.0, **kw):
    """A tiny MoE layer with a sharpened router, so routing is far from uniform."""
    torch.manual_seed(0)
    m = MoELayer(tiny_cfg(**kw))
    with torch.no_grad():
        m.router.weight.normal_(0.0, sharp)
        m.w_fc.normal_(0.0, 0.2), m.w_proj.normal_(0.0, 0.2)
    return m


def reference(m: MoELayer, x: torch.Tensor) -> torch.Tensor:
    """Naive per-token MoE (no capacity): loop over tokens and their top-k experts."""
    B, T, C = x.shape
    flat, out = x.reshape(-1, C), torch.zeros(B * T, C)
    for n in range(B * T):
        p = torch.softmax(flat[n] @ m.router.weight.T, dim=-1)  # (E,)
        g, e = p.topk(m.top_k)
        g = g / g.sum() if m.top_k > 1 else g
        for gj, ej in zip(g, e):
            out[n] += gj * (F.gelu(flat[n] @ m.w_fc[ej]) @ m.w_proj[ej])
        if m.shared is not None:
            out[n] += m.shared(flat[n])
    return out.view(B, T, C)


@pytest.mark.parametrize("kw", [{}, {"shared_expert": True, "n_experts": 8, "top_k": 3, "granularity": 4},
                                {"top_k": 1}])
def test_matches_per_token_reference_without_dropping(kw):
    m = layer(**kw)
    x = torch.randn(3, 7, 32)
    torch.testing.assert_close(m(x), reference(m, x), rtol=1e-5, atol=1e-5)
    assert int(m.dropped) == 0 and int(m.assigned) == 21 * m.top_k


def test_every_token_goes_to_exactly_top_k_distinct_experts():
    m = layer(n_experts=8, top_k=3)
    x = torch.randn(40, 32)
    token, gate, kept, counts = m.route(x)
    assert torch.equal(torch.bincount(token, minlength=40), torch.full((40,), 3))
    assert torch.equal(kept, counts) and int(kept.sum()) == 120
    expert = torch.arange(8).repeat_interleave(kept)  # assignments are grouped by expert
    pairs = set(zip(token.tolist(), expert.tolist()))
    assert len(pairs) == 120  # no token sent twice to one expert
    per_token = torch.zeros(40).index_add_(0, token, gate)
    torch.testing.assert_close(per_token, torch.ones(40))  # renormalized gates sum to 1
    assert counts.max() > counts.min()  # the sharpened router is unbalanced


def test_capacity_factor_drops_and_counts():
    full, capped = layer(), layer(capacity_factor=0.5)
    x = torch.randn(2, 16, 32)
    y_full, y_cap = full(x).view(32, 32), capped(x).view(32, 32)
    N, k, E = 32, 2, 4
    cap = math.ceil(0.5 * N * k / E)
    token, _, kept, counts = capped.route(x.view(N, 32))
    assert torch.equal(kept, counts.clamp(max=cap)) and len(token) == int(kept.sum())
    dropped = int((counts - kept).sum())
    assert dropped > 0 and int(capped.dropped) == 2 * dropped  # forward + route() above
    assert int(capped.assigned) == 2 * N * k
    n_kept = torch.bincount(token, minlength=N)
    assert torch.all(y_cap[n_kept == 0] == 0)  # fully dropped: expert output 0, residual only
    torch.testing.assert_close(y_cap[n_kept == k], y_full[n_kept == k])  # untouched tokens agree
    stats_model = MoEGPT(tiny_cfg(capacity_factor=0.5))
    stats_model(torch.randint(0, V, (4, 16)))
    assert 0 < stats_model.routing_stats()["routing_dropped_frac"] < 1


def test_load_balance_loss_is_one_at_uniform_routing_and_has_router_gradient():
    m = layer()
    with torch.no_grad():
        m.router.weight.zero_()  # p = 1/E for every token
    m.route(torch.randn(50, 32))
    assert m.lb_loss.item() == pytest.approx(1.0)
    skewed = layer()
    skewed.route(torch.randn(50, 32))
    assert skewed.lb_loss.item() > 1.0  # unbalanced routing costs more
    skewed.lb_loss.backward()
    g = skewed.router.weight.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    torch.manual_seed(0)
    model = MoEGPT(tiny_cfg(aux_loss_coef=0.02, z_loss_coef=0.0))
    with torch.no_grad():
        for blk in model.blocks:
            blk.moe.router.weight.zero_()
    model(torch.randint(0, V, (2, 16)))
    assert model.aux_loss.item() == pytest.approx(0.02)  # = coef * 1 at uniform routing


def test_z_loss_positive_with_gradient():
    m = layer()
    m.route(torch.randn(20, 32))
    assert m.z_loss.item() > 0
    m.z_loss.backward()
    assert m.router.weight.grad.abs().sum() > 0


def test_model_forward_aux_losses_and_stats():
    torch.manual_seed(0)
    model = MoEGPT(tiny_cfg())
    idx, targets = torch.randint(0, V, (2, 3, 16))
    logits, loss = model(idx, targets)
    assert logits.shape == (3, 16, V) and abs(loss.item() - math.log(V)) < 0.1  # CE only
    assert set(model.aux_losses) == {"load_balance", "z_loss"}
    expected = 0.01 * model.aux_losses["load_balance"] + 0.001 * model.aux_losses["z_loss"]
    torch.testing.assert_close(model.aux_loss, expected)
    (loss + model.aux_loss).backward()
    assert all(p.grad is not None for p in model.parameters())
    s = model.routing_stats()
    assert np.allclose(np.sum(s["routing_load"], axis=1), 1.0) and len(s["routing_load"]) == 2
    assert s["routing_load_cv"] >= 0 and 0 < s["routing_entropy"] <= 1 and s["routing_dropped_frac"] == 0
    for blk in model.blocks:  # a perfectly even load reads as CV 0, entropy 1
        blk.moe.load.fill_(10)
    s = model.routing_stats()
    assert s["routing_load_cv"] == pytest.approx(0) and s["routing_entropy"] == pytest.approx(1)
    model.reset_routing_stats()
    assert math.isnan(model.routing_stats()["routing_entropy"])


# --- run_trial -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    man = {"format": 1, "vocab_size": V, "dtype": "uint16", "eot": V - 1, "domains": {}}
    cycle = np.arange(6000) % 32
    (root / "cycle").mkdir()
    cycle[:5000].astype("uint16").tofile(root / "cycle" / "train.bin")
    cycle[5000:].astype("uint16").tofile(root / "cycle" / "val.bin")
    man["domains"]["cycle"] = {"train_tokens": 5000, "val_tokens": 1000}
    (root / "manifest.json").write_text(json.dumps(man))
    return root


def trial(corpus_dir, **spec_kw):
    spec = dict(preset="moe-0.1m", tokens=8 * 16 * 40, seq_len=16, batch_size=8, lr=1e-2,
                eval_batches=2, evals=2, seed=0) | spec_kw
    return run_trial({"trial_id": 1, "mixture": {"cycle": 1.0}, "spec": ProxySpec(**spec).to_dict(),
                      "corpus_dir": str(corpus_dir), "num_threads": 1, "device": "cpu"})


def test_moe_trial_trains_and_reports_routing(corpus_dir):
    r = trial(corpus_dir, capacity_factor=1.0)
    spec = ProxySpec(preset="moe-0.1m", seq_len=16)
    h = r.history
    assert h[0]["train_loss"] > h[-1]["train_loss"] and r.losses["cycle"] < 0.5 * math.log(V)
    assert r.metrics["params"] == spec.params(V) and r.metrics["active_params"] == spec.active_params(V)
    assert r.metrics["active_non_embedding_params"] == spec.active_non_embedding_params()
    assert r.metrics["flops_per_token"] == spec.flops_per_token(V)
    for entry in (h[0], h[-1], r.metrics):
        assert 0 <= entry["routing_load_cv"] and 0 < entry["routing_entropy"] <= 1
        assert 0 <= entry["routing_dropped_frac"] < 1
    assert r.metrics["routing_entropy"] == h[-1]["routing_entropy"]


def test_dense_trial_reports_active_equal_to_params(corpus_dir):
    r = trial(corpus_dir, preset="dense-0.1m", tokens=128, evals=1)
    m = r.metrics
    assert m["active_params"] == m["params"] and m["active_non_embedding_params"] == m["non_embedding_params"]
    assert not any(k.startswith("routing_") for k in m) and not any(
        k.startswith("routing_") for k in r.history[0])


def test_build_model_follows_arch():
    assert type(build_model(ProxySpec(preset="moe-0.1m"), V)) is MoEGPT
    assert not isinstance(build_model(ProxySpec(preset="dense-0.1m"), V), MoEGPT)
    with pytest.raises(ValueError, match="arch 'moe'"):
        MoEConfig.from_spec(ProxySpec(preset="dense-0.1m"), V)
