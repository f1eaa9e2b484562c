"""The batched engine: a pack of K proxies reproduces K solo runs (init, gradients, training,
evaluation), clips and steps each member on its own, masks diverging members, samples each
member's own mixture; MoE packs against a per-token reference.

Tolerance: a pack member's losses equal its solo ``run_trial`` within 2e-4 nats for dense
(fp32; the pack's bmm, LayerNorm-then-gain and blocked lm-head cross-entropy round differently
from the solo mm, LayerNorm and log_softmax; the AdamW kernel is the same; observed ~2e-6 after
40 steps) and 2e-3 for MoE (top-k and capacity routing are discontinuous, so a rounding
difference can move one assignment; observed ~3e-4).
"""

import ctypes
import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from mixopt.core.errors import MixtureError, TrialError
from mixopt.core.mixture import Mixture
from mixopt.core.spec import ProxySpec
from mixopt.core.worker import TrialResult
from mixopt.data.corpus import Corpus
from mixopt.proxies import pack as pack_mod
from mixopt.proxies.model import build_model
from mixopt.proxies.moe import MoELayer
from mixopt.proxies.pack import PackGPT, PackMoE, linear_cross_entropy, set_dispatch
from mixopt.proxies.pack_train import (
    PackAdamW,
    PackTrainer,
    clip_per_member,
    reuse_large_allocations,
    run_one,
    run_pack,
)
from mixopt.proxies.train import MixtureSampler, run_trial


def _load(name: str):
    """A sibling test module, for its helpers and fixtures (tests are not a package)."""
    spec = importlib.util.spec_from_file_location(f"_pack_helpers_{name}", Path(__file__).with_name(f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_train, _moe = _load("test_train"), _load("test_moe")
corpus_dir, request, V = _train.corpus_dir, _train.request, _train.V  # tiny corpus: cycle, noise, held, empty
TOL, MOE_TOL = 2e-4, 2e-3
MIXES = [{"cycle": 1.0}, {"noise": 1.0}, {"cycle": 0.3, "noise": 0.3, "held": 0.4}]


def reqs(corpus_dir, preset="dense-0.1m", mixes=MIXES, seeds=(0, 1, 2), **kw):
    return [request(corpus_dir, m, seed=s, preset=preset, **kw) | {"trial_id": i}
            for i, (m, s) in enumerate(zip(mixes, seeds))]


@pytest.fixture(scope="module")
def solo(corpus_dir):
    return [run_trial(r) for r in reqs(corpus_dir)]


def assert_same_run(pack_res: TrialResult, solo_res: TrialResult, tol: float = TOL) -> None:
    assert isinstance(pack_res, TrialResult), pack_res
    assert set(solo_res.metrics) <= set(pack_res.metrics)  # every run_trial metric, plus pack_size / pack_tokens_per_s
    for k in ("steps", "tokens", "params", "non_embedding_params", "active_params", "flops_per_token"):
        assert pack_res.metrics[k] == solo_res.metrics[k], k
    assert pack_res.device == solo_res.device
    assert pack_res.losses == pytest.approx(solo_res.losses, abs=tol)
    for hp, hs in zip(pack_res.history, solo_res.history, strict=True):
        assert hp["step"] == hs["step"] and hp["tokens"] == hs["tokens"]
        assert hp["train_loss"] == pytest.approx(hs["train_loss"], abs=tol)
        assert hp["losses"] == pytest.approx(hs["losses"], abs=tol)


# --- the module ---------------------------------------------------------------------------
@pytest.mark.parametrize("preset, param", [("dense-0.1m", "standard"), ("moe-0.1m", "standard"),
                                           ("dense-3k", "mup"), ("moe-w128", "mup")])
def test_init_is_solo_init_and_gradients_are_solo_gradients(preset, param):
    specs = [ProxySpec(preset=preset, seq_len=16, batch_size=4, tokens=64, seed=s, parametrization=param)
             for s in (3, 5, 7)]
    pack = PackGPT.from_specs(specs, V)
    solos = []
    for s in specs:
        torch.manual_seed(s.seed)
        solos.append(build_model(s, V))
    for k, m in enumerate(solos):
        assert all(torch.equal(v, m.state_dict()[n]) for n, v in pack.member_state_dict(k).items())
    idx, tgt = torch.randint(0, V, (2, 3, 4, 16))
    for dispatch in ["grouped", "loop", "dense"] if pack.moe else ["auto"]:
        set_dispatch(pack, dispatch)
        pack.zero_grad()
        ce = pack(idx, tgt)
        (ce + (pack.aux_loss if pack.moe else 0)).sum().backward()
        with torch.no_grad():
            pack_logits = pack.logits(idx)
        for k, m in enumerate(solos):
            m.zero_grad()
            logits, loss = m(idx[k], tgt[k])
            (loss + (m.aux_loss if pack.moe else 0)).backward()
            torch.testing.assert_close(ce[k], loss, rtol=0, atol=1e-5)
            torch.testing.assert_close(pack_logits[k], logits, rtol=0, atol=1e-5)
            if pack.moe:
                torch.testing.assert_close(pack.aux_loss[k], m.aux_loss, rtol=0, atol=1e-6)
            grads = dict(m.named_parameters())
            for name, p in pack.named_parameters():
                torch.testing.assert_close(p.grad[k], grads[name].grad, rtol=1e-4, atol=1e-7, msg=name)


def test_member_weights_equal_solo_seeded_build_exactly():
    specs = [ProxySpec(preset="moe-0.1m", seq_len=16, batch_size=4, tokens=64, seed=s) for s in (11, 0)]
    pack = PackGPT.from_specs(specs, V)
    for k, s in enumerate(specs):
        torch.manual_seed(s.seed)
        solo = build_model(s, V)
        sd = pack.member_state_dict(k)
        assert sd.keys() == solo.state_dict().keys()
        assert all(torch.equal(sd[n], v) for n, v in solo.state_dict().items())
        solo.load_state_dict(sd)  # and the export loads back


def test_fused_linear_cross_entropy_matches_materialized_logits():
    h = torch.randn(3, 37, 8, requires_grad=True)
    w = torch.randn(3, 50, 8, requires_grad=True)
    t = torch.randint(0, 50, (3, 37))
    ref = F.cross_entropy(torch.bmm(h, w.transpose(1, 2)).flatten(0, 1), t.flatten(), reduction="none").view(3, -1)
    (ref.mean(1) * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    gh, gw = h.grad, w.grad
    h.grad = w.grad = None
    got = linear_cross_entropy(h, w, t, rows=5, members=2)  # blocks that do not divide K or N
    (got * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    torch.testing.assert_close(got, ref.mean(1))
    torch.testing.assert_close(h.grad, gh)
    torch.testing.assert_close(w.grad, gw)
    with torch.no_grad():
        torch.testing.assert_close(linear_cross_entropy(h, w, t), ref.mean(1))


@pytest.mark.parametrize("kw", [{}, {"shared_expert": True, "n_experts": 8, "top_k": 3, "granularity": 4},
                                {"top_k": 1}, {"capacity_factor": 1.0}])
@pytest.mark.parametrize("dispatch", ["grouped", "loop", "dense"])
def test_moe_pack_matches_per_token_reference(kw, dispatch):
    cfg = _moe.tiny_cfg(**kw)
    solos = []
    for s in range(3):  # members with different, sharpened routers
        torch.manual_seed(s)
        m = MoELayer(cfg)
        with torch.no_grad():
            m.router.weight.normal_(0.0, 3.0), m.w_fc.normal_(0.0, 0.2), m.w_proj.normal_(0.0, 0.2)
        solos.append(m)
    packed = PackMoE(3, cfg, dispatch)
    with torch.no_grad():
        for name, p in packed.named_parameters():
            p.copy_(torch.stack([dict(m.named_parameters())[name] for m in solos]))
    x = torch.randn(3, 21, 32)
    y = packed(x)
    for k, m in enumerate(solos):
        solo_y = m(x[k].view(3, 7, 32)).view(21, 32)
        torch.testing.assert_close(y[k], solo_y, rtol=1e-5, atol=1e-5)
        if not kw.get("capacity_factor"):  # the per-token reference has no capacity limit
            torch.testing.assert_close(y[k], _moe.reference(m, x[k].view(3, 7, 32)).view(21, 32), rtol=1e-5, atol=1e-5)
        assert int(packed.dropped[k]) == int(m.dropped) and int(packed.assigned[k]) == int(m.assigned)
        assert torch.equal(packed.load[k], m.load)
        torch.testing.assert_close(packed.lb_loss[k], m.lb_loss)
        torch.testing.assert_close(packed.z_loss[k], m.z_loss)
    if kw.get("capacity_factor"):
        assert int(packed.dropped.sum()) > 0


# --- the optimizer and clipping -------------------------------------------------------------
def test_pack_adamw_is_per_member_torch_adamw():
    torch.manual_seed(0)
    w0, g0 = torch.randn(3, 4, 5), torch.randn(4, 3, 4, 5)  # params (K=3, 4, 5), grads for 4 steps
    n0, gn = torch.randn(3, 5), torch.randn(4, 3, 5)  # a 1-D-per-member param: no weight decay
    lrs, wds = [1e-3, 3e-2, 0.0], [0.1, 0.0, 0.5]
    w, n = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(n0.clone())
    opt = PackAdamW([w, n], wds)
    for s in range(4):
        w.grad, n.grad = g0[s].clone(), gn[s].clone()
        opt.step(lrs, [0, 1, 2])
    masked = [t.clone() for t in (w, n)]
    w.grad, n.grad = g0[0].clone(), gn[0].clone()
    opt.step(lrs, [0, 2])  # member 1 masked out: untouched
    assert torch.equal(w[1], masked[0][1]) and torch.equal(n[1], masked[1][1])
    for k in range(3):
        ws, ns = torch.nn.Parameter(w0[k].clone()), torch.nn.Parameter(n0[k].clone())
        ref = torch.optim.AdamW([{"params": [ws], "weight_decay": wds[k]}, {"params": [ns], "weight_decay": 0.0}],
                                lr=lrs[k], betas=(0.9, 0.95), fused=True)
        for s in range(4 + (k != 1)):
            ws.grad, ns.grad = g0[s % 4, k].clone(), gn[s % 4, k].clone()
            ref.step()
        assert torch.equal(w[k], ws) and torch.equal(n[k], ns)  # the same fused kernel: bit for bit


def test_clipping_is_per_member():
    g = [torch.randn(3, 4, 5), torch.randn(3, 7)]
    g[0][1] *= 1e6  # member 1 explodes
    g[0][2] *= 1e-3  # member 2 is small: left alone
    g[1][2] *= 1e-3
    before = [t.clone() for t in g]
    norms = clip_per_member(g)
    after = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.flatten(1), dim=1) for t in g]), dim=0)
    assert after[1] == pytest.approx(1.0, rel=1e-5) and norms[1] > 1e5
    assert after[0] == pytest.approx(min(1.0, float(norms[0])), rel=1e-5)
    assert torch.equal(g[0][2], before[0][2]) and torch.equal(g[1][2], before[1][2])


def test_member_with_huge_gradients_does_not_change_another_members_update():
    specs = [ProxySpec(preset="dense-0.1m", seq_len=16, batch_size=4, tokens=64 * 4, seed=s, warmup_frac=0.0)
             for s in (0, 1)]
    x, y = torch.randint(0, V, (2, 2, 4, 16))
    calm, wild = (PackTrainer(specs, V, torch.device("cpu")) for _ in range(2))
    wild.pack.wte.weight.register_hook(lambda g: g * torch.tensor([1e8, 1.0])[:, None, None])  # member 0 blows up
    for t in (calm, wild):
        t.step(x, y), t.step(x, y)
    for name, p in wild.pack.named_parameters():
        assert torch.equal(p[1], dict(calm.pack.named_parameters())[name][1]), name  # member 1 bit-identical
    assert not torch.equal(wild.pack.wte.weight[0], calm.pack.wte.weight[0])


# --- run_pack against run_trial -----------------------------------------------------------
def test_pack_reproduces_solo_runs(corpus_dir, solo):
    for p, s in zip(run_pack(reqs(corpus_dir)), solo, strict=True):
        assert_same_run(p, s)
        m = p.metrics
        assert m["pack_size"] == 3 and m["pack_tokens_per_s"] == pytest.approx(3 * m["tokens_per_s"])


def test_moe_pack_reproduces_solo_runs(corpus_dir):
    rs = reqs(corpus_dir, preset="moe-0.1m", seeds=(4, 5, 6), capacity_factor=1.0)
    rs[1]["spec"] = ProxySpec(**(rs[1]["spec"] | {"aux_loss_coef": 0.1, "lr": 5e-3})).to_dict()  # per member
    for p, r in zip(run_pack(rs), rs, strict=True):
        s = run_trial(r)
        assert_same_run(p, s, MOE_TOL)
        for k in ("routing_load_cv", "routing_entropy", "routing_dropped_frac"):
            assert p.metrics[k] == pytest.approx(s.metrics[k], abs=0.02), k


@pytest.mark.parametrize("preset, tol", [("dense-3k", TOL), ("moe-w128", MOE_TOL)])
def test_mup_pack_reproduces_solo_runs(corpus_dir, preset, tol):
    """muP (width_mult 0.25 and 2): per-parameter lr multipliers, scaled init, logits and attention, per-member lr."""
    rs = reqs(corpus_dir, preset=preset, seeds=(4, 5, 6), parametrization="mup")
    rs[1]["spec"] = ProxySpec(**(rs[1]["spec"] | {"lr": 3e-3})).to_dict()
    for p, r in zip(run_pack(rs), rs, strict=True):
        assert_same_run(p, run_trial(r), tol)


def test_diverging_and_broken_members_are_masked_and_reported(corpus_dir, solo, monkeypatch):
    real = pack_mod.build_model

    def poisoned(spec, vocab):  # the member seeded 13 gets a NaN weight, as in test_train
        m = real(spec, vocab)
        if spec.seed == 13:
            with torch.no_grad():
                m.wpe.weight[3, 0] = float("nan")
        return m

    monkeypatch.setattr(pack_mod, "build_model", poisoned)
    rs = reqs(corpus_dir)
    bad_lr = request(corpus_dir, {"cycle": 0.5, "noise": 0.5}, seed=0, lr=1.0, warmup_frac=0.0)
    rs = [rs[0], request(corpus_dir, {"cycle": 1.0}, seed=13), bad_lr, rs[1],
          request(corpus_dir, {"cycle": 0.9, "empty": 0.1}), rs[2]]
    for i, r in enumerate(rs):
        r["trial_id"] = 10 + i
    out = run_pack(rs)
    assert [o.trial_id for o in out] == [10, 11, 12, 13, 14, 15]
    assert [type(o).__name__ for o in out] == ["TrialResult", "TrialFailure", "TrialFailure", "TrialResult",
                                                "TrialFailure", "TrialResult"]
    assert out[1].kind == "diverged" and out[1].reason.startswith("diverged at step 0: loss=nan")
    assert out[2].kind == "diverged"
    assert "above ln(vocab)" in out[2].reason or out[2].reason.startswith("diverged at step")
    assert out[4].kind == "data" and "'empty'" in out[4].reason and "0 tokens" in out[4].reason
    for o, s in zip([out[0], out[3], out[5]], solo):
        assert_same_run(o, s)


def test_run_one_is_a_pack_of_one_that_raises_like_run_trial(corpus_dir, solo, monkeypatch):
    one = run_one(reqs(corpus_dir)[0])  # what the executors run for a single trial
    assert_same_run(one, solo[0])
    assert one.metrics["pack_size"] == 1
    with pytest.raises(TrialError, match="'empty'.*0 tokens"):
        run_one(request(corpus_dir, {"cycle": 0.9, "empty": 0.1}))
    with pytest.raises(MixtureError, match="unknown domain"):  # the same exception types as run_trial
        run_one(request(corpus_dir, {"nope": 1.0}))
    real_build, real_step, steps = pack_mod.build_model, PackTrainer.step, []

    def poisoned(spec, vocab):
        m = real_build(spec, vocab)
        with torch.no_grad():
            m.wpe.weight[5, 0] = float("inf")
        return m

    monkeypatch.setattr(pack_mod, "build_model", poisoned)
    monkeypatch.setattr(PackTrainer, "step", lambda self, x, y: steps.append(1) or real_step(self, x, y))
    with pytest.raises(TrialError, match="diverged at step 0"):
        run_one(request(corpus_dir, {"cycle": 1.0}, evals=1))
    assert len(steps) == 1  # on CPU caught after the step it happened in, not at the (only) evaluation


def test_each_member_samples_its_own_mixture_like_solo(corpus_dir, monkeypatch):
    seen = []
    real = PackTrainer.step
    monkeypatch.setattr(PackTrainer, "step", lambda self, x, y: seen.append(x.clone()) or real(self, x, y))
    mixes = [{"cycle": 1.0}, {"noise": 1.0}, {"cycle": 0.25, "noise": 0.75}]
    rs = reqs(corpus_dir, mixes=mixes, seeds=(0, 7, 3), batch_size=16, tokens=16 * 16 * 12, evals=1)
    run_pack(rs)
    xs = torch.stack(seen)  # (steps, K, B, T)
    from_noise = (xs[..., 0] >= 32).float().mean(dim=(0, 2))  # noise tokens are 32..62
    assert from_noise.tolist()[:2] == [0.0, 1.0] and from_noise[2] == pytest.approx(0.75, abs=0.08)
    corpus = Corpus.open(corpus_dir)
    for k, (m, s) in enumerate(zip(mixes, (0, 7, 3))):  # the very sequences the solo run draws
        sampler = MixtureSampler(corpus, Mixture(m, corpus.domains), 16, 16, seed=s)
        assert all(torch.equal(xs[i, k], sampler.next()[0]) for i in range(len(xs)))


def test_incompatible_requests_are_refused(corpus_dir):
    with pytest.raises(ValueError, match="preset"):
        run_pack([request(corpus_dir, {"cycle": 1.0}), request(corpus_dir, {"cycle": 1.0}, preset="moe-0.1m")])
    with pytest.raises(ValueError, match="tokens"):
        run_pack([request(corpus_dir, {"cycle": 1.0}), request(corpus_dir, {"cycle": 1.0}, tokens=8 * 16 * 20)])
    assert run_pack([]) == []


def test_compile_failure_falls_back_to_eager(corpus_dir, monkeypatch):
    def broken(fn, **kw):
        def run(*a, **k):
            raise RuntimeError("no compiler here")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    rs = reqs(corpus_dir, mixes=MIXES[:2], seeds=(0, 1), tokens=8 * 16 * 6, evals=1)
    with pytest.warns(UserWarning, match="running eager"):
        compiled = run_pack(rs, compile=True)
    for c, e in zip(compiled, run_pack(rs, compile=False)):
        assert c.losses == e.losses


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("preset", ["dense-0.1m", "moe-0.1m"])
def test_cuda_pack_matches_cpu_pack(corpus_dir, preset):
    rs = reqs(corpus_dir, preset=preset)
    cpu = run_pack(rs)
    for r in rs:
        r["device"] = "cuda"
    gpu = run_pack(rs)  # bf16 autocast, torch.compile (or its eager fallback), grouped/dense MoE dispatch
    for g, c in zip(gpu, cpu):
        assert isinstance(g, TrialResult) and g.device.startswith("cuda")
        assert g.metrics["train_loss"] == pytest.approx(c.metrics["train_loss"], abs=0.1, rel=0.1)  # bf16 vs fp32
        assert all(math.isfinite(v) for v in g.losses.values())
    assert gpu[0].losses["cycle"] < 0.5 * math.log(V)
    assert np.isfinite([g.metrics["tokens_per_s"] for g in gpu]).all()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_cpu_engine_keeps_freed_large_blocks_in_the_heap():
    libc = ctypes.CDLL("libc.so.6")
    libc.sbrk.restype, libc.sbrk.argtypes = ctypes.c_void_p, [ctypes.c_long]
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    assert reuse_large_allocations()
    size = 200 << 20  # above glibc's default 32 MiB mmap ceiling
    p = libc.malloc(size)
    ctypes.memset(p, 1, size)
    brk = libc.sbrk(0)
    libc.free(p)
    assert p + size <= brk  # served from the heap (below the program break), not a fresh mmap
    assert libc.sbrk(0) == brk  # and kept there for the next step, not trimmed back
