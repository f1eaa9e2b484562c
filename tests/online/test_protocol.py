"""Every online mixer honours the protocol: mixtures on the simplex, atomic rejection of bad input, exact resume."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from mixopt.core.errors import OnlineMixerError, UserError
from mixopt.online import MIXERS, StepPlan, load_mixer, make_mixer

DOMAINS = ["a", "b", "c"]
A = [[0.02, 0.005, 0.0], [0.0, 0.01, 0.0], [0.003, 0.0, 0.015]]
REF = {"a": 2.5, "b": 3.5, "c": 1.5}
CASES = {
    "aioli": dict(name="aioli", update_steps=30, lp_rounds=1, lp_steps=2),
    "aioli-prior": dict(name="aioli", update_steps=30, lp_rounds=2, lp_steps=1, prior_steps=7, ema=None,
                        start={"a": 0.6, "b": 0.3, "c": 0.1}),
    "aioli-diagonal": dict(name="aioli", update_steps=30, lp_rounds=1, lp_steps=2, diagonal=True, one_hot_factor=1.0,
                           anchor="uniform"),
    "doremi": dict(name="doremi", reference=REF),
    "doremi-sample": dict(name="doremi", mode="sample", reference=REF, start={"a": 0.2, "b": 0.2, "c": 0.6}),
    "static": dict(name="static", start={"a": 0.5, "b": 0.25, "c": 0.25}),
}


def build(case, **extra):
    kw = dict(CASES[case])
    return make_mixer(kw.pop("name"), DOMAINS, study="s", **{**kw, **extra})


def new_world(world):
    return world(DOMAINS, A, start=[4.0, 5.0, 3.0], floors=[2.0, 3.0, 1.0], noise=0.01, seed=1)


def test_every_mixer_is_covered():
    assert {c["name"] for c in CASES.values()} == set(MIXERS)


@pytest.mark.parametrize("case", CASES)
def test_plans_are_mixtures_over_the_domains(case, world, run):
    mixer = build(case)
    trace = run(mixer, new_world(world), 75)
    assert json.loads(json.dumps(trace)) == trace
    for plan in trace:
        assert StepPlan.from_dict(plan).to_dict() == plan
        for key in ("mixture", "domain_weights") + (("loss_weights",) if plan["loss_weights"] else ()):
            w = plan[key]
            assert list(w) == DOMAINS
            assert all(x >= 0 and math.isfinite(x) for x in w.values())
            assert sum(w.values()) == pytest.approx(1.0, abs=1e-9)
    assert [p["step"] for p in trace] == list(range(75))
    assert mixer.weights() == mixer.plan().mixture
    for key in ("average", "trained", "domain_weights"):
        assert sum(mixer.summary()[key].values()) == pytest.approx(1.0, abs=1e-9)
    assert json.loads(json.dumps(mixer.summary())) == mixer.summary()


@pytest.mark.parametrize("cut", [5, 33])
@pytest.mark.parametrize("case", CASES)
def test_restore_continues_the_same_trajectory(case, cut, world, run):
    whole = run(build(case), new_world(world), 70)
    w = new_world(world)
    first = build(case)
    head = run(first, w, cut)
    saved = json.loads(json.dumps(first.state_dict(), allow_nan=False))  # strict JSON
    resumed = build(case)
    resumed.load_state_dict(saved)
    assert head + run(resumed, w, 70 - cut) == whole
    again = load_mixer(saved)  # from the state alone
    assert again.state_dict() == saved and again.plan() == first.plan()


def test_restore_between_an_evaluation_and_its_step(world, run):
    w1, w2 = new_world(world), new_world(world)
    whole = build("aioli")
    run(whole, w1, 2)
    half = build("aioli")
    run(half, w2, 2)  # step 2 is a LearnParams evaluation point
    for m, w in ((whole, w1), (half, w2)):
        assert m.plan().evaluate
        m.observe(2, w.losses(), kind="eval")
    resumed = build("aioli")
    resumed.load_state_dict(json.loads(json.dumps(half.state_dict())))
    assert not resumed.plan().evaluate
    assert run(resumed, w2, 40) == run(whole, w1, 40)


def bad_calls(mixer, eval_due):
    t = mixer.step
    full = {d: 3.0 for d in DOMAINS}
    calls = [
        ({"zzz": 1.0}, {}), ({"a": 1.0, "zzz": 1.0}, {}), ({"a": 1.0, "b": float("nan")}, {}), ({"a": -0.1}, {}),
        ({"a": float("inf")}, {}), ({"a": "1.0"}, {}), ({"a": None}, {}), ({"a": True}, {}), ([1.0, 2.0, 3.0], {}),
        ({1: 1.0}, {}), (full, {"kind": "bogus"}), ({d: float("nan") for d in DOMAINS}, {"kind": "eval"}),
        ({"a": 3.0, "b": 3.0}, {"kind": "eval"}), (full, {"kind": "eval", "reference": full}),
    ]
    steps = [t + 1, t - 1, True, "0", 1.5, None]
    if eval_due:
        calls += [(full, {}), ({}, {})]  # a train report while an evaluation is due
    else:
        calls += [(full, {"kind": "eval"})]  # an evaluation not asked for
    if mixer.name == "doremi":
        calls += [({}, {}), (full, {"reference": {"a": float("nan")}}), (full, {"reference": {"zzz": 1.0}})]
    else:
        calls += [(full, {"reference": full})]
    return [(t, losses, kw) for losses, kw in calls] + [(s, full, {}) for s in steps]


@pytest.mark.parametrize("steps", [0, 3, 40])
@pytest.mark.parametrize("case", CASES)
def test_bad_input_raises_one_line_and_changes_nothing(case, steps, world, run):
    mixer = build(case)
    run(mixer, new_world(world), steps)
    before, plan = json.dumps(mixer.state_dict()), mixer.plan()
    for step, losses, kw in bad_calls(mixer, plan.evaluate):
        with pytest.raises(OnlineMixerError) as e:
            mixer.observe(step, losses, **kw)
        assert isinstance(e.value, UserError) and "\n" not in str(e.value) and str(e.value).startswith(mixer.name)
        assert json.dumps(mixer.state_dict()) == before and mixer.plan() == plan, (step, losses, kw)


def test_doremi_needs_reference_losses():
    mixer = make_mixer("doremi", DOMAINS)
    with pytest.raises(OnlineMixerError, match="no reference loss for a"):
        mixer.observe(0, {"a": 3.0})
    mixer.observe(0, {"a": 3.0}, reference={"a": 2.0})
    assert mixer.step == 1


def tampered(state, path, value):
    s = json.loads(json.dumps(state))
    cur = s
    for key in path[:-1]:
        cur = cur[key]
    cur[path[-1]] = value
    return s


@pytest.mark.parametrize("case", ["aioli", "doremi", "static"])
def test_restore_refuses_a_foreign_or_broken_state(case, world, run):
    src = build(case)
    run(src, new_world(world), 12)
    state = src.state_dict()
    kw = dict(CASES[case])
    name = kw.pop("name")
    plain = {k: v for k, v in kw.items() if k not in ("start", "reference")}  # these name the domains
    others = [make_mixer(name, DOMAINS, study="other", **kw), make_mixer(name, ["a", "b", "d"], study="s", **plain),
              make_mixer(name, ["b", "a", "c"], study="s", **kw), make_mixer(name, DOMAINS, **kw),
              make_mixer("static" if name != "static" else "aioli", DOMAINS, study="s")]
    if name == "aioli":
        others.append(build(case, eta=0.5))
    if name == "doremi":
        others.append(build(case, reference={**REF, "c": 9.0}))
    if name == "static":
        others.append(build(case, start={"a": 0.25, "b": 0.5, "c": 0.25}))
    for other in others:
        before = json.dumps(other.state_dict())
        with pytest.raises(OnlineMixerError) as e:
            other.load_state_dict(state)
        assert "\n" not in str(e.value) and json.dumps(other.state_dict()) == before
    broken = [None, [], tampered(state, ["fingerprint"], "0" * 16), tampered(state, ["format"], "v0"),
              tampered(state, ["step"], -1), tampered(state, ["step"], "3"), tampered(state, ["stats", "evals"], -2),
              tampered(state, ["sums", "data"], [1.0]), tampered(state, ["sums", "data"], [1.0, None, 2.0]),
              tampered(state, ["method"], None)]
    if name == "aioli":
        broken += [tampered(state, ["method", "p"], [0.5, 0.5, 0.5]), tampered(state, ["method", "grad"], [[1.0]]),
                   tampered(state, ["method", "last_eval"], "x")]
    if name == "doremi":
        broken += [tampered(state, ["method", "alpha"], [-0.5, 1.0, 0.5]), tampered(state, ["method", "scores"], [1])]
    target = build(case)
    before = json.dumps(target.state_dict())
    for s in broken:
        with pytest.raises(OnlineMixerError) as e:
            target.load_state_dict(s)
        assert "\n" not in str(e.value) and json.dumps(target.state_dict()) == before
    with pytest.raises(OnlineMixerError):
        load_mixer(tampered(state, ["mixer"], "nope"))


@pytest.mark.parametrize("name, domains, kw, match", [
    ("nope", DOMAINS, {}, "unknown; allowed: aioli, doremi, static"),
    ("aioli", DOMAINS, {"etaa": 1.0}, "aioli.etaa: unknown key"),
    ("aioli", DOMAINS, {"eta": -1.0}, "aioli.eta"),
    ("aioli", DOMAINS, {"eta": "fast"}, "aioli.eta"),
    ("aioli", DOMAINS, {"one_hot_factor": 1 / 3}, "aioli.one_hot_factor"),
    ("aioli", DOMAINS, {"ema": 1.0}, "aioli.ema"),
    ("aioli", DOMAINS, {"anchor": "prior"}, "aioli.anchor"),
    ("aioli", DOMAINS, {"update_steps": 48}, "aioli.update_steps: 48 leaves no step"),
    ("aioli", [f"d{i}" for i in range(18)], {}, "288 steps"),
    ("doremi", DOMAINS, {"smoothing": 2.0}, "doremi.smoothing"),
    ("doremi", DOMAINS, {"mode": "both"}, "doremi.mode"),
    ("doremi", DOMAINS, {"reference": {"a": 1.0}}, "no loss for b, c"),
    ("doremi", DOMAINS, {"reference": {"a": 1.0, "b": 1.0, "c": -1.0}}, "finite and >= 0"),
    ("static", DOMAINS, {"start": {"a": 0.5, "b": 0.5, "zzz": 0.0}}, "static.start: unknown domains zzz"),
    ("static", DOMAINS, {"start": {"a": 0.5, "b": 0.5}}, "static.start: no weight for c"),
    ("static", DOMAINS, {"start": {"a": 0.5, "b": 0.6, "c": 0.0}}, "sum to"),
    ("static", DOMAINS, {"start": {"a": 1.5, "b": -0.5, "c": 0.0}}, "negative"),
    ("static", DOMAINS, {"start": [0.5, 0.5, 0.0]}, "static.start: must be a mapping"),
    ("static", DOMAINS, {"start": np.array([0.5, 0.5, 0.0])}, "static.start: must be a mapping"),
    ("static", DOMAINS, {"start": "natural"}, "static.start: must be a mapping"),
    ("static", ["a"], {}, "2 or more"),
    ("static", ["a", "a"], {}, "duplicate"),
    ("static", "ab", {}, "list of names"),
    ("static", DOMAINS, {"study": ""}, "static.study"),
])
def test_make_mixer_refuses_bad_settings(name, domains, kw, match):
    with pytest.raises(OnlineMixerError, match=match) as e:
        make_mixer(name, domains, **kw)
    assert isinstance(e.value, UserError) and "\n" not in str(e.value)


def test_restricted_start_is_the_first_mixture():
    start = {"a": 0.7, "b": 0.2, "c": 0.1}
    for name in MIXERS:
        mixer = make_mixer(name, DOMAINS, start=start, **({"prior_steps": 5} if name == "aioli" else {}))
        assert mixer.plan().domain_weights == start
    assert make_mixer("aioli", DOMAINS, start=start, prior_steps=5).weights() == start


def test_unchanged_plans_hold_until_their_until(world, run):
    for case in CASES:
        trace = run(build(case), new_world(world), 70)
        for i, plan in enumerate(trace):
            end = plan["until"] if plan["until"] is not None else len(trace)
            for later in trace[i + 1:min(end, len(trace))]:
                assert (later["mixture"], later["phase"], later["loss_weights"], later["evaluate"]) == \
                       (plan["mixture"], plan["phase"], plan["loss_weights"], False), case


def test_import_pulls_no_torch():
    code = "import sys, mixopt.online; assert not {'torch', 'mlflow', 'ray'} & set(sys.modules), sys.modules.keys()"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]


def test_numbers_of_any_kind_are_losses():
    mixer = make_mixer("doremi", DOMAINS, reference=REF)
    mixer.observe(0, {"a": np.float32(3.0), "b": np.int64(4), "c": 2})
    assert mixer.step == 1
