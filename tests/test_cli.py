"""CLI: outputs of predict / dry-run / data prepare, and one-line exit-2 errors for user mistakes."""

import json

import numpy as np
import pandas as pd
import pytest

from mixopt.cli import main


def _table(path, n, seed, cols=("a", "b", "c")):
    rng = np.random.default_rng(seed)
    W = rng.dirichlet(np.ones(len(cols)), size=n)
    df = pd.DataFrame(W, columns=[f"w.{c}" for c in cols])
    df["loss.a"] = 3.0 - W[:, 0] + 0.5 * W[:, 1] ** 2 + rng.normal(0, 0.01, n)
    df.to_csv(path, index=False)
    return path


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("mixopt: error: ") and "Traceback" not in err, err
    return err


def test_predict_json(tmp_path, capsys):
    tr, te = _table(tmp_path / "tr.csv", 80, 0), _table(tmp_path / "te.csv", 40, 1)
    assert main(["predict", "--train", str(tr), "--test", str(te), "--objective", "loss.a",
                 "--surrogate", "linear", "--n-train", "60", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res) >= {"spearman", "pearson", "n_train", "surrogate"}
    assert res["n_train"] == 60 and res["surrogate"] == "linear" and res["spearman"] > 0.8


@pytest.mark.parametrize("mutate,needle", [
    (lambda df: df.drop(columns=["w.a", "w.b", "w.c"]), "no mixture columns"),
    (lambda df: df.drop(columns=["loss.a"]), "objective column 'loss.a' not found"),
    (lambda df: df.assign(**{"w.a": -df["w.a"]}), "negative"),
])
def test_predict_bad_tables_exit_2(tmp_path, capsys, mutate, needle):
    tr = _table(tmp_path / "tr.csv", 30, 0)
    bad = tmp_path / "bad.csv"
    mutate(pd.read_csv(tr)).to_csv(bad, index=False)
    assert main(["predict", "--train", str(bad), "--test", str(tr), "--objective", "loss.a",
                 "--surrogate", "linear"]) == 2
    assert needle in _one_error_line(capsys)


def test_predict_unknown_surrogate_and_bad_args(tmp_path, capsys):
    tr = _table(tmp_path / "tr.csv", 30, 0)
    assert main(["predict", "--train", str(tr), "--test", str(tr), "--objective", "loss.a",
                 "--surrogate", "xgb"]) == 2
    assert "allowed" in _one_error_line(capsys)
    assert main(["predict", "--train", str(tr)]) == 2
    assert "required" in _one_error_line(capsys)
    assert main(["predict", "--train", str(tr), "--test", str(tr), "--objective", "loss.a", "--n-train", "x"]) == 2
    assert "invalid int value" in _one_error_line(capsys)


def test_dry_run_prints_resolved_config_and_writes_nothing(tmp_path, tiny_domains, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--dry-run", "--trials", "3", f"--data.recipe={tiny_domains}", "--proxy.preset=dense-1m"]) == 0
    out = capsys.readouterr().out
    assert "trials: 3" in out and "preset: dense-1m" in out and "corpus domains: code, legal, prose" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["domains"]


def test_data_prepare_folder_and_errors(tmp_path, tiny_domains, capsys):
    assert main(["data", "prepare", "--recipe", str(tiny_domains), "--tokenizer", "bytes",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert "legal" in out and "train tokens" in out
    (tiny_domains / "empty").mkdir()
    assert main(["data", "prepare", "--recipe", str(tiny_domains), "--tokenizer", "bytes",
                 "--cache-dir", str(tmp_path / "cache2")]) == 2
    assert "empty" in _one_error_line(capsys)
    assert main(["data", "prepare", "--recipe", "nope"]) == 2
    assert "unknown recipe 'nope'" in _one_error_line(capsys)


@pytest.mark.parametrize("argv,needle", [
    (["run", "--budget.trials=0"], "budget.trials: 0 must be >= 1"),
    (["run", "--search.searcher=bogus"], "unknown searcher 'bogus'"),
    (["run", "--search.options.frob=1"], "unknown option"),
    (["run", "--space.caps.code=2"], "caps.code"),
    (["run", "--objective.domain=books"], "'books' is not a corpus domain"),
    (["run", "--proxy.lr=-1"], "proxy.lr"),
    (["recommend", "--study", "nothing-here", "--tracking-uri", "sqlite:///{tmp}/m.db"], "no such database"),
])
def test_run_config_errors_exit_2(tmp_path, capsys, monkeypatch, argv, needle):
    monkeypatch.chdir(tmp_path)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv + (["--dry-run"] if argv[0] == "run" else [])) == 2
    assert needle in _one_error_line(capsys)
