"""Aioli: the published defaults, the LearnParams schedule, the estimate of A, and where the weights go."""

from dataclasses import asdict

import numpy as np
import pytest

from mixopt.online import AioliOptions, make_mixer

DOMAINS = ["a", "b", "c"]


def test_defaults_are_the_published_ones():
    # HazyResearch/aioli README command = scripts/arxiv_stackexchange/aioli/run.sh
    assert asdict(AioliOptions()) == dict(eta=0.2, lp_rounds=4, lp_steps=4, update_steps=250, one_hot_factor=0.625,
                                          ema=0.1, normalize_a=True, diagonal=False, prior_steps=0, anchor="start",
                                          seed=0)


def test_learnparams_schedule_at_the_defaults(world, run):
    mixer = make_mixer("aioli", DOMAINS)
    evals = []
    trace = run(mixer, world(DOMAINS, np.eye(3) * 0.01, linear=True), 520, evals)
    per_round = [0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48]  # k * lp_rounds + 1 = 13 evaluations
    assert evals == per_round + [250 + o for o in per_round] + [500 + o for o in per_round if o < 20]
    probe = {0.625, 0.1875}  # one_hot_factor on the probed domain, (1 - 0.625) / 2 on the others
    for r0 in (0, 250):
        rnd = trace[r0:r0 + 250]
        assert [p["phase"] for p in rnd] == ["learn"] * 48 + ["mix"] * 202
        visits = [rnd[i]["mixture"] for i in range(0, 48, 4)]
        for i, v in enumerate(visits):
            assert set(v.values()) == probe and all(rnd[4 * i + j]["mixture"] == v for j in range(4))
        probed = [max(v, key=v.get) for v in visits]
        assert sorted(probed) == sorted(DOMAINS * 4)  # each domain lp_rounds = 4 times
        assert all(p["mixture"] == rnd[48]["mixture"] == p["domain_weights"] for p in rnd[48:])
    assert mixer.stats() == {"steps": 520, "evals": 13 + 13 + 5, "learn_steps": 48 + 48 + 20, "updates": 2}
    assert trace[0]["until"] == 4 and trace[48]["until"] == 250


def test_visit_order_is_seeded():
    orders = [make_mixer("aioli", DOMAINS, seed=s).order(r).tolist() for s, r in ((0, 0), (0, 0), (0, 1), (1, 0))]
    assert orders[0] == orders[1] and orders[0] != orders[2] and orders[0] != orders[3]
    for o in orders:
        assert sorted(o) == sorted([0, 1, 2] * 4)


def test_prior_steps_train_the_start_before_the_first_round(world, run):
    start = {"a": 0.5, "b": 0.3, "c": 0.2}
    mixer = make_mixer("aioli", DOMAINS, start=start, prior_steps=20, update_steps=60, lp_rounds=1, lp_steps=2)
    evals = []
    trace = run(mixer, world(DOMAINS, np.eye(3) * 0.01, linear=True), 30, evals)
    assert all(p["phase"] == "prior" and p["mixture"] == start for p in trace[:20])
    assert trace[20]["phase"] == "learn" and evals == [20, 22, 24, 26]
    assert trace[0]["until"] == 20


A_TRUE = np.array([[0.010, 0.002, 0.004], [0.001, 0.006, 0.003], [0.000, 0.001, 0.012]])


@pytest.mark.parametrize("ohf", [0.625, 0.9, 1.0])
def test_recovers_the_linear_mixing_law(ohf, world, run):
    mixer = make_mixer("aioli", DOMAINS, one_hot_factor=ohf, lp_rounds=2, lp_steps=3, update_steps=40,
                       normalize_a=False, ema=None, eta=3.0)
    run(mixer, world(DOMAINS, A_TRUE, linear=True), 19)  # 18 LearnParams steps, then the update
    a = np.array(mixer.summary()["a"])
    np.testing.assert_allclose(a, 3 * A_TRUE, rtol=1e-8, atol=1e-12)  # lp_steps * A: loss drop over one visit
    p = np.exp(3.0 * a.sum(axis=0))
    assert list(mixer.plan().domain_weights.values()) == pytest.approx((p / p.sum()).tolist(), rel=1e-12)


def test_diagonal_keeps_the_self_effects(world, run):
    a_diag = np.diag([0.01, 0.004, 0.007])
    mixer = make_mixer("aioli", DOMAINS, diagonal=True, lp_rounds=1, lp_steps=2, update_steps=20, normalize_a=False)
    run(mixer, world(DOMAINS, a_diag, linear=True), 7)
    np.testing.assert_allclose(np.array(mixer.summary()["a"]), 2 * a_diag, rtol=1e-8, atol=1e-12)


def test_normalized_a_is_shifted_and_scaled(world, run):
    hurts = np.array([[0.01, -0.004, 0.0], [0.0, 0.01, 0.0], [0.0, 0.0, 0.01]])  # training on b raises a's loss
    mixer = make_mixer("aioli", DOMAINS, lp_rounds=1, lp_steps=2, update_steps=20)
    run(mixer, world(DOMAINS, hurts, linear=True), 7)
    a = np.array(mixer.summary()["a"])
    raw = 2 * hurts
    np.testing.assert_allclose(a, (raw - raw.min()) / (raw - raw.min()).sum(), atol=1e-12)
    w = mixer.plan().domain_weights
    assert w["b"] < w["a"] == pytest.approx(w["c"])


def rounds(mixer, w, run, n, every):
    out = []
    for _ in range(n):
        run(mixer, w, every)
        out.append(mixer.plan().domain_weights)
    return out


def test_weight_goes_to_the_domain_that_lowers_every_loss(world, run):
    helper = np.array([[0.004, 0.0, 0.004], [0.0, 0.004, 0.004], [0.0, 0.0, 0.004]])  # c helps a, b and itself
    mixer = make_mixer("aioli", DOMAINS, lp_rounds=1, lp_steps=2, update_steps=20, ema=None)
    traj = rounds(mixer, world(DOMAINS, helper, start=[6.0, 6.0, 6.0], noise=1e-4, seed=3), run, 6, 20)
    assert all(w["c"] > max(w["a"], w["b"]) for w in traj)
    assert all(t1["c"] > t0["c"] for t0, t1 in zip(traj, traj[1:]))  # the update compounds round after round


def test_weight_leaves_a_domain_whose_loss_has_stopped_falling(world, run):
    # a's loss sits at its floor (nothing left to learn); b and c still fall: a should lose weight
    w = world(DOMAINS, np.eye(3) * 0.02, start=[2.0, 5.0, 5.0], floors=[2.0, 1.0, 1.0])
    mixer = make_mixer("aioli", DOMAINS, lp_rounds=2, lp_steps=2, update_steps=30, ema=None, eta=1.0)
    traj = rounds(mixer, w, run, 3, 30)
    assert all(t["a"] < 0.25 < min(t["b"], t["c"]) for t in traj)
    assert traj[0]["a"] > traj[1]["a"] > traj[2]["a"]


def test_a_symmetric_world_leaves_the_mixture_alone(world, run):
    mixer = make_mixer("aioli", DOMAINS, lp_rounds=1, lp_steps=2, update_steps=20, ema=None, eta=1.0)
    for w in rounds(mixer, world(DOMAINS, np.full((3, 3), 0.002) + np.eye(3) * 0.01, linear=True), run, 3, 20):
        assert list(w.values()) == pytest.approx([1 / 3] * 3, abs=1e-9)


def test_ema_bounds_the_move_and_no_ema_compounds(world, run):
    grow = {}
    for ema in (0.1, None):
        mixer = make_mixer("aioli", DOMAINS, lp_rounds=1, lp_steps=2, update_steps=20, ema=ema, eta=1.0)
        grow[ema] = [w["c"] for w in rounds(mixer, world(DOMAINS, A_TRUE, linear=True), run, 4, 20)]
    assert grow[0.1] == pytest.approx([grow[0.1][0]] * 4, rel=1e-9)  # same A each round: start * exp(eta * colsum)
    assert grow[None][0] == pytest.approx(grow[0.1][0]) and np.all(np.diff(grow[None]) > 1e-3)


@pytest.mark.parametrize("anchor", ["start", "uniform"])
def test_anchor_of_a_restricted_start(anchor, world, run):
    start = {"a": 0.8, "b": 0.1, "c": 0.1}
    mixer = make_mixer("aioli", DOMAINS, start=start, prior_steps=10, anchor=anchor, lp_rounds=1, lp_steps=2,
                       update_steps=20)
    run(mixer, world(DOMAINS, np.eye(3) * 0.01, linear=True), 30)
    w = mixer.plan().domain_weights  # equal gains: the update keeps its base
    expect = start if anchor == "start" else {d: 1 / 3 for d in DOMAINS}
    assert list(w.values()) == pytest.approx(list(expect.values()), abs=1e-9)
