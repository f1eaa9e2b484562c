"""Model-merging proxies: experts trained as one pack, merged models scored in one forward, bad files refused."""

import importlib.util
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mixopt.core.errors import ConfigError, DataError, TrialError
from mixopt.core.experts import SEED_FILE, ExpertsSpec, expert_file, file_sha256, resolve_seed_fraction
from mixopt.core.mixture import Mixture
from mixopt.core.spec import ProxySpec
from mixopt.core.worker import Branch, TrialRequest
from mixopt.data.corpus import Corpus
from mixopt.proxies.merge import flattened, load_member, merged_losses, solo_from_merged, stack_experts, train_experts
from mixopt.proxies.model import lr_at
from mixopt.proxies.pack_train import PackTrainer, run_one, run_pack
from mixopt.proxies.train import MixtureSampler, eval_batches, evaluate, run_trial
from mixopt.proxies.weights import load_into


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_merge_helpers_{name}", Path(__file__).with_name(f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_train = _load("test_train")
corpus_dir, V = _train.corpus_dir, _train.V  # tiny corpus: cycle, noise, held, empty
DOMAINS = ("cycle", "noise", "held")


def experts_spec(**kw) -> ExpertsSpec:
    spec = ProxySpec(preset="dense-0.1m", tokens=8 * 16 * 40, seq_len=16, batch_size=8, lr=1e-2, eval_batches=2)
    return ExpertsSpec(kw.pop("spec", spec), DOMAINS, Mixture({"cycle": 0.4, "noise": 0.4, "held": 0.2}, DOMAINS),
                       kw.pop("seed_fraction", 0.5), "test-corpus", V)


@pytest.fixture(scope="module")
def trained(corpus_dir, tmp_path_factory):
    es, out = experts_spec(), tmp_path_factory.mktemp("experts")
    res = train_experts({"experts": es.to_dict(), "corpus_dir": str(corpus_dir), "out_dir": str(out)})
    return es, out, res


def test_seed_then_one_pack_of_experts(trained):
    es, out, res = trained
    assert set(res["files"]) == {SEED_FILE, *(expert_file(d) for d in DOMAINS)}
    assert all(file_sha256(out / f) == h for f, h in res["files"].items())
    assert res["tokens"] == es.training_tokens() == 8 * 16 * (20 + 3 * 20)
    assert es.proxies_worth() == pytest.approx(0.5 + 3 * 0.5)
    # each expert continued on its own domain: its training loss there is far below the seed's mixed loss
    assert res["train_loss"]["cycle"] < 0.5 * res["train_loss"]["seed"]
    stacked = stack_experts(es, out)
    assert all(t.shape[0] == 3 for t in stacked.values())
    assert not torch.equal(stacked["wte.weight"][0], stacked["wte.weight"][1])


def test_merged_scores_are_the_merged_models_losses(trained, corpus_dir):
    es, out, _ = trained
    W = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.25, 0.25], [0.2, 0.2, 0.6]]
    res = merged_losses({"experts": es.to_dict(), "dir": str(out), "mixtures": W, "corpus_dir": str(corpus_dir),
                         "eval_domains": list(DOMAINS), "batch": 3})  # two chunks: 3 + 1
    L = np.array(res["losses"])
    assert L.shape == (4, 3) and res["domains"] == list(DOMAINS)
    assert res["eval_tokens"] == 3 * 2 * 8 * 16
    corpus, stacked = Corpus.open(corpus_dir), stack_experts(es, out)
    batches = {d: eval_batches(corpus, d, 2, 8, 16) for d in DOMAINS}  # what trials are scored on
    for w, row in zip(W, L):
        solo = evaluate(solo_from_merged(stacked, w, es), batches, torch.device("cpu"))
        assert row == pytest.approx([solo[d] for d in DOMAINS], abs=2e-4)
    # the cycle expert is best on cycle, the noise expert on noise; weight moves the merged model between them
    assert L[0, 0] < L[1, 0] and L[1, 1] < L[0, 1] and L[0, 0] < math.log(V)


def test_scale_extrapolates_each_expert_from_the_seed(trained, corpus_dir):
    es, out, _ = trained
    W = [[0.5, 0.25, 0.25], [0.2, 0.2, 0.6]]
    req = {"experts": es.to_dict(), "dir": str(out), "mixtures": W, "corpus_dir": str(corpus_dir),
           "eval_domains": list(DOMAINS)}
    plain, scaled = (np.array(merged_losses(req | {"scale": lam})["losses"]) for lam in (1, 1.5))
    assert np.abs(plain - scaled).max() > 1e-3
    assert np.array(merged_losses(req)["losses"]) == pytest.approx(plain)  # the default: the plain average
    # member j = seed + 1.5 * sum_i w_i (expert_i - seed), every parameter, checked by hand
    corpus, stacked = Corpus.open(corpus_dir), stack_experts(es, out, seed=True)
    seed = load_member(out / SEED_FILE, es)
    batches = {d: eval_batches(corpus, d, 2, 8, 16) for d in DOMAINS}
    for w, row in zip(W, scaled):
        model = solo_from_merged(stacked, w, es, scale=1.5)
        for name, p in model.named_parameters():
            want = seed[name] + 1.5 * sum(wi * (stacked[name][i] - seed[name]) for i, wi in enumerate(w))
            assert torch.allclose(p, want, atol=1e-5), name
        solo = evaluate(model, batches, torch.device("cpu"))
        assert row == pytest.approx([solo[d] for d in DOMAINS], abs=2e-4)
    for bad in (0, -1, 11, "2", True, float("nan")):
        with pytest.raises(ConfigError, match=r"merge.scale: .* must be a number in \(0, 10\]"):
            merged_losses(req | {"scale": bad})
    (no_seed := out.parent / "no-seed").mkdir()
    for d in DOMAINS:
        (no_seed / expert_file(d)).write_bytes((out / expert_file(d)).read_bytes())
    assert np.array(merged_losses(req | {"dir": str(no_seed)})["losses"]) == pytest.approx(plain)  # no seed needed
    with pytest.raises(DataError, match="seed.safetensors"):
        merged_losses(req | {"dir": str(no_seed), "scale": 1.5})


def test_power_merges_a_mixture_with_flattened_weights(trained, corpus_dir):
    """power p: the mixture w is merged with c = w ** p / sum(w ** p) (p 1: w itself; p < 1 flattens it, a
    weight of 0 stays 0), at any scale: the same losses as merging c itself."""
    es, out, _ = trained
    W = [[0.64, 0.36, 0.0], [0.1, 0.1, 0.8]]
    C = [[0.8 / 1.4, 0.6 / 1.4, 0.0], [x / (2 * 0.1 ** 0.5 + 0.8 ** 0.5) for x in (0.1 ** 0.5, 0.1 ** 0.5, 0.8 ** 0.5)]]
    assert flattened(torch.tensor(W), 0.5).numpy() == pytest.approx(np.array(C), abs=1e-6)
    assert flattened(torch.tensor(W), 1.0).numpy() == pytest.approx(np.array(W))
    req = {"experts": es.to_dict(), "dir": str(out), "corpus_dir": str(corpus_dir), "eval_domains": list(DOMAINS)}
    for lam in (1.0, 1.5):
        powered = np.array(merged_losses(req | {"mixtures": W, "power": 0.5, "scale": lam})["losses"])
        assert powered == pytest.approx(np.array(merged_losses(req | {"mixtures": C, "scale": lam})["losses"]), abs=1e-5)
        assert np.abs(powered - np.array(merged_losses(req | {"mixtures": W, "scale": lam})["losses"])).max() > 1e-3
    for bad in (0, -1, 2.5, True, "x"):
        with pytest.raises(ConfigError, match=r"merge.power: .* must be a number in \(0, 2\]"):
            merged_losses(req | {"mixtures": W, "power": bad})
    with pytest.raises(ConfigError, match="debias merges the continuation mixture's own weights; power 0.5 must be 1"):
        merged_losses(req | {"mixtures": W, "power": 0.5, "debias": True})


def test_debias_merges_the_continuation_that_makes_the_whole_training_w(trained, corpus_dir):
    """debias: v = (w - s * base) / (1 - s) (here s = 0.5, base 0.4/0.4/0.2), then seed + scale * sum v_i (e_i - seed);
    v may be negative; at scale 1 the seed file is not needed (v sums to 1)."""
    es, out, _ = trained
    W = [[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]
    req = {"experts": es.to_dict(), "dir": str(out), "mixtures": W, "corpus_dir": str(corpus_dir),
           "eval_domains": list(DOMAINS), "debias": True}
    corpus, stacked = Corpus.open(corpus_dir), stack_experts(es, out, seed=True)
    seed = load_member(out / SEED_FILE, es)
    batches = {d: eval_batches(corpus, d, 2, 8, 16) for d in DOMAINS}
    base = np.array([0.4, 0.4, 0.2])
    for lam in (1.0, 1.25):
        L = np.array(merged_losses(req | {"scale": lam})["losses"])
        assert np.abs(L - np.array(merged_losses(req | {"scale": lam, "debias": False})["losses"])).max() > 1e-3
        for w, row in zip(W, L):
            v = (np.array(w) - 0.5 * base) / 0.5
            model = solo_from_merged(stacked, v, es, scale=lam)
            name = "blocks.0.attn.c_attn.weight"
            want = seed[name] + lam * sum(vi * (stacked[name][i] - seed[name]) for i, vi in enumerate(v))
            assert torch.allclose(dict(model.named_parameters())[name], want, atol=1e-5)
            solo = evaluate(model, batches, torch.device("cpu"))
            assert row == pytest.approx([solo[d] for d in DOMAINS], abs=2e-4)
    assert (np.array(W[1]) - 0.5 * base)[:2].min() < 0  # the second mixture steps away from two experts


def test_resampled_batches_give_the_spread_of_a_score(trained, corpus_dir):
    es, out, _ = trained
    req = {"experts": es.to_dict(), "dir": str(out), "mixtures": [[0.4, 0.4, 0.2]], "corpus_dir": str(corpus_dir),
           "eval_domains": ["noise"]}
    a, b = (merged_losses(req | {"resample": r})["losses"][0][0] for r in (0, 1))
    assert a != b and abs(a - b) < 0.5


def test_bad_files_and_mixtures_are_refused(trained, corpus_dir, tmp_path):
    es, out, _ = trained
    req = {"experts": es.to_dict(), "dir": str(out), "mixtures": [[0.5, 0.5, 0.0]], "corpus_dir": str(corpus_dir)}
    with pytest.raises(ConfigError, match="not on the simplex"):
        merged_losses(req | {"mixtures": [[0.5, 0.6, 0.0]]})
    with pytest.raises(ConfigError, match="has 2 weights for 3 experts"):
        merged_losses(req | {"mixtures": [[0.5, 0.5]]})
    other = experts_spec(seed_fraction=0.25)  # another set: its key differs
    with pytest.raises(DataError, match="belongs to expert set"):
        merged_losses(req | {"experts": other.to_dict()})
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in (SEED_FILE, *(expert_file(d) for d in DOMAINS)):
        (bad / f).write_bytes((out / f).read_bytes())
    (bad / expert_file("noise")).write_bytes(b"\x00" * 64)
    with pytest.raises(DataError, match=r"expert-noise.safetensors is unreadable"):
        merged_losses(req | {"dir": str(bad)})
    (bad / expert_file("held")).unlink()
    with pytest.raises(DataError, match=r"expert-held.safetensors.*missing"):
        merged_losses(req | {"dir": str(bad)})
    with pytest.raises(DataError, match="vocabulary"):
        merged_losses(req | {"experts": {**es.to_dict(), "vocab_size": V + 1}})


def test_auto_seed_fraction_hands_off_by_the_proxys_steps():
    """`auto`: as late as leaves the experts 150 steps, within 10-50 % of the schedule; numbers kept."""
    def spec(steps: int) -> ProxySpec:
        return ProxySpec(preset="dense-0.1m", tokens=8 * 16 * steps, seq_len=16, batch_size=8)

    steps = (32, 156, 300, 500, 680, 750, 1450, 1500, 1562, 10_000)
    got = {n: resolve_seed_fraction("auto", spec(n)) for n in steps}
    assert got == {32: 0.5, 156: 0.5, 300: 0.5, 500: 0.7, 680: 0.77, 750: 0.8, 1450: 0.89, 1500: 0.9, 1562: 0.9,
                   10_000: 0.9}
    assert all(n - round(got[n] * n) >= min(150, n // 2) for n in steps)  # rounded down: the rest keeps its steps
    assert resolve_seed_fraction(0.25, spec(1562)) == 0.25
    assert experts_spec(seed_fraction=resolve_seed_fraction("auto", experts_spec().spec)).seed_steps == 20
    with pytest.raises(ConfigError, match="seed_fraction"):  # unresolved, it is not a fraction
        experts_spec(seed_fraction="auto")


def test_experts_spec_checks_itself():
    with pytest.raises(ConfigError, match="seed_fraction"):
        experts_spec(seed_fraction=1.0)
    with pytest.raises(ConfigError, match="without a step"):
        experts_spec(seed_fraction=0.001)
    es = experts_spec()
    assert ExpertsSpec.from_dict(es.to_dict()) == es and es.key() == ExpertsSpec.from_dict(es.to_dict()).key()
    assert experts_spec(seed_fraction=0.25).key() != es.key()
    # muP experts name their read-out multiplier unless it is 1: a set trained before it was a key (alpha 1)
    # keeps its key (the literals: keys computed at 94e6a2b, before the multiplier existed) and is not reused
    # for today's default; a standard spec's key is the one it always had
    mup = replace(es.spec, parametrization="mup")
    keys = {a: experts_spec(spec=replace(mup, mup_output_mult=a)).key() for a in (1.0, 4.0)}
    assert (es.key(), keys[1.0]) == ("ee44c9d05733886e", "f98a79c94d035c30") and keys[4.0] not in (keys[1.0], es.key())
    old = {**experts_spec(spec=mup).to_dict()}
    old["spec"] = {k: v for k, v in old["spec"].items() if k != "mup_output_mult"}  # stored before the key
    assert ExpertsSpec.from_dict(old).spec.mup_output_mult == 1.0 and ExpertsSpec.from_dict(old).key() == keys[1.0]


def _branch_request(es, out, corpus_dir, mixture, trial_id=1):
    return TrialRequest(trial_id, Mixture(mixture, DOMAINS), es.spec, str(corpus_dir), DOMAINS, branch=Branch(es, str(out)))


def test_a_branch_is_the_seed_continued_on_its_mixture(trained, corpus_dir):
    """merge.branch: the engine loads the seed and trains the rest of the schedule on the trial's mixture, as
    the experts do; two branches in one pack train as each alone; the trial reports the tokens it trained."""
    es, out, _ = trained
    w = {"cycle": 0.7, "noise": 0.3}
    res = run_one(_branch_request(es, out, corpus_dir, w))
    # by hand: the seed's weights, then steps seed_steps..steps of the same lr schedule on w, fresh AdamW state
    corpus, spec = Corpus.open(corpus_dir), es.spec
    lrs = [[lr_at(es.seed_steps + i, spec)] for i in range(es.expert_steps)]
    trainer = PackTrainer([spec.with_preset(spec.preset, tokens=es.expert_steps * 8 * 16)], V, torch.device("cpu"),
                          lr_table=lrs)
    seed = load_member(out / SEED_FILE, es)
    load_into(trainer.pack, seed)
    sampler = MixtureSampler(corpus, Mixture(w, corpus.domains), 8, 16, seed=spec.seed + 1 + len(DOMAINS))
    for _ in range(es.expert_steps):
        trainer.step(*(t[None] for t in sampler.next()))
    batches = {d: eval_batches(corpus, d, spec.eval_batches, 8, 16) for d in DOMAINS}
    want = dict(zip(DOMAINS, trainer.evaluate(batches)[0]))
    assert res.losses == pytest.approx(want, rel=1e-5)
    assert res.metrics["tokens"] == es.expert_steps * 8 * 16 and res.metrics["steps"] == es.expert_steps
    assert res.metrics["branch_start_step"] == es.seed_steps and res.history[-1]["step"] == spec.steps
    # trained from the seed, the branch is far better than a proxy trained from scratch for the same steps
    scratch = run_one(TrialRequest(2, Mixture(w, DOMAINS), spec.with_preset(spec.preset, tokens=es.expert_steps * 8 * 16),
                                   str(corpus_dir), DOMAINS))
    assert res.losses["cycle"] < scratch.losses["cycle"]
    pair = run_pack([_branch_request(es, out, corpus_dir, w), _branch_request(es, out, corpus_dir, {"noise": 1.0}, 3)])
    assert pair[0].losses == pytest.approx(res.losses, rel=1e-4)
    assert TrialRequest.from_dict(_branch_request(es, out, corpus_dir, w).to_dict()).branch == Branch(es, str(out))


def test_a_branch_without_its_seed_fails_as_data(trained, corpus_dir, tmp_path):
    es, out, _ = trained
    with pytest.raises(TrialError, match="seed.safetensors is missing"):
        run_one(_branch_request(es, tmp_path, corpus_dir, {"cycle": 1.0}))
    other = experts_spec(seed_fraction=0.25)  # another set's seed file is refused
    with pytest.raises(TrialError, match="belongs to expert set") as e:
        run_one(_branch_request(other, out, corpus_dir, {"cycle": 1.0}))
    assert e.value.kind == "data"
    with pytest.raises(ValueError, match="differs from the seed's"):
        TrialRequest(1, Mixture({"cycle": 1.0}, DOMAINS), replace(es.spec, lr=0.5), str(corpus_dir), DOMAINS,
                     branch=Branch(es, str(out)))
    with pytest.raises(TrialError, match="on the engine"):
        run_trial(_branch_request(es, out, corpus_dir, {"cycle": 1.0}))
