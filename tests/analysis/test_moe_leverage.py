"""MoE efficiency leverage (arXiv 2507.17702): the paper's law reproduced, fits predicting a held-out
compute level, an MoE spec's dense-equivalent compute, and ``mixopt fit`` on a dense + MoE ladder."""

import numpy as np
import pytest

import mixopt
from mixopt.analysis.fits import fit_moe_leverage, run_fit
from mixopt.analysis.scaling_laws import (
    PUBLISHED_EL,
    DenseCurve,
    ELFit,
    fit_el,
    forward_flops_per_token,
    moe_leverage,
    saturated_activation,
    spec_leverage,
)
from mixopt.core.errors import UserError
from mixopt.core.spec import ProxySpec


# --- the published law (Table 2: a=1.23, d=-7.61e-2, gamma=1.67e-2, beta=-1.17e-1, A_start=1.63e-2, A_max=5.28e16)
def test_published_law_reproduces_the_papers_claims():
    # §4.2.2 / Figure 1b: "an efficiency leverage (EL) exceeding 7x can be achieved at a budget of 1e22 FLOPs
    # with an activation ratio of 3.1% and a granularity of 12"
    assert 7.0 < float(PUBLISHED_EL.predict(0.031, 12, 1e22)) < 7.5
    # §4.1.2: the optimal granularity is "around 12" (Key Takeaway 2), "between 8 and 12" (§1)
    assert 8 <= PUBLISHED_EL.optimal_granularity() <= 12
    # Eq. 10: "when A = 1, we have EL = 1"
    assert float(PUBLISHED_EL.predict(1.0, 2, 1e20)) == pytest.approx(1.0, abs=0.02)
    # EL grows with compute and with sparsity (§4.1.1, Key Takeaway 1)
    el = PUBLISHED_EL.predict(np.array([0.25, 0.1, 0.03]), 8, np.array([[1e18], [1e20]]))
    assert np.all(np.diff(el, axis=1) > 0) and np.all(el[1] > el[0])


def test_saturation_is_about_a_plus_a_start():
    assert saturated_activation(0.031) == pytest.approx(0.031 + 1.63e-2, rel=1e-9)


def test_moe_leverage_of_a_target_and_of_a_spec():
    lev = moe_leverage(1e9, 0.031, 12, 2.5e12)  # C = 2 * 1e9 * 2.5e12 = 5e21
    assert lev.compute == pytest.approx(5e21)
    assert lev.el == pytest.approx(float(PUBLISHED_EL.predict(0.031, 12, 5e21)))
    assert lev.dense_compute == pytest.approx(lev.el * 5e21) and lev.dense_active_params == pytest.approx(lev.el * 1e9)
    assert not lev.in_range and "C=5e+21" in lev.message  # fitted on 1e18-3e20
    spec = ProxySpec(preset="moe-1m-fg", tokens=3_000_000)
    s = spec_leverage(spec)
    assert s.activation_ratio == pytest.approx(4 / 17) and s.granularity == 2.0  # ProxySpec G 4 = 2 d_model/d_expert 2
    assert s.compute == pytest.approx(forward_flops_per_token(spec) * 3_000_000)
    assert forward_flops_per_token(spec) == 2 * spec.active_non_embedding_params() + 4 * 5 * 128 * 128
    dense = spec_leverage(ProxySpec(preset="dense-1m", tokens=3_000_000))
    assert dense.el == 1.0 and dense.dense_compute == dense.compute
    with pytest.raises(UserError, match="activation_ratio"):
        moe_leverage(1e9, 1.5, 12, 1e12)


# --- fitting ---------------------------------------------------------------------------------------
TRUTH = ELFit(a=0.2, d=-0.05, beta=-0.15, gamma=0.02)


def test_fit_recovers_the_law_and_predicts_a_held_out_compute_level():
    rng = np.random.default_rng(0)
    A = np.tile([0.5, 0.25, 0.125, 0.0625], 8)
    G = np.repeat([1, 2, 4, 8], 8)
    C = np.tile(np.repeat([1e11, 1e12, 1e13, 1e14], 4), 2)
    EL = TRUTH.predict(A, G, C)
    train = C < 1e14
    fit = fit_el(A[train], G[train], C[train], EL[train] * np.exp(rng.normal(0, 0.01, train.sum())))
    assert fit.fixed == ()
    assert (fit.a, fit.d, fit.beta, fit.gamma) == pytest.approx((0.2, -0.05, -0.15, 0.02), abs=0.03)
    held = fit.predict(A[~train], G[~train], C[~train])
    assert np.max(np.abs(held / EL[~train] - 1)) < 0.05  # the published law would be far off here:
    assert np.max(np.abs(PUBLISHED_EL.predict(A[~train], G[~train], C[~train]) / EL[~train] - 1)) > 0.5


def test_what_a_ladder_cannot_identify_stays_at_the_prior():
    A, C = np.array([0.5, 0.25, 0.125, 0.5, 0.25]), np.array([1e11, 1e11, 1e12, 1e12, 1e13])
    G = np.ones(5)  # one granularity: beta and gamma cannot be fitted
    fit = fit_el(A, G, C, TRUTH.predict(A, G, C), prior=TRUTH)
    assert fit.fixed == ("beta", "gamma") and (fit.a, fit.d) == pytest.approx((0.2, -0.05), abs=1e-9)
    one_c = fit_el(A[:2], G[:2], np.full(2, 1e12), TRUTH.predict(A[:2], G[:2], 1e12), prior=TRUTH)
    assert one_c.fixed == ("d", "beta", "gamma") and one_c.a == pytest.approx(0.2, abs=1e-9)
    with pytest.raises(UserError, match="at least 2"):
        fit_el(A[:1], G[:1], C[:1], np.array([2.0]))


# --- `mixopt fit` on a dense + MoE ladder ---------------------------------------------------------
DENSE = DenseCurve(E=2.0, B=40.0, gamma=0.1)  # loss vs C = M D (forward FLOPs)
LAW = ELFit(a=0.3, d=-0.06, beta=-0.1, gamma=PUBLISHED_EL.gamma)


def _ladder_study(tmp_path):
    study = mixopt.create_study("moe-ladder", domains=["a", "b"], searcher="random")
    mix = {"a": 0.5, "b": 0.5}
    specs = [ProxySpec(preset=p, tokens=t) for p in ("dense-0.1m", "dense-0.5m", "dense-1m", "dense-3m")
             for t in (400_000, 1_600_000)]
    specs += [ProxySpec(preset=p, tokens=t) for p in ("moe-0.1m", "moe-1m", "moe-1m-fg")
              for t in (400_000, 1_600_000, 6_400_000)]
    for s in specs:
        study.enqueue(mix, spec=s)
    for t in study.ask(len(specs)):
        C = forward_flops_per_token(t.spec) * t.spec.tokens
        el = 1.0 if t.spec.arch == "dense" else float(LAW.predict(t.spec.activation_ratio, t.spec.granularity / 2, C))
        loss = float(DENSE.loss(C * el))
        study.tell(t.trial_id, {"a": loss, "b": loss})
    return study


def test_fit_moe_el_on_a_ladder_predicts_its_largest_compute_level(tmp_path):
    study = _ladder_study(tmp_path)
    r = fit_moe_leverage(study, tmp_path / "fits")
    assert r["fixed"] == ["gamma"]  # granularities 1 and 2 (the paper's): gamma held at Table 2's value
    assert (r["a"], r["d"], r["beta"]) == pytest.approx((0.3, -0.06, -0.1), abs=0.02)
    held = r["heldout"]  # the three MoE runs at the largest token budget, from the six below it
    assert held["tokens"] == 6_400_000 and len(held["runs"]) == 3 and held["train_runs"] == 6
    assert held["rel_error_mean"] < 0.02 and held["compute"][1] == max(run["C"] for run in r["runs"])
    assert all("outside" in run["note"] for run in r["runs"])  # CPU-sized compute is far below the paper's
    assert (tmp_path / "fits" / "fit_moe_el.json").exists()


def test_fit_hparams_of_a_study_logs_a_fit_run(tmp_path):
    study = mixopt.create_study("hp", domains=["a", "b"], searcher="random")
    for preset in ("dense-0.1m", "dense-0.5m", "dense-1m"):
        for lr in (1e-2, 2e-2, 4e-2):   # brackets the best lr below, so the grid's best falls with size too
            study.enqueue({"a": 0.5, "b": 0.5}, spec=ProxySpec(preset=preset, tokens=400_000, lr=lr))
    for t in study.ask(9):
        n = t.spec.non_embedding_params()
        best = 0.05 * (n / 1e5) ** -0.5  # the best lr falls with size
        loss = 3.0 + 0.1 * np.log(t.spec.lr / best) ** 2
        study.tell(t.trial_id, {"a": loss, "b": loss})
    res = run_fit(study, study.storage, ["hparams"], (4e6, 1.6e6), 20, str(tmp_path), tolerance=0.0)
    r = res["hparams"]
    assert r["fixed"] == ["lr.d_exp", "batch.d_exp"] and r["lr"]["n_exp"] < 0  # one token budget
    assert len(r["notes"]) == 1 and "not swept" in r["notes"][0]  # every run had the spec's batch size
    assert r["predicted"]["N"] == 4e6 and r["predicted"]["lr"] > 0
    assert [x["tags"]["mixopt.fit"] for x in study.storage.runs("hp", "fit")] == ["hparams"]
    assert (tmp_path / "hp" / "fits" / "fit_hparams.json").exists()
