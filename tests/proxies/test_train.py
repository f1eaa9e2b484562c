"""run_trial on a tiny on-disk corpus: learning, reproducibility, fixed eval data, failures."""

import json
import math

import numpy as np
import pytest
import torch

from mixopt.core.errors import MixtureError, TrialError
from mixopt.core.spec import ProxySpec
from mixopt.data.corpus import Corpus
from mixopt.proxies import model as proxy_model
from mixopt.proxies import train
from mixopt.proxies.gpt import GPT
from mixopt.proxies.model import lr_at
from mixopt.proxies.train import MixtureSampler, eval_batches, run_trial

V = 64


def write_corpus(root, domains, dtype="uint16"):
    """domains: {name: (train ids, val ids)} -> corpus dir in the on-disk format."""
    man = {"format": 1, "vocab_size": V, "dtype": dtype, "eot": V - 1, "domains": {}}
    for name, (tr, va) in domains.items():
        (root / name).mkdir(parents=True)
        np.asarray(tr, dtype=dtype).tofile(root / name / "train.bin")
        np.asarray(va, dtype=dtype).tofile(root / name / "val.bin")
        man["domains"][name] = {"train_tokens": len(tr), "val_tokens": len(va)}
    (root / "manifest.json").write_text(json.dumps(man))
    return root


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    rng = np.random.default_rng(0)
    cycle = np.arange(6000) % 32  # perfectly predictable, tokens 0..31
    noise = rng.integers(32, 63, 6000)  # unpredictable, tokens 32..62
    held = (np.arange(3000) * 3) % 32  # another pattern over 0..31, never trained on
    return write_corpus(tmp_path_factory.mktemp("corpus"), {
        "cycle": (cycle[:5000], cycle[5000:]), "noise": (noise[:5000], noise[5000:]),
        "held": (held[:2000], held[2000:]), "empty": ([], noise[:500])})


def request(corpus_dir, mixture, **spec_kw):
    spec = dict(preset="dense-0.1m", tokens=8 * 16 * 40, seq_len=16, batch_size=8, lr=1e-2,
                eval_batches=2, evals=2, seed=0) | spec_kw
    return {"trial_id": 1, "mixture": mixture, "spec": ProxySpec(**spec).to_dict(),
            "corpus_dir": str(corpus_dir), "eval_domains": ["cycle", "noise", "held"],
            "num_threads": 1, "device": "cpu"}


@pytest.fixture(scope="module")
def cycle_result(corpus_dir):
    return run_trial(request(corpus_dir, {"cycle": 1.0}))


def test_result_fields_agree_with_spec(cycle_result):
    r, spec = cycle_result, ProxySpec(preset="dense-0.1m", seq_len=16)
    assert r.metrics["steps"] == 40 and r.metrics["tokens"] == 40 * 8 * 16
    assert r.metrics["params"] == spec.params(V) and r.metrics["non_embedding_params"] == spec.non_embedding_params()
    assert r.metrics["flops_per_token"] == spec.flops_per_token(V)
    assert r.metrics["flops_per_s"] == pytest.approx(r.metrics["flops_per_token"] * r.metrics["tokens_per_s"])
    assert [h["step"] for h in r.history] == [20, 40]
    assert [h["tokens"] for h in r.history] == [20 * 128, 40 * 128]
    assert r.losses == r.history[-1]["losses"] and set(r.losses) == {"cycle", "noise", "held"}
    assert r.metrics["seconds"] >= r.metrics["train_seconds"] > 0 and r.device == "cpu"


def test_loss_decreases_on_learnable_domain(cycle_result):
    h = cycle_result.history
    assert h[0]["train_loss"] > h[-1]["train_loss"]
    assert cycle_result.losses["cycle"] < 0.5 * math.log(V)  # learned the cycle
    assert cycle_result.losses["noise"] > math.log(31)  # never saw tokens 32..62


def test_same_request_same_losses_bit_for_bit(corpus_dir, cycle_result):
    again = run_trial(request(corpus_dir, {"cycle": 1.0}))
    assert again.history == cycle_result.history


def test_different_mixtures_and_seeds_differ(corpus_dir, cycle_result):
    noise = run_trial(request(corpus_dir, {"noise": 1.0}))
    assert noise.losses["noise"] < cycle_result.losses["noise"]
    assert noise.losses["cycle"] > cycle_result.losses["cycle"]
    reseeded = run_trial(request(corpus_dir, {"cycle": 1.0}, seed=1))
    assert reseeded.losses != cycle_result.losses


def test_eval_batches_identical_across_trials(corpus_dir, monkeypatch):
    seen = []
    real = train.evaluate
    monkeypatch.setattr(train, "evaluate", lambda m, b, d: seen.append(b) or real(m, b, d))
    run_trial(request(corpus_dir, {"cycle": 0.5, "noise": 0.5}, seed=3))
    r = request(corpus_dir, {"noise": 1.0}, seed=7)
    r["trial_id"], r["eval_domains"] = 2, ["held", "cycle"]
    run_trial(r)
    for d in ("held", "cycle"):
        assert torch.equal(seen[0][d], seen[-1][d])
    assert not torch.equal(seen[0]["cycle"], seen[0]["held"])  # domains get different windows


def test_held_out_and_default_eval_domains(corpus_dir):
    r = request(corpus_dir, {"cycle": 0.7, "noise": 0.3}, tokens=8 * 16 * 4, evals=1)
    del r["eval_domains"]  # default: every corpus domain, including ones not in the mixture
    res = run_trial(r)
    assert set(res.losses) == {"cycle", "noise", "held", "empty"}
    assert all(math.isfinite(v) for v in res.losses.values())


def test_weight_on_empty_domain_raises(corpus_dir):
    with pytest.raises(TrialError, match="'empty'.*0 tokens"):
        run_trial(request(corpus_dir, {"cycle": 0.9, "empty": 0.1}))
    run_trial(request(corpus_dir, {"cycle": 1.0, "empty": 0.0}, tokens=128, evals=1))  # zero is fine


def test_unknown_domains_raise(corpus_dir):
    with pytest.raises(MixtureError, match="unknown domain"):
        run_trial(request(corpus_dir, {"nope": 1.0}))
    r = request(corpus_dir, {"cycle": 1.0})
    r["eval_domains"] = ["nope"]
    with pytest.raises(TrialError, match="not in the corpus"):
        run_trial(r)


def test_divergence_raises_trial_error(corpus_dir, monkeypatch):
    class PoisonedGPT(GPT):  # a NaN weight makes the real training loss non-finite
        def __init__(self, cfg):
            super().__init__(cfg)
            with torch.no_grad():
                self.wpe.weight[3, 0] = float("nan")

    monkeypatch.setattr(proxy_model, "GPT", PoisonedGPT)
    with pytest.raises(TrialError, match="diverged at step 0: loss=nan"):
        run_trial(request(corpus_dir, {"cycle": 1.0}))


def test_sampler_follows_weights(corpus_dir):
    from mixopt.core.mixture import Mixture
    corpus = Corpus.open(corpus_dir)
    s = MixtureSampler(corpus, Mixture({"cycle": 0.25, "noise": 0.75, "held": 0.0, "empty": 0.0}),
                       B=64, T=16, seed=0)
    xs = torch.cat([s.next()[0] for _ in range(20)])  # (1280, 16)
    from_noise = (xs[:, 0] >= 32).float().mean().item()
    assert from_noise == pytest.approx(0.75, abs=0.05)
    x, y = s.next()
    assert x.shape == y.shape == (64, 16) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])  # y is x shifted by one token
    cyc = x[x[:, 0] < 32]  # cycle rows are contiguous windows: +1 mod 32
    assert torch.equal((cyc[:, 1:] - cyc[:, :-1]) % 32, torch.ones_like(cyc[:, 1:]))


def test_uint32_corpus_and_eval_windows(tmp_path):
    d = write_corpus(tmp_path, {"a": (np.arange(100) % 50, np.arange(40) + 70000)}, dtype="uint32")
    b = eval_batches(Corpus.open(d), "a", n_batches=3, B=2, T=8)
    assert b.shape == (3, 2, 9) and int(b.min()) >= 70000  # uint32 ids survive
    assert torch.equal(b, eval_batches(Corpus.open(d), "a", n_batches=3, B=2, T=8))


def test_lr_schedule():
    spec = ProxySpec(tokens=16 * 128 * 100, lr=1e-3, warmup_frac=0.1, min_lr_frac=0.1)
    lrs = [lr_at(s, spec) for s in range(spec.steps)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert max(lrs) == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-4)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))  # monotone decay after warmup


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_trial_matches_spec(corpus_dir):
    r = request(corpus_dir, {"cycle": 1.0})
    r["device"] = "auto"
    res = run_trial(r)
    assert res.device.startswith("cuda") and res.losses["cycle"] < 0.5 * math.log(V)
