"""`mixopt run` end to end on a tiny real-text folder corpus: local executor and local Ray."""

import json

import pytest
import yaml

from mixopt.cli import main
from tests.conftest import study_yaml


def _run(tmp_path, tiny_domains, *args, **extra):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = study_yaml(tmp_path / "study.yaml", tiny_domains, tmp_path / "cache", uri, tmp_path / "out", **extra)
    return main(["run", str(cfg), *args]), uri, cfg


def test_run_local_writes_recommendation_and_mlflow(tmp_path, tiny_domains, capsys):
    rc, uri, cfg = _run(tmp_path, tiny_domains)
    assert rc == 0
    out = capsys.readouterr()
    assert "recommended" in out.out and "[  5/5]" in out.err
    rec = json.loads((tmp_path / "out" / "tiny" / "recommendation.json").read_text())
    assert set(rec["mixture"]) == {"code", "legal", "prose"}
    assert abs(sum(rec["mixture"].values()) - 1) < 1e-4 and rec["predicted_objective"] is not None
    assert yaml.safe_load((tmp_path / "out" / "tiny" / "recommendation.yaml").read_text())["study"] == "tiny"
    assert rec["trials"]["COMPLETE"] == 5

    import mixopt

    study = mixopt.load_study("tiny", uri)
    df = study.to_dataframe()
    assert len(df) == 5 and df["objective"].notna().all()
    assert (df["phase"] == "init").sum() == 3 and (df["phase"] == "model").sum() == 2
    # the same study again without --resume is refused; with --resume and a bigger budget it continues
    assert main(["run", str(cfg)]) == 2
    assert "already exists" in capsys.readouterr().err
    ends = [t.run_id for t in study.trials]
    assert main(["run", str(cfg), "--resume", "--trials", "7"]) == 0
    again = mixopt.load_study("tiny", uri)
    assert len(again.trials) == 7 and [t.run_id for t in again.trials[:5]] == ends
    assert again.to_dataframe()["objective"].iloc[:5].tolist() == df["objective"].tolist()
    # a changed data/proxy/search setting is refused on resume; budget may change
    assert main(["run", str(cfg), "--resume", "--trials", "8", "--proxy.lr=0.01"]) == 2
    assert "only budget, executor" in capsys.readouterr().err
    # runs export and recommend read the store
    assert main(["runs", "export", str(cfg), "--out", str(tmp_path / "runs.csv")]) == 0
    assert main(["recommend", str(cfg), "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["mixture"]) == {"code", "legal", "prose"}


def _flaky_trial(request):
    """The real trial function, except that odd trials fail the way a diverged proxy does."""
    from mixopt.core.errors import TrialError
    from mixopt.proxies.train import run_trial

    if request.trial_id % 2:
        raise TrialError(f"diverged at step 3: loss=nan (trial {request.trial_id})", kind="diverged")
    return run_trial(request)


def test_failed_trials_are_recorded_with_reason(tmp_path, tiny_domains, capsys):
    from mixopt.run.config import load_config
    from mixopt.run.executors import LocalExecutor
    from mixopt.run.loop import run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config(study_yaml(tmp_path / "s.yaml", tiny_domains, tmp_path / "cache", uri, tmp_path / "out",
                                 budget={"trials": 4}))
    out = run(cfg, executor=LocalExecutor(_flaky_trial))
    assert "FAILED: TrialError: diverged at step 3" in capsys.readouterr().err
    trials = out.study.trials
    assert [t.state.value for t in trials] == ["COMPLETE", "FAILED", "COMPLETE", "FAILED"]
    for t in trials[1::2]:
        assert t.value is None and t.error.startswith("TrialError: diverged")
    import mixopt

    stored = mixopt.load_study("tiny", uri).trials
    assert [t.error for t in stored] == [t.error for t in trials]
    assert out.recommendation.predicted == min(t.value for t in trials if t.ok)  # too few to fit: best trial


class CountingExecutor:
    """In-process executor that records which trials it ran."""

    def __init__(self):
        from mixopt.proxies.train import run_trial
        from mixopt.run.executors import LocalExecutor

        self.ran = []
        self.inner = LocalExecutor(lambda r: (self.ran.append(r.trial_id), run_trial(r))[1])
        self.capacity = 2

    def submit(self, tid, req):
        self.inner.submit(tid, req)

    def running(self):
        return self.inner.running()

    def wait(self, timeout=None):
        return self.inner.wait(timeout)

    def shutdown(self):
        pass


def test_resume_after_driver_died_reruns_only_unfinished(tmp_path, tiny_domains):
    """A driver killed with trials handed out: --resume runs those and new ones, never a COMPLETE one."""
    import mixopt
    from mixopt.run.config import load_config
    from mixopt.run.loop import run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config(study_yaml(tmp_path / "s.yaml", tiny_domains, tmp_path / "cache", uri, tmp_path / "out",
                                 budget={"trials": 3}))
    first = CountingExecutor()
    run(cfg, executor=first)
    study = mixopt.load_study("tiny", uri)
    dead = study.ask(2)  # a second driver asked for 2 trials, started one, then died
    study.mark_running(dead[0].trial_id)
    cfg6 = load_config(tmp_path / "s.yaml", ["--budget.trials=6"])
    again = CountingExecutor()
    out = run(cfg6, resume=True, executor=again)
    assert first.ran == [0, 1, 2]
    assert sorted(again.ran) == [3, 4, 5]  # the two unfinished, then one new; 0..2 not retrained
    assert [t.state.value for t in out.study.trials] == ["COMPLETE"] * 6


@pytest.mark.parametrize("extra,needle", [
    ({"objective": {"domain": "books"}}, "objective.domain: 'books' is not a corpus domain"),
    ({"space": {"caps": {"code": 0.2, "legal": 0.2, "prose": 0.2}}}, "caps sum to 0.6"),
    ({"proxy": {"tokens": 10_000_000}, "space": {"max_epochs": 1}}, "repetition cap"),
    ({"data": {"recipe": "/nonexistent/folder"}}, "/nonexistent/folder"),
])
def test_bad_input_exit_2_nothing_written(tmp_path, tiny_domains, capsys, extra, needle):
    rc, uri, _ = _run(tmp_path, tiny_domains, **extra)
    err = capsys.readouterr().err
    assert rc == 2, err
    errors = [ln for ln in err.splitlines() if "error" in ln.lower()]
    assert len(errors) == 1 and errors[0].startswith("mixopt: error: ") and needle in errors[0], err
    if "repetition" not in needle:  # found before any corpus is prepared
        assert err.strip() == errors[0] and not (tmp_path / "cache").exists()
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "mlflow.db").exists()  # no store was created for a config that cannot run


@pytest.mark.ray
@pytest.mark.slow
def test_run_on_local_ray_two_workers(tmp_path, tiny_domains, capsys):
    rc, uri, _ = _run(tmp_path, tiny_domains, executor={"kind": "ray", "workers": 2}, budget={"trials": 4})
    assert rc == 0, capsys.readouterr().err
    import mixopt

    df = mixopt.load_study("tiny", uri).to_dataframe()
    assert len(df) == 4 and (df["state"] == "COMPLETE").all()
