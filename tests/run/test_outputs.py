"""The printed summary of a finished study: the recommendation explained beside the best measured trial."""

import numpy as np
import pytest

import mixopt
from mixopt.core.mixture import Mixture
from mixopt.run.outputs import explain_recommendation, summary_table
from mixopt.search import Recommendation

DOMAINS = ["code", "legal", "prose"]


@pytest.fixture(scope="module")
def study():
    s = mixopt.create_study("summary", domains=DOMAINS, searcher="regmix", n_init=6, seed=0,
                            searcher_options={"surrogate": "linear", "n_candidates": 2000})
    for _ in range(10):
        [t] = s.ask()
        x = t.mixture.as_array(DOMAINS)
        s.tell(t.trial_id, {"losses": {d: float(3.0 - 0.5 * x[j] + 0.8 * (x ** 2).sum()) for j, d in enumerate(DOMAINS)}})
    return s


def _rec(mix, pred, **info):
    return Recommendation(Mixture(dict(zip(DOMAINS, mix))), pred, info=info)


def test_model_optimum_beside_the_best_trial(study):
    best = study.best()
    rec = _rec([0.3, 0.3, 0.4], best.value - 0.0125, searcher="regmix", model="gp", n_fit=10, top_k=100,
               n_candidates=20000, source="top_k_average")
    line = explain_recommendation(rec, best, DOMAINS)
    assert line == (f"recommended: the GP's predicted optimum (pred {best.value - 0.0125:.4f}) differs from the best "
                    f"trial {best.trial_id} (measured {best.value:.4f}) because the GP fitted on 10 trials predicts "
                    "0.0125 lower there, at a mixture no trial has run (the mean of the 100 best of 20000 it scored)")
    assert "\n" not in line
    off = _rec([0.3, 0.3, 0.4], best.value + 0.01, searcher="bo", source="gp_posterior_mean", n_fit=10)
    assert "because fallback_to_best is off: the GP predicts its optimum 0.0100 worse" in explain_recommendation(
        off, best, DOMAINS)


def test_best_trial_recommended_or_nothing_to_explain(study):
    best = study.best()
    mix = best.mixture.as_array(DOMAINS)
    guarded = _rec(mix, best.value, searcher="mixing_law", source="best_trial", trial_id=best.trial_id,
                   model_predicted=best.value + 0.02, model_source="mixing_law_optimum", n_fit=10)
    assert explain_recommendation(guarded, best, DOMAINS) == (
        f"recommended: the best trial {best.trial_id} (measured {best.value:.4f}), because the mixing law fitted on "
        f"10 trials predicts its own optimum worse ({best.value + 0.02:.4f})")
    assert explain_recommendation(_rec(mix, 2.0, source="top_k_average", model="gp"), best, DOMAINS) is None
    assert explain_recommendation(_rec(mix, best.value, source="best_trial", trial_id=best.trial_id), best,
                                  DOMAINS) is None  # random search: its best trial, nothing to explain
    assert explain_recommendation(_rec([0.2, 0.2, 0.6], 2.0, source="top_k_average"), None, DOMAINS) is None


def test_summary_prints_the_line_when_they_differ(study):
    rec = study.recommend()
    best = study.best()
    text = summary_table(study, rec)
    differs = not np.allclose(rec.mixture.as_array(DOMAINS), best.mixture.as_array(DOMAINS))
    assert ("differs from the best trial" in text) == differs
    line = explain_recommendation(rec, best, DOMAINS)
    assert (line in text.splitlines()) if line else "recommended: the" not in text
