"""DomainSampler draws by the mixer's weights (seeded, resumable); MixerCallback drives the protocol in a loop."""

import json

import numpy as np
import pytest
from scipy.stats import chisquare

from mixopt.core.errors import OnlineMixerError
from mixopt.online import DomainSampler, MixerCallback, make_mixer, per_domain_means

DOMAINS = ["a", "b", "c"]


class Reiterable:
    """An iterable dataset without len or indexing (like a torch IterableDataset)."""

    def __init__(self, items):
        self.items = list(items)

    def __iter__(self):
        return iter(self.items)


def datasets():
    return {"a": list(range(100, 105)), "b": np.arange(200, 207), "c": Reiterable(range(300, 304))}


def test_frequencies_follow_the_weights():
    weights = {"a": 0.1, "b": 0.3, "c": 0.6}
    sampler = DomainSampler(datasets(), make_mixer("static", DOMAINS, start=weights), seed=0)
    drawn = [d for _ in range(200) for d in sampler.draw(100).domains]
    counts = np.array([drawn.count(d) for d in DOMAINS])
    assert chisquare(counts, 20000 * np.array(list(weights.values()))).pvalue > 1e-3
    assert sampler.drawn == 20000


def test_frequencies_follow_weights_that_change():
    phase = {"w": {"a": 0.8, "b": 0.2, "c": 0.0}}
    sampler = DomainSampler(datasets(), lambda: phase["w"], seed=1)
    first = sampler.draw(5000).domains
    phase["w"] = {"a": 0.0, "b": 0.25, "c": 0.75}
    second = sampler.draw(5000).domains
    assert "c" not in first and "a" not in second
    assert first.count("a") / 5000 == pytest.approx(0.8, abs=0.025)
    assert second.count("c") / 5000 == pytest.approx(0.75, abs=0.025)


def sequence(sampler, sizes):
    out = []
    for n in sizes:
        b = sampler.draw(n)
        out += [(d, int(x)) for d, x in zip(b.domains, b.examples)]
    return out


def test_draws_are_seeded():
    w = {"a": 0.3, "b": 0.3, "c": 0.4}
    runs = [sequence(DomainSampler(datasets(), w, seed=s), [50]) for s in (0, 0, 1)]
    assert runs[0] == runs[1] and runs[0] != runs[2]


@pytest.mark.parametrize("cut", [1, 13, 29])
def test_restore_continues_the_same_draws(cut):
    w = {"a": 0.3, "b": 0.3, "c": 0.4}
    sizes = [3, 7, 1, 11, 4, 9, 2, 8, 5]
    whole = sequence(DomainSampler(datasets(), w, seed=5), sizes)  # several epochs of every domain
    first = DomainSampler(datasets(), w, seed=5)
    head = sequence(first, [cut])
    saved = json.loads(json.dumps(first.state_dict()))
    resumed = DomainSampler(datasets(), w, seed=5)  # fresh datasets, as after a restart
    resumed.load_state_dict(saved)
    rest, total = [], sum(sizes)
    assert head + sequence(resumed, [total - cut]) + rest == whole


def test_indexable_data_is_shuffled_by_epoch_and_iterables_cycle():
    sampler = DomainSampler(datasets(), {"a": 1.0, "b": 0.0, "c": 0.0}, seed=2)
    e1, e2 = sampler.draw(5).examples, sampler.draw(5).examples
    assert sorted(e1) == sorted(e2) == list(range(100, 105)) and e1 != e2
    assert DomainSampler(datasets(), {"a": 1.0, "b": 0.0, "c": 0.0}, shuffle=False).draw(7).examples == \
        [100, 101, 102, 103, 104, 100, 101]
    it = DomainSampler(datasets(), {"a": 0.0, "b": 0.0, "c": 1.0}, seed=2)
    assert it.draw(6).examples == [300, 301, 302, 303, 300, 301]
    assert next(it) == ("c", 302)


def test_a_one_shot_iterator_runs_dry_with_a_clear_error():
    sampler = DomainSampler({"a": iter([1, 2]), "b": [0]}, {"a": 1.0, "b": 0.0})
    assert sampler.draw(2).examples == [1, 2]
    with pytest.raises(OnlineMixerError, match="'a' yields no more examples"):
        sampler.draw(1)


@pytest.mark.parametrize("data, weights, match", [
    ({"a": [1], "b": [2]}, {"a": 0.5, "b": 0.5, "c": 0.0}, "weights must map exactly the domains a, b"),
    ({"a": [1], "b": [2]}, make_mixer("static", DOMAINS), "datasets name domains"),
    ({"a": [1], "b": []}, {"a": 0.5, "b": 0.5}, "'b': dataset is empty"),
    ({"a": [1], "b": "text"}, {"a": 0.5, "b": 0.5}, "indexable or iterable"),
    ({"a": [1], "b": [2]}, {"a": -0.5, "b": 1.5}, "finite, >= 0"),
    ({"a": [1], "b": [2]}, {"a": 0.0, "b": 0.0}, "not all 0"),
    ({"a": [1], "b": [2]}, [0.5, 0.5], "mixer, a mapping or a callable"),
    ({}, {"a": 1.0}, "non-empty mapping"),
])
def test_bad_settings_are_refused(data, weights, match):
    with pytest.raises(OnlineMixerError, match=match):
        DomainSampler(data, weights)


def test_foreign_state_and_bad_draws_are_refused():
    sampler = DomainSampler(datasets(), {"a": 0.3, "b": 0.3, "c": 0.4}, seed=0)
    other = DomainSampler(datasets(), {"a": 0.3, "b": 0.3, "c": 0.4}, seed=1)
    with pytest.raises(OnlineMixerError, match="another sampler"):
        sampler.load_state_dict(other.state_dict())
    bad = sampler.state_dict()
    bad["rng"] = {"bit_generator": "MT19937"}
    with pytest.raises(OnlineMixerError, match="rng state"):
        sampler.load_state_dict(bad)
    with pytest.raises(OnlineMixerError, match="drawn must be an integer >= 0"):
        sampler.load_state_dict(sampler.state_dict() | {"drawn": "x"})
    with pytest.raises(OnlineMixerError, match="n must be an integer >= 1"):
        sampler.draw(0)


def test_per_domain_means_of_arrays_and_tensors():
    torch = pytest.importorskip("torch")
    doms = ["a", "b", "a", "c"]
    expect = {"a": 2.0, "b": 2.0, "c": 4.0}
    assert per_domain_means([1.0, 2.0, 3.0, 4.0], doms) == expect
    t = torch.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True) * 1.0
    assert per_domain_means(t, doms) == expect
    assert per_domain_means(t.to(torch.bfloat16), doms) == expect
    with pytest.raises(OnlineMixerError, match="3 losses for 4"):
        per_domain_means([1.0, 2.0, 3.0], doms)
    with pytest.raises(OnlineMixerError, match="must be numbers"):
        per_domain_means(["x"], ["a"])


def test_callback_evaluates_when_asked_and_reports_every_step():
    mixer = make_mixer("aioli", DOMAINS, update_steps=20, lp_rounds=1, lp_steps=2)
    calls = []

    def evaluate():
        calls.append(mixer.step)
        return {"a": 3.0, "b": 3.0 - 0.01 * mixer.step, "c": 3.0}

    sampler, cb = DomainSampler(datasets(), mixer, seed=0), MixerCallback(mixer, evaluate)
    for step in range(45):
        plan = cb.on_step_begin(step)
        assert not plan.evaluate and plan.step == step
        batch = sampler.draw(8)
        cb.on_step_end(step, np.full(8, 2.0), batch.domains)
    assert calls == [0, 2, 4, 6, 20, 22, 24, 26, 40, 42, 44]
    assert mixer.stats() == {"steps": 45, "evals": 11, "learn_steps": 6 * 3 - 1, "updates": 2}
    with pytest.raises(OnlineMixerError, match="mixer is at step 45"):
        cb.on_step_begin(44)
    with pytest.raises(OnlineMixerError, match="pass evaluate="):
        MixerCallback(make_mixer("aioli", DOMAINS)).on_step_begin(0)


def test_callback_weights_and_references_for_doremi():
    mixer = make_mixer("doremi", DOMAINS, start={"a": 0.5, "b": 0.25, "c": 0.25})
    cb = MixerCallback(mixer)
    cb.on_step_begin(0)
    cb.on_step_end(0, [2.0, 3.0, 1.0, 5.0], ["a", "b", "c", "a"], reference=[1.0, 3.0, 1.0, 1.0])  # excess a 2.5
    plan = cb.on_step_begin(1)
    w = cb.example_weights(["a", "b", "b"])
    assert w == [plan.loss_weights["a"], plan.loss_weights["b"], plan.loss_weights["b"]] and w[0] > w[1]
    assert cb.example_weights(["a"]) is not None
    with pytest.raises(OnlineMixerError, match=r"unknown domain\(s\) \['zz'\]"):
        cb.example_weights(["a", "zz"])
    assert MixerCallback(make_mixer("static", DOMAINS)).example_weights(["a"]) is None
