from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mixopt.analysis.predict import predict
from mixopt.core.errors import RunsTableError
from mixopt.core.runs_table import write_runs_table

BENCH = Path(__file__).resolve().parents[3] / "shared" / "benchdata"


def make(path, n, seed, domains=("a", "b", "c", "d")):
    rng = np.random.default_rng(seed)
    W = rng.dirichlet(np.ones(len(domains)), size=n)
    y = 3 + ((W - 1 / len(domains)) ** 2).sum(1) + W[:, 0] + 0.001 * rng.normal(size=n)
    df = pd.DataFrame({f"w.{d}": W[:, j] for j, d in enumerate(domains)})
    df["loss.x"] = y
    write_runs_table(df, path)
    return path


@pytest.mark.parametrize("surrogate", ["lightgbm", "linear"])
def test_predict_ranks(tmp_path, surrogate):
    tr, te = make(tmp_path / "tr.csv", 120, 0), make(tmp_path / "te.parquet", 60, 1)
    out = predict(str(tr), str(te), "loss.x", surrogate)
    assert set(out) == {"spearman", "pearson", "n_train", "n_test", "surrogate", "objective"}
    assert out["n_train"] == 120 and out["n_test"] == 60 and out["surrogate"] == surrogate
    assert out["spearman"] > 0.7 and out["pearson"] > 0.7


def test_subset_is_seeded(tmp_path):
    tr, te = make(tmp_path / "tr.csv", 80, 0), make(tmp_path / "te.csv", 40, 1)
    a = predict(str(tr), str(te), "loss.x", "linear", n_train=20, seed=1)
    b = predict(str(tr), str(te), "loss.x", "linear", n_train=20, seed=1)
    c = predict(str(tr), str(te), "loss.x", "linear", n_train=20, seed=2)
    assert a == b and a["n_train"] == 20 and a["spearman"] != c["spearman"]


def test_nan_objective_rows_dropped(tmp_path):
    tr = make(tmp_path / "tr.csv", 50, 0)
    df = pd.read_csv(tr)
    df.loc[[1, 2], "loss.x"] = np.nan
    df.to_csv(tr, index=False)
    out = predict(str(tr), str(make(tmp_path / "te.csv", 30, 1)), "loss.x", "linear")
    assert out["n_train"] == 48


def test_errors(tmp_path):
    tr, te = make(tmp_path / "tr.csv", 30, 0), make(tmp_path / "te.csv", 30, 1)
    with pytest.raises(RunsTableError, match="n_train=31 but the table has only 30"):
        predict(str(tr), str(te), "loss.x", "linear", n_train=31)
    with pytest.raises(RunsTableError, match="n_train=1"):
        predict(str(tr), str(te), "loss.x", "linear", n_train=1)
    other = make(tmp_path / "o.csv", 30, 1, domains=("a", "b", "c", "e"))
    with pytest.raises(RunsTableError, match="only in train: d; only in test: e"):
        predict(str(tr), str(other), "loss.x", "linear")
    with pytest.raises(RunsTableError, match="objective column 'loss.y' not found"):
        predict(str(tr), str(te), "loss.y", "linear")


def test_domain_order_is_aligned(tmp_path):
    tr = make(tmp_path / "tr.csv", 60, 0)
    te = make(tmp_path / "te.csv", 40, 1)
    df = pd.read_csv(te)
    df[["loss.x", "w.d", "w.c", "w.b", "w.a"]].to_csv(tmp_path / "te2.csv", index=False)
    a = predict(str(tr), str(te), "loss.x", "linear")
    b = predict(str(tr), str(tmp_path / "te2.csv"), "loss.x", "linear")
    assert a == b


@pytest.mark.skipif(not (BENCH / "regmix_1m_train.csv").exists(), reason="benchdata absent")
def test_regmix_benchdata_linear():
    out = predict(str(BENCH / "regmix_1m_train.csv"), str(BENCH / "regmix_1m_test.csv"),
                  "loss.pile_cc", "linear")
    assert out["n_train"] == 512 and out["n_test"] == 256 and out["spearman"] > 0.85


@pytest.mark.parametrize("surrogate,opts", [("mixing_law", {"restarts": 2}), ("gp", {"warp": "clr"}),
                                            ("auto", {"switch_at": 50, "n_estimators": 100})])
def test_searcher_models_score_through_predict(tmp_path, surrogate, opts):
    tr, te = make(tmp_path / "tr.csv", 60, 0), make(tmp_path / "te.csv", 40, 1)
    out = predict(str(tr), str(te), "loss.x", surrogate, surrogate_options=opts)
    assert out["surrogate"] == surrogate and out["spearman"] > 0.5


def test_predict_cli_surrogate_options(tmp_path, capsys):
    import argparse
    import json

    from mixopt.analysis.cli import add_parsers
    from mixopt.core.errors import ConfigError, UserError

    tr, te = make(tmp_path / "tr.csv", 40, 0), make(tmp_path / "te.csv", 30, 1)
    parser = argparse.ArgumentParser()
    handlers = add_parsers(parser.add_subparsers(dest="cmd"))
    argv = ["predict", "--train", str(tr), "--test", str(te), "--objective", "loss.x", "--surrogate", "mixing_law",
            "--surrogate-option", "restarts=1", "--surrogate-option", "ridge=0.001", "--json"]
    assert handlers["predict"](parser.parse_args(argv), []) == 0
    assert json.loads(capsys.readouterr().out)["surrogate"] == "mixing_law"
    with pytest.raises(UserError, match="KEY=VALUE"):
        handlers["predict"](parser.parse_args(argv[:-1] + ["--surrogate-option", "oops"]), [])
    with pytest.raises(ConfigError, match="bogus"):
        handlers["predict"](parser.parse_args(argv[:-1] + ["--surrogate-option", "bogus=1"]), [])
