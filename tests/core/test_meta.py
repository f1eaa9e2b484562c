"""StudyMeta: one typed form of a study's definition, read back exactly, old studies included."""

import json

import pytest

import mixopt
from mixopt.core.errors import ConfigError, SpaceError
from mixopt.core.meta import StudyMeta
from mixopt.core.mixture import MixtureSpace
from mixopt.core.objective import Objective
from mixopt.core.spec import ProxySpec

SPACE = MixtureSpace(("a", "b", "c"), (0.1, 0.0, 0.0), (1.0, 0.5, 1.0), (0.2, 0.3, 0.5))
RUNGS = (ProxySpec(preset="dense-0.1m", tokens=4096), ProxySpec(preset="dense-1m", tokens=8192))


def test_round_trip_through_json_is_exact():
    m = StudyMeta("s", SPACE, Objective({"a": 0.5, "b": 0.5}, (), "mine"), "regmix", {"surrogate": "linear"}, 4, 7,
                  None, RUNGS, {"config": {"x": 1}, "transfer_of": "other"})
    back = StudyMeta.from_dict(json.loads(json.dumps(m.to_dict())))
    assert back == m and back.spec == RUNGS[-1]  # the ladder's last rung is the spec
    assert back.rung_of(RUNGS[0]) == 0 and back.rung_of(ProxySpec(preset="dense-3m")) is None
    assert m.to_dict()["domains"] == ["a", "b", "c"] and m.to_dict()["rungs"][1]["preset"] == "dense-1m"


def test_studies_stored_before_the_rename_load():
    old = {"name": "old", "domains": ["a", "b"], "lower": [0, 0], "upper": [1, 1], "prior": [],
           "objective": {"weights": {"a": 1.0}, "targets": [], "description": "loss on a"},
           "searcher": "random", "searcher_options": {}, "n_init": 0, "seed": 0, "spec": None,
           "fidelities": [RUNGS[0].to_dict()], "config": {"study": "old"}}
    m = StudyMeta.from_dict(old)
    assert m.rungs == (RUNGS[0],) and m.extra == {"config": {"study": "old"}}


def test_bad_metadata_is_one_clear_error():
    with pytest.raises(ConfigError, match="n_init"):
        StudyMeta("s", SPACE, Objective({"a": 1.0}), n_init=-1)
    with pytest.raises(ConfigError, match="extra key 'seed' is a study field"):
        StudyMeta("s", SPACE, Objective({"a": 1.0}), extra={"seed": 3})
    with pytest.raises(ConfigError, match="weights.a"):
        Objective.from_dict({"weights": {"a": -1.0}})
    with pytest.raises(SpaceError, match="needs lists domains, lower, upper"):
        MixtureSpace.from_dict({"domains": ["a", "b"]})


def test_training_domains_leave_out_held_out_targets():
    obj = Objective.from_config({"target": "b"}, ["a", "b", "c"])
    assert obj.training_domains(["a", "b", "c"]) == ["a", "c"]
    study = mixopt.create_study("t", domains=["a", "b", "c"], objective={"target": "b"})
    assert study.space.domains == ("a", "c") and study.meta.objective == obj


def test_objective_maximize_is_gone_and_a_searcher_is_built_once(monkeypatch):
    """``maximize`` was accepted and never honoured: it is not a field any more. create_study builds
    the searcher once (validating its options) and the Study uses that very object."""
    with pytest.raises(TypeError):
        Objective({"a": 1.0}, (), "", True)
    from mixopt import search

    built = []
    real = search.get_searcher
    monkeypatch.setattr(search, "get_searcher", lambda n, o=None: built.append(n) or real(n, o))
    mixopt.create_study("once", domains=["a", "b"], searcher="regmix", searcher_options={"surrogate": "linear"})
    assert built.count("regmix") == 1



def test_mup_studies_stored_before_the_read_out_multiplier_read_back_as_alpha_1():
    """Their proxies trained with alpha 1: the spec and every rung say so (not today's default), so a resumed
    study trains its new trials as its old ones and finds their rungs."""
    rungs = tuple(ProxySpec(preset=p, tokens=4096, parametrization="mup", mup_output_mult=1.0)
                  for p in ("dense-w64", "dense-w128"))
    d = StudyMeta("s", SPACE, Objective({"a": 1.0}), rungs=rungs).to_dict()
    for spec in [d["spec"], *d["rungs"]]:
        spec.pop("mup_output_mult")
    m = StudyMeta.from_dict(json.loads(json.dumps(d)))
    assert m.rungs == rungs and m.spec == rungs[-1] and m.rung_of(rungs[0]) == 0
    today = ProxySpec(preset="dense-w64", tokens=4096, parametrization="mup")
    assert today.mup_output_mult == 4.0 and m.rung_of(today) is None
