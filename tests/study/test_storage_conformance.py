"""One conformance suite over every storage (in memory, MLflow on SQLite): the whole contract of
:class:`mixopt.study.Storage`, as the searcher conformance suite does for searchers."""

import pytest

from mixopt.core.errors import UserError
from mixopt.core.meta import StudyMeta
from mixopt.core.mixture import Mixture
from mixopt.core.spec import ProxySpec
from mixopt.core.trial import Trial, TrialState
from mixopt.study import InMemoryStorage, MlflowStorage, Storage, get_storage

DOMAINS = ["a", "b", "c"]


def meta(name: str = "s") -> StudyMeta:
    """A study's metadata as studies stored it before the ladder was named ``rungs`` (it still loads)."""
    return StudyMeta.from_dict(
        {"name": name, "domains": DOMAINS, "lower": [0.0] * 3, "upper": [1.0] * 3, "prior": [],
         "objective": {"weights": {d: 1 / 3 for d in DOMAINS}, "targets": [], "description": "mean"},
         "searcher": "random", "searcher_options": {}, "n_init": 0, "seed": 0, "spec": None, "fidelities": [],
         "config": {"note": "kept as extra"}})


@pytest.fixture(params=["memory", "mlflow-sqlite"])
def store(request, tmp_path) -> Storage:
    if request.param == "memory":
        return InMemoryStorage()
    return MlflowStorage(f"sqlite:///{tmp_path / 'mlflow.db'}")


def trial(i: int, state=TrialState.PENDING, **kw) -> Trial:
    return Trial(i, Mixture({"a": 0.5, "b": 0.25, "c": 0.25}, DOMAINS), ProxySpec(preset="dense-0.1m", tokens=20480),
                 state, searcher="random", phase="init", **kw)


def test_create_load_and_list(store):
    assert store.load_meta("s") is None and store.study_names() == [] and store.trials("s") == []
    store.create_study(meta("s"))
    store.create_study(meta("t"))
    assert store.load_meta("s") == meta("s") and store.load_meta("s").space.domains == tuple(DOMAINS)
    assert store.load_meta("s").extra == {"config": {"note": "kept as extra"}}
    assert store.study_names() == ["s", "t"]
    with pytest.raises(UserError, match="already exists"):
        store.create_study(meta("s"))
    assert isinstance(store.uri, str) and store.uri


def test_trials_round_trip_in_id_order(store):
    store.create_study(meta())
    for i in range(3):
        store.add_trial("s", trial(i))
    done = trial(1, TrialState.COMPLETE, value=2.5, losses={"a": 2.0, "b": 3.0, "c": 2.5},
                 metrics={"tokens_per_s": 10.0, "steps": 4.0}, device="cpu")
    store.update_trial("s", done.with_(run_id=store.trials("s")[1].run_id))
    store.update_trial("s", store.trials("s")[2].with_(state=TrialState.FAILED, error="OOM"))
    got = store.trials("s")
    assert [t.trial_id for t in got] == [0, 1, 2]
    assert [t.state for t in got] == [TrialState.PENDING, TrialState.COMPLETE, TrialState.FAILED]
    assert got[1].value == 2.5 and got[1].losses == {"a": 2.0, "b": 3.0, "c": 2.5}
    assert got[1].metrics["tokens_per_s"] == 10.0
    assert got[1].mixture == done.mixture and got[1].spec == done.spec and got[1].device == "cpu"
    assert got[2].error == "OOM"


def test_status_outputs_and_runs(store, tmp_path):
    store.create_study(meta())
    assert store.study_status("s") == "RUNNING"
    store.set_study_status("s", "FINISHED")
    assert store.study_status("s") == "FINISHED"
    assert store.study_status("nope") is None
    f = tmp_path / "rec.json"
    f.write_text("{}")
    store.log_study_outputs("s", {"json": str(f)}, {"best.objective": 1.5}, {"mixopt.recommendation": "{}"})
    assert store.runs("s", "fit") == []
    rid = store.log_run("s", "fit-loss", "fit", {"alpha": 0.3}, {"rmse": 0.01}, {"mixopt.kind": "x"}, [str(f)])
    store.log_run("s", "transfer-report", "transfer", {}, {}, {}, [])
    fits = store.runs("s", "fit")
    assert len(fits) == 1 and fits[0]["run_id"] == rid and fits[0]["run_name"] == "fit-loss"
    assert fits[0]["params"]["alpha"] == "0.3" and fits[0]["metrics"]["rmse"] == 0.01
    assert fits[0]["tags"]["mixopt.role"] == "fit"


def test_get_storage():
    assert isinstance(get_storage(None), InMemoryStorage)
    s = InMemoryStorage()
    assert get_storage(s) is s
    with pytest.raises(UserError, match="allowed"):
        get_storage(42)  # type: ignore[arg-type]
