"""Scaling-law fits recover known parameters from synthetic data."""

import numpy as np
import pytest

from mixopt.analysis.scaling_laws import (
    LawAcrossScale,
    bootstrap_predictions,
    fit_law_across_scale,
    fit_loss_scale,
    holdout_error,
)
from mixopt.core.errors import UserError


def grid(groups=3, noise=0.0, seed=0):
    N, D = (v.ravel() for v in np.meshgrid([2e5, 6e5, 2e6], [5e6, 2e7, 8e7]))
    g = np.repeat(np.arange(groups), len(N))
    N, D = np.tile(N, groups), np.tile(D, groups)
    E = np.array([2.0, 2.2, 1.9])[:groups]
    L = E[g] + 30.0 / N ** 0.28 + 500.0 / D ** 0.32
    return g, N, D, L + np.random.default_rng(seed).normal(0, noise, len(L)), E


def test_recovers_exponents_and_irreducible_loss():
    g, N, D, L, E = grid()
    f = fit_loss_scale(g, N, D, L, 3)
    assert f.alpha == pytest.approx(0.28, abs=1e-3) and f.beta == pytest.approx(0.32, abs=1e-3)
    assert np.allclose(f.E, E, atol=1e-3) and np.allclose(f.A, 30.0, rtol=1e-2)


def test_extrapolation_error_and_bootstrap_interval_with_noise():
    g, N, D, L, E = grid(noise=0.002, seed=1)
    err = holdout_error(g, N, D, L, 3)
    assert np.all(err < 0.02)
    f = fit_loss_scale(g, N, D, L, 3)
    target = (8e6, 3.2e8)
    truth = E + 30.0 / target[0] ** 0.28 + 500.0 / target[1] ** 0.32
    boots = bootstrap_predictions(f, g, N, D, L, target, reps=40)
    lo, hi = np.nanpercentile(boots, 1, axis=0), np.nanpercentile(boots, 99, axis=0)
    pred = f.predict(np.arange(3), np.full(3, target[0]), np.full(3, target[1]))
    assert np.all(np.abs(pred - truth) / truth < 0.02)
    assert np.all(hi > lo)


def test_holdout_leaves_out_every_seed_of_the_largest_rung():
    g, N, D, L, E = grid(groups=2)
    top = N * D == (N * D).max()
    # three seeds at each group's largest rung, far off the law: a fit that kept any of them would bend
    g2 = np.concatenate([g, g[top], g[top]])
    N2, D2 = np.concatenate([N, N[top], N[top]]), np.concatenate([D, D[top], D[top]])
    L2 = np.concatenate([L + 0.5 * top, L[top] + 0.4, L[top] + 0.6])
    err = holdout_error(g2, N2, D2, L2, 2)
    truth = L[top]
    assert err == pytest.approx(0.5 / (truth + 0.5), rel=1e-3)  # the clean prediction vs the seeds' mean


def test_too_few_runs_is_a_clear_error():
    g, N, D, L, _ = grid()
    with pytest.raises(UserError, match="cannot determine"):
        fit_loss_scale(g[:5], N[:5], D[:5], L[:5], 3)


def test_mixing_law_across_scale_extrapolates_parameter_trends():
    rng = np.random.default_rng(0)
    t = np.array([-1.0, 0.4, 0.6])
    rungs = []
    for compute, c in ((1e12, 3.0), (1e13, 2.7), (1e14, 2.4)):  # c falls by 0.3 per decade
        X = rng.dirichlet(np.ones(3), 30)
        rungs.append((compute, X, c + 0.5 * np.exp(X @ t)))
    law = fit_law_across_scale(rungs)
    assert isinstance(law, LawAcrossScale)
    at = law.at(1e15)
    assert at.c == pytest.approx(2.1, abs=0.05)
    assert np.allclose(at.t, t - t.mean(), atol=0.05)


def test_efficiency_leverage_law_recovered():
    from mixopt.analysis.scaling_laws import ELFit, efficiency_leverage, fit_dense_curve, fit_el

    dense_C = np.geomspace(1e12, 1e15, 6)
    truth = fit_dense_curve(dense_C, 2.0 + 3e3 * dense_C ** -0.3)
    assert truth.gamma == pytest.approx(0.3, abs=0.01)
    law = ELFit(a=0.5, d=0.05, beta=0.3, gamma=-0.1)
    A = np.array([0.5, 0.25, 0.125, 0.25, 0.125, 0.0625, 0.25, 0.125])
    G = np.array([1, 2, 2, 4, 4, 8, 8, 1])
    C = np.array([1e12, 3e12, 1e13, 3e13, 1e14, 3e14, 1e13, 1e14])
    el = law.predict(A, G, C)
    L_moe = truth.loss(C * el)  # the MoE at compute C matches dense at compute C * EL
    measured = efficiency_leverage(truth, C, L_moe)
    assert np.allclose(measured, el, rtol=1e-6)
    fit = fit_el(A, G, C, measured)
    assert (fit.a, fit.d, fit.beta, fit.gamma) == pytest.approx((0.5, 0.05, 0.3, -0.1), abs=1e-6)
