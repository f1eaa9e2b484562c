"""Data-constrained scaling law: the release's published values, per-domain epochs, the mixture penalty."""

import math

import numpy as np
import pytest

from mixopt.analysis.repetition import (
    DATA_CONSTRAINED,
    DataConstrainedLaw,
    effective_data,
    mixture_epochs,
    repetition_report,
)
from mixopt.core.errors import UserError
from mixopt.core.mixture import Mixture


# github.com/huggingface/datablations README.md, section "Parametric Fit": scaling_law(N, D, U) and
# optimal_allocation(C, U) with a, b, e, alpha, beta, rd_star, rn_star = [6.255414, 7.3049974, 0.6254804,
# 0.3526596, 0.3526596, 15.387756, 5.309743], printed values as the README gives them.
@pytest.mark.parametrize("N,D,U,loss", [
    (6.34e9, 242e9, 25e9, 2.2256440889984477),  # "Models in Figure 1 (right)" ... "<- This one is better"
    (8.67e9, 178e9, 25e9, 2.2269634075087867),
])
def test_release_readme_losses_reproduced(N, D, U, loss):
    assert DATA_CONSTRAINED.loss(N, D, U) == pytest.approx(loss, rel=5e-6)  # 5 significant digits (here: all)
    assert DATA_CONSTRAINED.loss(N, D, U) == pytest.approx(loss, rel=1e-12)


def test_release_readme_optimal_allocation_reproduced():
    # optimal_allocation(10**22, 25e9) -> 237336955477.55075 tokens, 9.49347821910203 epochs, 7022364735.879969 params
    _, tokens, params = DATA_CONSTRAINED.optimal_allocation(1e22, 25e9)
    assert tokens == pytest.approx(237336955477.55075, rel=5e-6)
    assert tokens / 25e9 == pytest.approx(9.49347821910203, rel=5e-6)
    assert params == pytest.approx(7022364735.879969, rel=5e-6)


def test_constants_are_the_papers():
    # arXiv 2305.16264: R_D* = 15.4, R_N* = 5.3; the C4 fit's E = exp(e), alpha = beta
    law = DataConstrainedLaw()
    assert round(law.rd_star, 1) == 15.4 and round(law.rn_star, 1) == 5.3
    assert math.exp(law.e) == pytest.approx(1.8692, abs=1e-4) and law.alpha == law.beta


def test_effective_data_shape():
    U = 1e9
    assert effective_data(U, 0.5e9) == pytest.approx(0.5e9)  # no repetition: every token counts
    assert effective_data(U, U) == pytest.approx(U)
    four = float(effective_data(U, 4 * U))  # 4 epochs: R_D = 3
    assert four == pytest.approx(U * (1 + 15.387756 * (1 - math.exp(-3 / 15.387756))))
    assert 3.6 * U < four < 4 * U  # nearly as good as fresh data ...
    assert float(effective_data(U, 100 * U)) < U * (1 + 15.387756)  # ... but never more than U (1 + R_D*)
    assert np.all(np.diff(effective_data(U, np.geomspace(U, 100 * U, 20))) > 0)


def test_mixture_epochs_are_weight_times_budget_over_unique():
    m = Mixture({"code": 0.5, "web": 0.3, "legal": 0.2})
    ep = mixture_epochs(m, {"code": 10e9, "web": 100e9, "legal": 1e9}, 100e9)
    assert ep == pytest.approx({"code": 5.0, "web": 0.3, "legal": 20.0})


def test_one_domain_report_is_the_law():
    r = repetition_report({"c4": 1.0}, {"c4": 25e9}, 242e9, 6.34e9)
    assert r.loss_repeated == pytest.approx(2.2256440889984477, rel=1e-12)
    assert r.penalty == pytest.approx(DATA_CONSTRAINED.loss(6.34e9, 242e9, 25e9)
                                      - DATA_CONSTRAINED.loss(6.34e9, 242e9, 242e9), rel=1e-12)
    assert r.penalty > 0 and r.max_epochs == pytest.approx(9.68) and len(r.warnings) == 1


def test_mixture_penalty_grows_with_repetition_and_warns_past_4_epochs():
    unique = {"code": 10e9, "web": 1000e9, "legal": 2e9}
    none = repetition_report({"code": 0.05, "web": 0.94, "legal": 0.01}, unique, 100e9, 1e9)
    assert none.penalty == pytest.approx(0.0, abs=1e-12) and none.warnings == () and none.effective_fraction == 1.0
    some = repetition_report({"code": 0.3, "web": 0.69, "legal": 0.01}, unique, 100e9, 1e9)  # code: 3 epochs
    more = repetition_report({"code": 0.6, "web": 0.3, "legal": 0.1}, unique, 100e9, 1e9)  # code 6, legal 5
    assert 0 < some.penalty < more.penalty and some.warnings == ()
    assert [w.split(":")[0] for w in more.warnings] == ["code", "legal"]
    assert more.effective_fraction < some.effective_fraction < 1.0
    by = {d.domain: d for d in more.domains}
    assert by["code"].epochs == pytest.approx(6.0) and by["code"].effective_tokens < by["code"].tokens
    assert more.to_dict()["domains"]["legal"]["epochs"] == pytest.approx(5.0)


@pytest.mark.parametrize("mix,unique,D,N,needle", [
    ({"a": 0.5, "b": 0.5}, {"a": 1e9}, 1e10, 1e8, "no count for domain 'b'"),
    ({"a": 0.5, "b": 0.5}, {"a": 1e9, "b": 0}, 1e10, 1e8, "unique tokens.b"),
    ({"a": 1.0}, {"a": 1e9}, -1, 1e8, "target tokens"),
    ({"a": 1.0}, {"a": 1e9}, 1e10, 0, "params"),
])
def test_bad_input_is_a_user_error(mix, unique, D, N, needle):
    with pytest.raises(UserError, match=needle):
        repetition_report(mix, unique, D, N)


def test_zero_weight_domain_needs_no_count():
    r = repetition_report({"a": 1.0, "b": 0.0}, {"a": 1e9}, 5e8, 1e8)
    assert {d.domain: d.epochs for d in r.domains} == {"a": 0.5, "b": 0.0}
