"""A sweep across a scale ladder, `mixopt fit` on its runs (logged to MLflow), and `mixopt transfer`."""

import json

import pytest

from mixopt.cli import main
from tests.conftest import study_yaml

pytestmark = pytest.mark.slow


def test_sweep_fit_transfer(tmp_path, tiny_domains, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = study_yaml(tmp_path / "s.yaml", tiny_domains, tmp_path / "cache", uri, tmp_path / "out",
                     proxy={"tokens": 8192, "seq_len": 32, "batch_size": 8},
                     ladder=[{"preset": "dense-0.1m", "tokens": 8192}, {"preset": "dense-0.1m", "tokens": 24576},
                             {"preset": "dense-0.5m", "tokens": 8192}, {"preset": "dense-0.5m", "tokens": 24576}],
                     sweep={"mixtures": 3, "baselines": ["uniform", "natural"]},
                     search={"searcher": "random", "n_init": 0, "options": {}}, budget={"trials": 20})
    assert main(["run", str(cfg)]) == 0
    import mixopt

    study = mixopt.load_study("tiny", uri)
    df = study.to_dataframe()
    assert len(df) == 20 and set(df["scale"]) == {"dense-0.1m", "dense-0.5m"} and set(df["tokens"]) == {8192, 24576}
    assert set(df["label"]) == {"uniform", "natural", "dirichlet0", "dirichlet1", "dirichlet2"}
    capsys.readouterr()

    assert main(["fit", str(cfg), "--json", "--bootstrap", "5"]) == 0
    res = json.loads(capsys.readouterr().out)
    ls = res["loss_scale"]
    assert {m["label"] for m in ls["mixtures"]} == {"uniform", "natural", "dirichlet0", "dirichlet1", "dirichlet2"}
    assert 0 < ls["alpha"] <= 3 and all(m["pred_target"] > 0 for m in ls["mixtures"])
    assert abs(sum(res["mixing_law"]["best_mixture_at_target"].values()) - 1) < 1e-6
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("tiny")
    fits = client.search_runs([exp.experiment_id], "tags.`mixopt.role` = 'fit'")
    assert {r.data.tags["mixopt.fit"] for r in fits} == {"loss_scale", "mixing_law"}
    ls_run = next(r for r in fits if r.data.tags["mixopt.fit"] == "loss_scale")
    assert "alpha" in ls_run.data.metrics and "pred_target.uniform" in ls_run.data.metrics
    assert {a.path for a in client.list_artifacts(ls_run.info.run_id)} >= {"fit_loss_scale.json", "fit_loss_scale.png"}
    # trials are still exactly the 20 proxy runs: fit runs are not trials
    assert len(mixopt.load_study("tiny", uri).trials) == 20

    assert main(["transfer", str(cfg), "--seeds", "2", "--factor", "2", "--tokens", "16384"]) == 0
    out = capsys.readouterr().out
    assert "recommended" in out and "uniform" in out and "recommended-uniform" in out
    doc = json.loads((tmp_path / "out" / "tiny-transfer" / "transfer.json").read_text())
    assert doc["spec"]["preset"] == "dense-1m" and all(v["n"] == 2 for v in doc["stats"].values())
    assert main(["transfer", str(cfg), "--seeds", "2", "--factor", "100"]) == 2
