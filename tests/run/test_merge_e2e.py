"""`mixopt run` with model-merging proxies: experts once, screening rounds as tables, the best merged
mixtures trained, experts reused and repaired on --resume, merged scores exported and never trials."""

import json

import pandas as pd

from mixopt.analysis.fits import collect
from mixopt.cli import main
from mixopt.run.config import MergeConfig
from tests.conftest import study_yaml

MERGE = {"candidates": 24, "rounds": 2, "seed_fraction": 0.5, "batch": 8}


def _cfg(tmp_path, domains, file="study.yaml", **extra):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return study_yaml(tmp_path / file, domains, tmp_path / "cache", uri, tmp_path / "out", merge=MERGE,
                      search={"searcher": "merge_screen", "n_init": 0,
                              "options": {"searcher": "random", "train_top": 3, "top_k": 4,
                                          "recommend_from": "merged"}},
                      budget={"trials": 4}, **extra), uri


def test_merge_screened_study_end_to_end(tmp_path, tiny_domains, capsys):
    import mixopt

    cfg, uri = _cfg(tmp_path, tiny_domains)
    assert main(["run", str(cfg)]) == 0
    out = capsys.readouterr()
    assert "merge: training the seed and 3 expert(s)" in out.err and "merge: round 2: 24 mixtures" in out.err
    assert "48 mixtures scored by merging experts, 4 trained" in out.out
    study = mixopt.load_study("tiny", uri)
    merged = study.merged_scores()
    assert len(merged) == 48 and set(merged["round"]) == {1, 2} and merged["objective"].notna().all()
    assert len(study.trials) == 4  # merged scores are never trials
    # the first 3 trials are the 3 best merged mixtures (train_top), trained for real; the 4th the inner searcher's
    best = merged.sort_values("objective")[[f"w.{d}" for d in study.space.domains]].to_numpy()
    first = [t.mixture.as_array(study.space.domains) for t in study.trials[:3]]
    assert all(abs(f - best).sum(1).min() < 1e-9 for f in first)
    rec = json.loads((tmp_path / "out" / "tiny" / "recommendation.json").read_text())
    assert rec["info"]["source"] == "merged" and rec["merged"] == {"scored": 48, "trained": 4}
    assert len(pd.read_csv(tmp_path / "out" / "tiny" / "merged.csv")) == 48
    assert (tmp_path / "out" / "tiny" / "plots" / "plot_merged.png").stat().st_size > 0  # their own plot
    assert "scored by merging experts" in (tmp_path / "out" / "tiny" / "plots" / "report.html").read_text()
    assert main(["runs", "export", str(cfg), "--merged", "--out", str(tmp_path / "m.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "m.csv")) == 48
    # stored with the study: one experts run, one merge run per round
    storage = study.storage
    [experts_run] = storage.runs("tiny", "experts")
    assert len(storage.runs("tiny", "merge")) == 2 and experts_run["metrics"]["proxies_worth"] == 2.0

    # a later run reuses the experts and the rounds; a corrupt expert file is named, and --resume retrains only it
    folder = next((tmp_path / "cache" / "experts").iterdir())
    assert main(["run", str(cfg), "--resume", "--trials", "5"]) == 0
    assert "verified" in capsys.readouterr().err and len(storage.runs("tiny", "merge")) == 2
    assert {float(r["params"]["scale"]) for r in storage.runs("tiny", "merge")} == {MergeConfig().scale}
    assert {float(r["params"]["power"]) for r in storage.runs("tiny", "merge")} == {MergeConfig().power}
    # another merge scale would rank its scores beside these: refused, nothing trained
    assert main(["run", str(cfg), "--resume", "--trials", "6", "--merge.scale=1.25"]) == 2
    assert "other merge settings" in capsys.readouterr().err and len(mixopt.load_study("tiny", uri).trials) == 5
    (folder / "expert-legal.safetensors").write_bytes(b"oops")
    (folder / "seed.safetensors").touch()
    for f in (tmp_path / "out" / "tiny" / "merge").iterdir():  # the store still has its own copy of each table
        f.unlink()
    cfg2, _ = _cfg(tmp_path, tiny_domains, "study2.yaml", study="tiny2")
    assert main(["run", str(cfg2)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "expert-legal.safetensors" in err[-1] and "--resume" in err[-1] and "Traceback" not in "".join(err)
    assert main(["run", str(cfg2), "--resume"]) == 2  # nothing written: tiny2 was not created, so not resumable
    assert "no study 'tiny2'" in capsys.readouterr().err
    good = {p.name: p.read_bytes() for p in folder.iterdir() if p.suffix == ".safetensors"}
    assert main(["run", str(cfg), "--resume", "--trials", "6"]) == 0  # the study's store still has them: fetched
    assert "1 expert file(s) of" in capsys.readouterr().err
    # with the store's copy gone too, --resume retrains only the one expert
    (folder / "expert-legal.safetensors").unlink()
    for f in (tmp_path / "mlartifacts").rglob("expert-legal.safetensors"):
        f.unlink()
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert main(["run", str(cfg), "--resume", "--trials", "7"]) == 0
    assert "training 1 expert(s)" in capsys.readouterr().err
    after = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert "expert-legal.safetensors" not in before and "expert-legal.safetensors" in after
    assert after["expert-code.safetensors"] == before["expert-code.safetensors"]
    assert (folder / "expert-code.safetensors").read_bytes() == good["expert-code.safetensors"]

    # rounds screened at another power (a study from before merge.power existed: the mixture's own weights)
    # would be ranked beside this config's: refused before anything is trained or scored
    storage.log_run("tiny", "merge-round-3", "merge", {"round": 3, "experts": folder.name}, {"n": 0},
                    {"mixopt.experts": folder.name}, [])
    assert main(["run", str(cfg), "--resume", "--trials", "8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"screened with expert set {folder.name} at merge.scale 1, merge.power 1;" in err and "new study" in err
    assert "(or set merge.power: 1 to continue this one)" in err
    assert len(mixopt.load_study("tiny", uri).trials) == 7
    # screened by a set handed off elsewhere (a study from before `merge.seed_fraction: auto`, say): the
    # refusal says which seed_fraction continues it
    storage.log_run("tiny", "experts-0000", "experts", {"key": "0000", "seed_fraction": 0.25}, {}, {}, [])
    now = MergeConfig()
    storage.log_run("tiny", "merge-round-4", "merge", {"round": 4, "scale": now.scale, "power": now.power}, {"n": 0},
                    {"mixopt.experts": "0000"}, [])
    assert main(["run", str(cfg), "--resume", "--trials", "8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "(or set merge.seed_fraction: 0.25 to continue this one)" in err, err
    # another set for a reason no setting names (its experts' run is not even in the store): no hint
    storage.log_run("tiny", "merge-round-5", "merge", {"round": 5, "scale": 2.0, "power": now.power}, {"n": 0},
                    {"mixopt.experts": "00"}, [])
    assert main(["run", str(cfg), "--resume", "--trials", "8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "screened with expert set 00 at merge.scale 2, merge.power 0.5;" in err and "(or set" not in err, err


def test_branch_study_trains_the_seed_once_and_continues_it_per_trial(tmp_path, tiny_domains, capsys):
    """merge.branch: the seed alone is trained (no experts), every trial continues it for the rest of the
    schedule; a screening study on the same settings later reuses that seed and trains only the experts."""
    import mixopt

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = study_yaml(tmp_path / "b.yaml", tiny_domains, tmp_path / "cache", uri, tmp_path / "out",
                     merge={"branch": True, "seed_fraction": 0.75}, budget={"trials": 4})
    assert main(["run", str(cfg)]) == 0
    err = capsys.readouterr().err
    study = mixopt.load_study("tiny", uri)
    steps = study.trials[0].spec.steps
    assert (f"merge: training the seed of dense-0.1m, hand-off at s = 0.75 (step {round(0.75 * steps)} of {steps}; "
            "0.75 proxies' worth of tokens)") in err
    assert "every trial continues the seed" in err
    assert len(study.trials) == 4 and all(t.ok for t in study.trials)
    assert {t.metrics["steps"] for t in study.trials} == {steps - round(0.75 * steps)}
    assert {t.metrics["branch_start_step"] for t in study.trials} == {round(0.75 * steps)}
    # a branch's model saw the seed's tokens too: that is its D in a fit; its metrics end at the schedule's
    # last step, where its history (on the schedule's axis) ends
    spec = study.trials[0].spec
    assert set(collect(study)["D"]) == {float(steps * spec.batch_size * spec.seq_len)}
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    run_id = study.trials[0].run_id
    assert [m.step for m in client.get_metric_history(run_id, "objective")] == [steps]
    assert max(m.step for m in client.get_metric_history(run_id, f"loss.{next(iter(study.trials[0].losses))}")) == steps
    [folder] = (tmp_path / "cache" / "experts").iterdir()
    assert sorted(p.name for p in folder.glob("*.safetensors")) == ["seed.safetensors"]
    [run] = study.storage.runs("tiny", "experts")
    assert run["metrics"]["proxies_worth"] == 0.75
    # screening with the same seed: the experts are trained from it, the seed is not trained again
    seed_bytes = (folder / "seed.safetensors").read_bytes()
    cfg2 = study_yaml(tmp_path / "s.yaml", tiny_domains, tmp_path / "cache", uri, tmp_path / "out", study="screen",
                      merge={**MERGE, "seed_fraction": 0.75, "rounds": 1}, budget={"trials": 1},
                      search={"searcher": "merge_screen", "n_init": 0, "options": {"searcher": "random"}})
    assert main(["run", str(cfg2)]) == 0
    err = capsys.readouterr().err
    assert "merge: training 3 expert(s) of dense-0.1m" in err and "training the seed" not in err
    assert (folder / "seed.safetensors").read_bytes() == seed_bytes
    assert len(list(folder.glob("expert-*.safetensors"))) == 3
    # a branch study needs only the seed: a corrupt expert does not stop it (a screening study would be refused)
    (folder / "expert-code.safetensors").write_bytes(b"oops")
    assert main(["run", str(cfg), "--resume", "--trials", "5"]) == 0
    assert "the seed of" in capsys.readouterr().err and len(mixopt.load_study("tiny", uri).trials) == 5
    assert main(["run", str(cfg2), "--study", "screen2"]) == 2
    assert "expert-code.safetensors" in capsys.readouterr().err
