"""The worker boundary: typed requests and outcomes, plain data only across a process boundary."""

import pickle

import pytest

from mixopt.core.errors import MixtureError, TrialError
from mixopt.core.mixture import Mixture
from mixopt.core.spec import ProxySpec
from mixopt.core.worker import TrialFailure, TrialRequest, TrialResult, outcome_from_dict, to_outcome


def test_request_is_typed_and_round_trips_as_plain_data():
    r = TrialRequest(3, {"a": 0.25, "b": 0.75}, ProxySpec(preset="dense-0.1m").to_dict(), "/c", ["a"])
    assert isinstance(r.mixture, Mixture) and isinstance(r.spec, ProxySpec) and r.eval_domains == ("a",)
    d = r.to_dict()
    assert d["mixture"] == {"a": 0.25, "b": 0.75} and isinstance(d["spec"], dict)
    assert TrialRequest.from_dict(d) == r and TrialRequest.of(r) is r
    with pytest.raises(MixtureError, match="sum to"):
        TrialRequest.from_dict(d | {"mixture": {"a": 0.5}})


def test_outcomes_round_trip_and_failures_keep_their_kind():
    res = TrialResult({"a": 2.0}, [{"step": 1, "losses": {"a": 2.0}}], {"tokens": 10.0}, 4, "cpu")
    assert outcome_from_dict(res.to_dict()) == res
    fail = TrialFailure(5, "diverged", "diverged at step 2")
    assert outcome_from_dict(fail.to_dict()) == fail and to_outcome(fail) is fail
    assert outcome_from_dict({"a": 1.5}, trial_id=7) == TrialResult({"a": 1.5}, trial_id=7)
    assert TrialFailure.from_exception(MixtureError("bad"), 1).kind == "mixture"
    assert TrialFailure.from_exception(TrialError("no data", kind="data"), 1) == \
        TrialFailure(1, "data", "TrialError: no data")
    assert TrialFailure.from_exception(RuntimeError("boom\nmore"), 2).reason == "RuntimeError: boom"
    with pytest.raises(ValueError, match="kind"):
        TrialFailure(1, "oops", "x")


def test_trial_error_survives_pickling_with_its_kind():
    """Ray ships a raising trial's exception to the driver by pickling it."""
    e = pickle.loads(pickle.dumps(TrialError("diverged at step 3", kind="diverged")))
    assert str(e) == "diverged at step 3" and e.kind == "diverged"
    assert isinstance(TrialFailure(1, "diverged", "x").to_exception(), TrialError)
    assert isinstance(TrialFailure(1, "mixture", "x").to_exception(), MixtureError)
