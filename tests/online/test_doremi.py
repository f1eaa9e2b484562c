"""DoReMi: the update by hand, where the weight goes, the averaged output, and the two modes."""

from dataclasses import asdict

import numpy as np
import pytest

from mixopt.online import DoremiOptions, OnlineMixerError, make_mixer

DOMAINS = ["a", "b", "c"]
START = {"a": 0.5, "b": 0.3, "c": 0.2}


def by_hand(alpha, scores, eta=1.0, c=1e-3):
    q = np.asarray(alpha) * np.exp(eta * np.asarray(scores))
    return (1 - c) * q / q.sum() + c / len(q)


def test_defaults_are_the_papers():
    # DoReMi paper and sangmichaelxie/doremi scripts/runs/run_pile_doremi120M.sh: --reweight_eta 1 --reweight_eps 1e-3
    assert asdict(DoremiOptions()) == dict(eta=1.0, smoothing=1e-3, mode="reweight", reference=None)


def test_updates_by_hand_and_the_average():
    ref = {"a": 2.0, "b": 3.0, "c": 1.0}
    mixer = make_mixer("doremi", DOMAINS, start=START, reference=ref, eta=0.5, smoothing=0.01)
    reports = [{"a": 2.4, "b": 3.1, "c": 0.5}, {"a": 2.2, "b": 3.3, "c": 1.2}]
    alpha, seen = np.array(list(START.values())), []
    for t, losses in enumerate(reports):
        assert mixer.plan().report and mixer.plan().domain_weights == pytest.approx(dict(zip(DOMAINS, alpha)))
        mixer.observe(t, losses)
        scores = [max(losses[d] - ref[d], 0.0) for d in DOMAINS]  # c's negative excess is clipped to 0
        alpha = by_hand(alpha, scores, eta=0.5, c=0.01)
        seen.append(alpha)
        assert list(mixer.plan().domain_weights.values()) == pytest.approx(alpha.tolist(), rel=1e-12)
    avg = np.mean(seen, axis=0)
    assert list(mixer.average().values()) == pytest.approx((avg / avg.sum()).tolist(), rel=1e-12)
    assert mixer.stats()["updates"] == 2


def test_weight_goes_to_the_largest_excess_loss():
    mixer = make_mixer("doremi", DOMAINS, reference={"a": 1.0, "b": 1.0, "c": 1.0})
    traj = []
    for t in range(200):
        mixer.observe(t, {"a": 1.5, "b": 1.1, "c": 0.8})
        traj.append(list(mixer.plan().domain_weights.values()))
    w = mixer.plan().domain_weights
    assert w["a"] > 0.99 and 1e-3 / 3 < w["c"] < 1e-3  # held above the smoothing floor c/k
    assert list(mixer.average().values()) == pytest.approx(np.mean(traj, axis=0).tolist(), rel=1e-9)
    a = [x[0] for x in traj]
    assert np.all(np.diff(a) >= 0) and a[0] < 0.5  # moves a little each step: the average lags the final weights
    assert mixer.average()["a"] < w["a"]


def test_absent_domain_keeps_its_last_score_and_unseen_ones_start_at_the_worst():
    ref = {"a": 1.0, "b": 1.0, "c": 1.0}
    mixer = make_mixer("doremi", DOMAINS, reference=ref)
    mixer.observe(0, {"a": 1.3, "b": 1.1})  # c never seen: scored like the worst seen (0.3)
    alpha = by_hand([1 / 3] * 3, [0.3, 0.1, 0.3])
    assert list(mixer.plan().domain_weights.values()) == pytest.approx(alpha.tolist(), rel=1e-12)
    mixer.observe(1, {"b": 1.6})  # a keeps 0.3, c keeps 0.3
    alpha = by_hand(alpha, [0.3, 0.6, 0.3])
    assert list(mixer.plan().domain_weights.values()) == pytest.approx(alpha.tolist(), rel=1e-12)


def test_reweight_mode_samples_the_start_and_weights_the_losses():
    mixer = make_mixer("doremi", DOMAINS, start=START, reference={"a": 1.0, "b": 1.0, "c": 1.0})
    mixer.observe(0, {"a": 1.5, "b": 1.0, "c": 1.0})
    plan = mixer.plan()
    assert plan.mixture == START and plan.phase == "mix" and not plan.evaluate
    lw = np.array([plan.domain_weights[d] / START[d] for d in DOMAINS])
    assert list(plan.loss_weights.values()) == pytest.approx((lw / lw.sum()).tolist(), rel=1e-12)
    sample = make_mixer("doremi", DOMAINS, start=START, mode="sample", reference={"a": 1.0, "b": 1.0, "c": 1.0})
    sample.observe(0, {"a": 1.5, "b": 1.0, "c": 1.0})
    assert sample.plan().mixture == sample.plan().domain_weights == plan.domain_weights
    assert sample.plan().loss_weights is None


def test_a_step_reference_wins_over_the_fixed_one():
    fixed = make_mixer("doremi", DOMAINS, reference={"a": 1.0, "b": 1.0, "c": 1.0})
    fixed.observe(0, {"a": 1.5, "b": 1.5, "c": 1.5}, reference={"a": 1.5, "b": 1.0})  # a: no excess now
    alpha = by_hand([1 / 3] * 3, [0.0, 0.5, 0.5])
    assert list(fixed.plan().domain_weights.values()) == pytest.approx(alpha.tolist(), rel=1e-12)


def test_a_zero_start_weight_is_refused_in_reweight_mode():
    """Reweight mode samples by the start: a domain at 0 would never be scored, and its alpha (smoothed above 0,
    its score stuck at the first batch's worst) would grow without evidence; one line instead."""
    start = {"a": 0.5, "b": 0.5, "c": 0.0}
    ref = {"a": 1.0, "b": 1.0, "c": 1.0}
    with pytest.raises(OnlineMixerError, match=r"doremi.start: mode 'reweight' .* gives 0 to c"):
        make_mixer("doremi", DOMAINS, start=start, reference=ref)
    mixer = make_mixer("doremi", DOMAINS, start=start, reference=ref, mode="sample")  # alpha is sampled: c gets in
    mixer.observe(0, {"a": 1.2, "b": 1.1})
    assert 0 < mixer.plan().mixture["c"] < 1e-3
