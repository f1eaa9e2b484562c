"""Links into the MLflow UI (``mixopt ui``, the dashboard, ``MlflowStorage.ui_url``) open MLflow 3's
model-training view on the study's runs table; experiments are tagged as model development.
(What the browser then shows: tests/dashboards/test_browser.py.)"""

import json

import pytest

import mixopt
from mixopt.core.errors import UserError
from mixopt.dashboards.app import StudyCache
from mixopt.dashboards.cli import _experiment_url
from mixopt.study import MlflowStorage

pytestmark = pytest.mark.slow  # a fresh SQLite MLflow store migrates for seconds
KIND, VIEW = "mlflow.experimentKind", "mlflow.sharedViewState.mixopt-trials"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('links') / 'mlflow.db'}"
    s = mixopt.create_study("links", domains=["code", "legal", "prose"], objective={"target": "prose"}, storage=uri)
    [t] = s.ask()
    s.tell(t.trial_id, {"losses": {"code": 3.0, "legal": 3.1, "prose": 2.9}})
    return MlflowStorage(uri, create=False)


def _exp(store):
    return store.client.get_experiment_by_name("links")


def test_new_study_is_tagged_for_the_model_training_view(store):
    tags = _exp(store).tags
    assert tags[KIND] == "custom_model_development"  # MLflow 3.17's ExperimentKind.CUSTOM_MODEL_DEVELOPMENT
    view = json.loads(tags[VIEW])
    assert view["orderByKey"] == "metrics.`objective`" and view["orderByAsc"] is True  # flat, best first
    assert view["selectedColumns"] == ["metrics.`objective`", "params.`w.code`", "params.`w.legal`",
                                       "metrics.`loss.code`", "metrics.`loss.legal`", "metrics.`loss.prose`"]
    assert view["columnOrder"] == view["selectedColumns"]  # objective first, then the mixture, then the losses


def test_ui_and_run_links_carry_the_model_training_view(store):
    exp_id = _exp(store).experiment_id
    base = "http://127.0.0.1:5123"
    want = f"{base}/#/experiments/{exp_id}/runs?workflowType=machine_learning&viewStateShareKey=mixopt-trials"
    assert _experiment_url(base + "/", store.uri, "links") == want
    assert store.ui_url("links", base=base) == want
    assert store.ui_url("links") is None  # a file store has no UI of its own
    run_id = store.trials("links")[0].run_id
    link = f"{base}/#/experiments/{exp_id}/runs/{run_id}?workflowType=machine_learning"
    assert store.ui_url("links", run_id, base) == link
    assert StudyCache(store.uri).mlflow_link("links", run_id, base) == link
    assert _experiment_url(base, store.uri, None) == f"{base}/#/experiments?workflowType=machine_learning"
    with pytest.raises(UserError, match="no study 'nope'.*studies there: links"):
        _experiment_url(base, store.uri, "nope")


def test_mixopt_ui_tags_a_study_stored_before_the_tags(store):
    exp_id = _exp(store).experiment_id
    for key in (KIND, VIEW):
        store.client.delete_experiment_tag(exp_id, key)
    base = "http://127.0.0.1:5123"
    assert "viewStateShareKey" not in store.ui_url("links", base=base)  # MLflow would reject an unknown key
    assert "viewStateShareKey=mixopt-trials" in _experiment_url(base, store.uri, "links")
    assert {KIND, VIEW} <= set(_exp(store).tags)
