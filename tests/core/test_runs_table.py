from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mixopt.core.errors import RunsTableError
from mixopt.core.runs_table import RunsTable, read_runs_table, write_runs_table


def table(n=6) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    W = rng.dirichlet(np.ones(3), size=n)
    return pd.DataFrame({"run": [f"r{i}" for i in range(n)], "w.code": W[:, 0], "w.books": W[:, 1],
                         "w.web": W[:, 2], "loss.web": 3 + W[:, 0], "scale": "1M"})


@pytest.mark.parametrize("ext", ["csv", "parquet"])
def test_roundtrip(tmp_path, ext):
    p = tmp_path / f"runs.{ext}"
    write_runs_table(table(), p)
    assert [f.name for f in tmp_path.iterdir()] == [p.name]      # no temp file left behind
    t = read_runs_table(p, objective="loss.web")
    assert t.domains == ("code", "books", "web")                  # file order kept
    assert t.weights().shape == (6, 3) and np.allclose(t.weights().sum(1), 1)
    assert np.allclose(t.metric("loss.web"), table()["loss.web"])
    assert t.metrics == ["loss.web"] and len(t) == 6


def write(tmp_path, df, name="runs.csv"):
    p = tmp_path / name
    df.to_csv(p, index=False)
    return p


def test_missing_file(tmp_path):
    with pytest.raises(RunsTableError, match="nope.csv: runs table not found"):
        read_runs_table(tmp_path / "nope.csv")


def test_bad_extension_and_unreadable(tmp_path):
    (tmp_path / "runs.txt").write_text("x")
    with pytest.raises(RunsTableError, match="allowed: .csv, .parquet"):
        read_runs_table(tmp_path / "runs.txt")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(RunsTableError, match="bad.parquet: cannot read as parquet"):
        read_runs_table(tmp_path / "bad.parquet")


def test_no_weight_columns(tmp_path):
    p = write(tmp_path, table().drop(columns=["w.code", "w.books", "w.web"]))
    with pytest.raises(RunsTableError, match="runs.csv: no mixture columns.*w.<domain>"):
        read_runs_table(p)


def test_objective_missing_lists_metrics(tmp_path):
    p = write(tmp_path, table())
    with pytest.raises(RunsTableError, match="'loss.code' not found; available metric columns: loss.web"):
        read_runs_table(p, objective="loss.code")
    with pytest.raises(RunsTableError, match="not found"):
        read_runs_table(p, objective="w.code")
    with pytest.raises(RunsTableError, match="no metric column 'x'"):
        read_runs_table(p).metric("x")


def test_non_numeric_objective(tmp_path):
    df = table()
    df["loss.web"] = "high"
    with pytest.raises(RunsTableError, match="'loss.web' is not numeric"):
        read_runs_table(write(tmp_path, df), objective="loss.web")


@pytest.mark.parametrize("value,msg", [("abc", "not a finite number"), (np.nan, "not a finite number"),
                                       (-0.1, "is negative")])
def test_bad_weight_names_the_row(tmp_path, value, msg):
    df = table().astype({"w.books": object})
    df.loc[3, "w.books"] = value
    with pytest.raises(RunsTableError, match=rf"row 3 \(run 'r3'\), column 'w.books'.*{msg}"):
        read_runs_table(write(tmp_path, df))


def test_rows_must_sum_to_one(tmp_path):
    df = table()
    df.loc[2, "w.web"] += 0.01
    with pytest.raises(RunsTableError, match=r"row 2 \(run 'r2'\): weights sum to 1.0"):
        read_runs_table(write(tmp_path, df))
    df = table().drop(columns=["run"])
    df.loc[4, "w.web"] += 0.0005                               # within 1e-3: accepted
    assert len(read_runs_table(write(tmp_path, df))) == 6


def test_zero_rows(tmp_path):
    with pytest.raises(RunsTableError, match="no rows"):
        read_runs_table(write(tmp_path, table().iloc[:0]))


def test_write_failure_leaves_no_temp(tmp_path):
    with pytest.raises(RunsTableError, match="extension"):
        write_runs_table(table(), tmp_path / "runs.xlsx")
    df = table()
    df["bad"] = [object()] * 6                                  # pyarrow cannot write this
    with pytest.raises(Exception):  # noqa: B017 (whatever pyarrow raises)
        write_runs_table(df, tmp_path / "runs.parquet")
    assert list(tmp_path.iterdir()) == []


def test_from_frame_validates_and_copies():
    df = table()
    t = RunsTable.from_frame(df, objective="loss.web")
    assert t.source == "<dataframe>" and t.domains == ("code", "books", "web")
    bad = df.copy()
    bad.loc[0, "w.code"] = -1.0
    with pytest.raises(RunsTableError, match=r"<dataframe>: row 0 \(run 'r0'\)"):
        RunsTable.from_frame(bad)
