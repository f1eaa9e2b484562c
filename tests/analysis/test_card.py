"""The run card of a tiny study: recommendation.{yaml,json}, the summary, the MLflow run, ``recommend --json``."""

import json

import mlflow
import pytest
import yaml

from mixopt.analysis.hparams import moe_hparams, published_hparams
from mixopt.analysis.repetition import repetition_report
from mixopt.analysis.scaling_laws import moe_leverage
from mixopt.cli import main
from mixopt.data.corpus import Corpus
from tests.conftest import study_yaml

TARGET = {"params": 2e9, "tokens": 3e10, "seq_len": 1024, "unique_tokens": {"code": 1e9},
          "moe": {"active": 4e8, "experts": 64, "top_k": 6, "shared": 2, "granularity": 8}}


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    from tests.conftest import write_domains

    tmp = tmp_path_factory.mktemp("card")
    uri = f"sqlite:///{tmp}/m.db"
    cfg = study_yaml(tmp / "s.yaml", write_domains(tmp / "domains"), tmp / "cache", uri, tmp / "out",
                     budget={"trials": 4}, proxy={"tokens": 8192, "evals": 1, "eval_batches": 1},
                     target=TARGET)
    assert main(["run", str(cfg)]) == 0
    return tmp, cfg, uri


def test_recommendation_carries_the_card(ran, capsys):
    tmp, _, _ = ran
    doc = json.loads((tmp / "out" / "tiny" / "recommendation.json").read_text())
    assert yaml.safe_load((tmp / "out" / "tiny" / "recommendation.yaml").read_text())["card"] == doc["card"]
    card = doc["card"]
    assert set(doc) >= {"study", "mixture", "predicted_objective", "predicted_std", "best_trial", "card"}
    assert card["mixture"] == doc["mixture"]
    assert card["target"] == {"params": 2e9, "tokens": 3e10, "seq_len": 1024, "moe": TARGET["moe"]}
    assert card["sources"]["tokens"] == "target.tokens"
    p = card["predicted"]
    assert p["objective"] == doc["predicted_objective"]
    if doc["predicted_std"] is not None:
        lo, hi = p["interval_90"]
        assert lo < p["objective"] < hi and hi - lo == pytest.approx(2 * 1.6449 * doc["predicted_std"], rel=1e-4)
    h = published_hparams(2e9, 3e10, seq_len=1024)
    assert card["hparams"]["lr"] == h.lr and card["hparams"]["batch_tokens"] == h.batch_tokens
    assert card["hparams"]["batch_sequences"] == round(h.batch_tokens / 1024)
    assert card["moe_hparams"]["lr"] == moe_hparams(4e8, 3e10, seq_len=1024).lr
    # unique tokens: the target's for code, the proxy corpus's train tokens for the rest
    train = Corpus.open(next((tmp / "cache" / "corpus").iterdir())).token_counts("train")
    unique = {**train, "code": 1e9}
    rep = repetition_report(doc["mixture"], unique, 3e10, 2e9)
    assert card["repetition"]["penalty"] == pytest.approx(rep.penalty)
    for d, w in doc["mixture"].items():
        assert card["repetition"]["domains"][d]["epochs"] == pytest.approx(w * 3e10 / unique[d])
    past = {d for d, v in card["repetition"]["domains"].items() if v["epochs"] > 4}
    assert past and {w.split(":")[0] for w in card["repetition"]["warnings"]} == past  # 1e9 or a tiny corpus
    assert card["sources"]["unique_tokens"] == "the proxy corpus's train tokens (target.unique_tokens for code)"
    el = moe_leverage(4e8, 8 / 66, 8, 3e10)
    assert card["moe"]["el"] == pytest.approx(el.el) and card["moe"]["dense_compute"] == pytest.approx(el.dense_compute)


def test_summary_mlflow_and_recommend_json_show_it(ran, capsys):
    tmp, cfg, uri = ran
    doc = json.loads((tmp / "out" / "tiny" / "recommendation.json").read_text())
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("tiny")
    [run] = client.search_runs([exp.experiment_id], "tags.`mixopt.role` = 'study'")
    m, tags = run.data.metrics, run.data.tags
    assert m["card.lr"] == pytest.approx(doc["card"]["hparams"]["lr"])
    assert m["card.batch_sequences"] == doc["card"]["hparams"]["batch_sequences"]
    assert m["card.repetition_penalty"] == pytest.approx(doc["card"]["repetition"]["penalty"])
    assert m["card.moe_el"] == pytest.approx(doc["card"]["moe"]["el"])
    assert all(f"card.epochs.{d}" in m for d in doc["mixture"])
    assert "past 4" in tags["mixopt.card.warnings"]
    capsys.readouterr()
    assert main(["recommend", str(cfg), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert {"study", "mixture", "predicted_objective"} <= set(rec)  # the old fields stay
    assert rec["card"]["hparams"] == doc["card"]["hparams"]
    assert main(["recommend", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "Run card: target N = 2e+09" in out and "learning rate" in out and "WARNING " in out
    assert "efficiency leverage" in out


def test_no_target_no_card(tmp_path, tiny_domains, capsys):
    cfg = study_yaml(tmp_path / "s.yaml", tiny_domains, tmp_path / "cache", f"sqlite:///{tmp_path}/m.db",
                     tmp_path / "out", budget={"trials": 3}, proxy={"tokens": 4096, "evals": 1, "eval_batches": 1})
    assert main(["run", str(cfg)]) == 0
    doc = json.loads((tmp_path / "out" / "tiny" / "recommendation.json").read_text())
    assert "card" not in doc and "Run card" not in capsys.readouterr().out


def test_dashboard_shows_the_card(ran):
    from mixopt.dashboards.app import StudyCache, _rec_table

    tmp, _, uri = ran
    s, _ = StudyCache(uri).view("tiny")  # rebuilt from the stored study: its config's target, its corpus counts
    doc = json.loads((tmp / "out" / "tiny" / "recommendation.json").read_text())["card"]
    assert s["card"].doc["hparams"] == doc["hparams"] and s["card"].doc["repetition"] == doc["repetition"]
    html = str(_rec_table(s).to_plotly_json())
    assert "rec-card" in html and "learning rate" in html and "efficiency leverage" in html
