"""`mixopt run` with an online mixer in the proxies: the trajectory in MLflow, the average as the recommendation."""

import json

from mixopt.cli import main
from tests.conftest import study_yaml


def test_online_study_logs_its_trajectory_and_recommends_the_average(tmp_path, tiny_domains, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = study_yaml(tmp_path / "s.yaml", tiny_domains, tmp_path / "cache", uri, tmp_path / "out",
                     proxy={"online": "aioli", "online_options": {"update_steps": 8, "lp_rounds": 1, "lp_steps": 1},
                            "tokens": 8 * 64 * 40},
                     sweep={"baselines": ["uniform"]}, search={"searcher": "random", "n_init": 0, "options": {}},
                     budget={"trials": 1})
    assert main(["run", str(cfg)]) == 0
    rec = json.loads((tmp_path / "out" / "tiny" / "recommendation.json").read_text())
    assert rec["info"]["source"] == "online_average" and rec["info"]["mixer"] == "aioli"
    from mlflow.tracking import MlflowClient

    import mixopt

    [t] = mixopt.load_study("tiny", uri).trials
    assert t.spec.online == "aioli" and t.metrics["online_evals"] > 0
    hist = MlflowClient(uri).get_metric_history(t.run_id, "w.code")
    assert len(hist) >= 2 and len({m.value for m in hist}) >= 2  # the weights moved during the run
    assert rec["mixture"]["code"] == t.metrics["online_average.code"]
    assert (tmp_path / "out" / "tiny" / "plots" / "plot_online.png").stat().st_size > 0  # the trajectory, drawn
    traj = mixopt.load_study("tiny", uri).storage.trial_trajectory("tiny", 0)
    assert len(traj) == len(hist) and traj[-1]["weights"]["code"] == hist[-1].value
