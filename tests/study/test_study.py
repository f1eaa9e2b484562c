"""Study ask/tell semantics on the in-memory store and on MLflow (SQLite), incl. resume."""

import math

import numpy as np
import pandas as pd
import pytest

import mixopt
from mixopt.core.errors import MixtureError, RunsTableError, UserError
from mixopt.core.mixture import MixtureSpace
from mixopt.core.trial import TrialState

DOMAINS = ["code", "legal", "web"]
OPT = np.array([0.6, 0.1, 0.3])


def fake_losses(m):
    x = m.as_array(DOMAINS)
    base = float(((x - OPT) ** 2).sum())
    return {d: 2.0 + base + 0.1 * i for i, d in enumerate(DOMAINS)}


def run_some(study, n, batch=2):
    for _ in range(n // batch):
        for t in study.ask(batch):
            study.tell(t.trial_id, fake_losses(t.mixture))


def test_ask_tell_best_recommend_dataframe():
    study = mixopt.create_study("s", domains=DOMAINS, searcher="random", seed=3)
    run_some(study, 6)
    assert study.counts()["COMPLETE"] == 6
    best = study.best()
    assert best.value == min(t.value for t in study.trials)
    rec = study.recommend()
    assert set(rec.mixture) == set(DOMAINS)
    df = study.to_dataframe()
    assert len(df) == 6 and {"w.code", "loss.web", "objective", "state"} <= set(df.columns)
    assert np.allclose(df[[f"w.{d}" for d in DOMAINS]].sum(axis=1), 1)


def test_pending_trials_count_and_ask_is_reproducible():
    a = mixopt.create_study("a", domains=DOMAINS, searcher="random", seed=7)
    b = mixopt.create_study("b", domains=DOMAINS, searcher="random", seed=7)
    ta, tb = a.ask(3), b.ask(3)
    assert [t.mixture for t in ta] == [t.mixture for t in tb]
    assert len({t.mixture for t in ta}) == 3  # pending trials are not proposed again
    assert [t.trial_id for t in a.ask(1)] == [3]


def test_failure_and_nonfinite_are_failed_not_made_up():
    study = mixopt.create_study("s", domains=DOMAINS, searcher="random")
    t1, t2, t3 = study.ask(3)
    study.tell(t1.trial_id, error="diverged at step 3")
    bad = fake_losses(t2.mixture)
    bad["legal"] = math.nan
    t2 = study.tell(t2.trial_id, bad)
    assert t2.state is TrialState.FAILED and t2.value is None and "not finite" in t2.error
    study.tell(t3.trial_id, fake_losses(t3.mixture))
    assert study.counts() == {"WAITING": 0, "PENDING": 0, "RUNNING": 0, "COMPLETE": 1, "FAILED": 2}
    with pytest.raises(UserError, match="already FAILED"):
        study.tell(t1.trial_id, 1.0)
    with pytest.raises(UserError, match="no trial 99"):
        study.tell(99, 1.0)


def test_enqueue_comes_first_and_is_validated():
    space = MixtureSpace.build(DOMAINS, caps={"legal": 0.2})
    study = mixopt.create_study("s", space=space, searcher="random")
    study.enqueue({"code": 0.5, "legal": 0.2, "web": 0.3})
    [t] = study.ask(1)
    assert t.phase == "enqueued" and t.mixture["code"] == 0.5
    with pytest.raises(MixtureError, match="legal"):
        study.enqueue({"code": 0.5, "legal": 0.5})
    with pytest.raises(MixtureError, match="unknown domain"):
        study.enqueue({"code": 0.5, "books": 0.5})


def test_add_completed_warm_start(tmp_path):
    study = mixopt.create_study("s", domains=DOMAINS, searcher="random", objective={"domain": "web"})
    rows = [{"w.code": 0.2, "w.legal": 0.3, "w.web": 0.5, "loss.web": 3.0},
            {"w.code": 0.5, "w.legal": 0.5, "w.web": 0.0, "loss.web": 3.5}]
    added = study.add_completed(pd.DataFrame(rows))
    assert [t.value for t in added] == [3.0, 3.5] and study.best().trial_id == 0
    with pytest.raises(RunsTableError, match="not domains"):
        study.add_completed(pd.DataFrame([{"w.code": 0.5, "w.books": 0.5, "loss.web": 1.0}]))


def test_default_searcher_is_the_products_default():
    """create_study without a searcher searches as ``mixopt run`` does (bo), not at random."""
    from mixopt.run.config import SearchConfig

    study = mixopt.create_study("default", domains=DOMAINS)
    assert study.meta.searcher == SearchConfig().searcher == "bo"
    for _ in range(6):  # bo's own random start, then the GP
        [t] = study.ask()
        study.tell(t.trial_id, {d: 1.0 + t.mixture[d] for d in DOMAINS})
    assert study.ask()[0].mixture is not None


def test_objective_kinds():
    s1 = mixopt.create_study("a", domains=DOMAINS, objective={"weights": {"code": 3, "web": 1}})
    [t] = s1.ask()
    assert s1.tell(t.trial_id, {"code": 2.0, "legal": 9.0, "web": 4.0}).value == pytest.approx(2.5)
    with pytest.raises(UserError, match="objective.domain"):
        mixopt.create_study("b", domains=DOMAINS, objective={"domain": "books"})


def test_mlflow_store_resume_keeps_completed_trials(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    study = mixopt.create_study("resume-me", domains=DOMAINS, searcher="random", seed=1, storage=uri)
    run_some(study, 4)
    pending = study.ask(2)  # the driver "dies" with these handed out
    study.mark_running(pending[0].trial_id)
    del study
    again = mixopt.load_study("resume-me", uri)
    assert again.counts()["COMPLETE"] == 4
    assert [t.state for t in again.trials[4:]] == [TrialState.RUNNING, TrialState.PENDING]
    assert [t.mixture for t in again.trials[4:]] == [t.mixture for t in pending]
    t = again.tell(pending[1].trial_id, fake_losses(pending[1].mixture))
    assert t.value == pytest.approx(sum(fake_losses(pending[1].mixture).values()) / 3)
    third = mixopt.load_study("resume-me", uri)
    assert third.counts()["COMPLETE"] == 5
    assert third.to_dataframe()["objective"].notna().sum() == 5
    with pytest.raises(UserError, match="already exists"):
        mixopt.create_study("resume-me", domains=DOMAINS, storage=uri)
    with pytest.raises(UserError, match="no study 'nope'"):
        mixopt.load_study("nope", uri)


def test_mlflow_schema(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    study = mixopt.create_study("schema", domains=DOMAINS, searcher="random", storage=uri)
    [t] = study.ask()
    study.mark_running(t.trial_id)
    res = {"losses": fake_losses(t.mixture), "tokens_per_s": 1234.0,
           "history": [{"step": 5, "losses": {d: 9.0 for d in DOMAINS}}, {"step": 10, "losses": fake_losses(t.mixture)}]}
    study.tell(t.trial_id, res)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("schema")
    runs = client.search_runs([exp.experiment_id], "tags.`mixopt.role` = 'trial'")
    [run] = runs
    assert run.data.params["w.code"] == repr(t.mixture["code"])
    assert run.data.tags["mixopt.state"] == "COMPLETE" and run.data.tags["mixopt.trial"] == "0"
    assert run.data.tags["mixopt.study"] == "schema" and run.data.tags["mixopt.searcher"] == "random"
    assert run.info.status == "FINISHED" and "mlflow.parentRunId" in run.data.tags
    assert run.data.metrics["objective"] == pytest.approx(t.mixture and study.trials[0].value)
    hist = client.get_metric_history(run.info.run_id, "loss.code")
    assert [(m.step, m.value) for m in hist] == [(5, 9.0), (10, fake_losses(t.mixture)["code"])]
    assert run.data.metrics["tokens_per_s"] == 1234.0


def test_add_completed_checks_whole_table_first(tmp_path):
    study = mixopt.create_study("s", domains=DOMAINS, searcher="random", objective={"domain": "web"})
    rows = [{"w.code": 0.2, "w.legal": 0.3, "w.web": 0.5004, "loss.web": 3.0},  # rounded in a CSV
            {"w.code": 0.5, "w.legal": 0.5, "w.web": 0.0, "loss.web": 3.5}]
    path = tmp_path / "runs.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    from pathlib import Path

    added = study.add_completed(Path(path))
    assert abs(sum(added[0].mixture.values()) - 1) < 1e-12
    with pytest.raises(RunsTableError, match="objective column 'loss.nope' not found"):
        study.add_completed(pd.DataFrame(rows), objective="loss.nope")
    bad = pd.DataFrame(rows + [{"w.code": 0.5, "w.legal": 0.5, "w.web": 0.0, "loss.web": "x"}])
    with pytest.raises(RunsTableError, match="not numeric"):
        study.add_completed(bad)
    assert len(study.trials) == 2  # nothing half-written by the failed calls


def test_target_objective_is_held_out_of_the_space():
    study = mixopt.create_study("t", domains=DOMAINS, objective={"target": "web"})
    assert study.space.domains == ("code", "legal")
    [t] = study.ask()
    assert study.tell(t.trial_id, {"code": 3.0, "legal": 3.0, "web": 2.5}).value == 2.5
