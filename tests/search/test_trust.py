"""A recommendation is never predicted worse than the best measured trial without saying why."""

from __future__ import annotations

import numpy as np
import pytest

from mixopt.core.mixture import Mixture, MixtureSpace
from mixopt.search import Observation, Recommendation, SearchContext, get_searcher
from mixopt.search.trust import best_target_trial, guard
from tests.search.conftest import ctx_from

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/search/conftest.py

SPACE = MixtureSpace(("a", "b", "c"), (0.0,) * 3, (1.0,) * 3)


def test_guard_replaces_a_worse_prediction_and_keeps_a_better_one():
    ctx = ctx_from(SPACE, [np.array([0.2, 0.3, 0.5]), np.array([0.6, 0.2, 0.2])], [1.0, 0.8])
    model = Recommendation(Mixture.from_array(np.array([0.1, 0.1, 0.8]), SPACE.domains), 0.9,
                           info={"searcher": "x", "source": "model"})
    rec = guard(ctx, model, std_at=lambda x: 0.05)
    assert rec.info["source"] == "best_trial" and rec.predicted == 0.8 and rec.std == 0.05
    assert rec.info["model_predicted"] == 0.9 and "worse than the best measured trial" in rec.info["reason"]
    assert np.allclose(rec.mixture.as_array(SPACE.domains), [0.6, 0.2, 0.2])
    kept = guard(ctx, model, fallback=False)
    assert kept.mixture == model.mixture and "anyway" in kept.info["reason"]
    better = Recommendation(model.mixture, 0.7, info={"source": "model"})
    assert guard(ctx, better).info == {"source": "model", "best_trial_value": 0.8}


def test_best_target_trial_ignores_other_rungs():
    from mixopt.search import Rung

    obs = (Observation(0, Mixture({"a": 1.0, "b": 0.0, "c": 0.0}), "COMPLETE", 0.1, 0),
           Observation(1, Mixture({"a": 0.0, "b": 1.0, "c": 0.0}), "COMPLETE", 0.5, 1))
    ctx = SearchContext(SPACE, obs, 0, (Rung(0, {}, 1.0), Rung(1, {}, 8.0)))
    assert best_target_trial(ctx).trial_id == 1 and best_target_trial(ctx, 0).trial_id == 0


@pytest.mark.parametrize("name,opts", [
    ("regmix", {"n_candidates": 300, "surrogate": "linear"}),
    ("mixing_law", {"n_candidates": 300, "min_fit": 5}),
    ("bo", {"raw_samples": 32, "num_restarts": 1, "maxiter": 10, "mc_samples": 16, "n_pool": 200,
            "min_fit": 5, "time_limit_s": 300}),
])
def test_model_recommendation_never_silently_worse(name, opts):
    """On pure noise no model beats the luckiest trial: the recommendation is that trial, with a reason."""
    rng = np.random.default_rng(0)
    X = rng.dirichlet(np.ones(3), 20)
    y = 1.0 + 0.05 * rng.normal(size=20)
    y[7] = 0.5                                                  # one trial far better than anything predicted
    rec = get_searcher(name, opts).recommend(ctx_from(SPACE, X, y.tolist()))
    assert rec.predicted is not None and rec.predicted >= 0.5 - 1e-12
    if rec.predicted > 0.5:
        pytest.fail(f"{name}: predicted {rec.predicted} without falling back to the best trial: {rec.info}")
    assert rec.info["source"] == "best_trial" and "reason" in rec.info
    assert np.allclose(rec.mixture.as_array(SPACE.domains), SPACE.project(X[7]))
