"""Runs tables: one row per proxy run, ``w.<domain>`` mixture columns, metric columns.

The contract (DESIGN.md): CSV or Parquet by extension; ``w.<domain>`` columns hold the mixture
and sum to 1 (within 1e-3); any other numeric column is a metric (e.g. ``loss.pile_cc``);
optional ``run``, ``scale``, ``params``, ``tokens``. Rows in error messages are numbered from
0 in file order, with the ``run`` name when the table has one.

Example:
    >>> t = read_runs_table("runs.csv", objective="loss.pile_cc")    # doctest: +SKIP
    >>> t.weights().shape, t.metric("loss.pile_cc").shape             # doctest: +SKIP
    ((512, 17), (512,))
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mixopt.core.errors import RunsTableError

WEIGHT_PREFIX = "w."
SUM_TOL = 1e-3
INFO_COLUMNS = ("run", "scale", "params", "tokens", "state", "trial_id")
_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def _format(path: Path) -> str:
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise RunsTableError(f"{path}: unknown runs-table extension {path.suffix!r}; "
                             f"allowed: {', '.join(_FORMATS)}")
    return fmt


@dataclass(frozen=True)
class RunsTable:
    """A validated runs table. ``domains`` follow the file's ``w.`` column order."""

    path: str                      # the file, or a label such as "<dataframe>"
    df: pd.DataFrame
    domains: tuple[str, ...]

    @classmethod
    def from_frame(cls, df: pd.DataFrame, source: str = "<dataframe>",
                   objective: str | None = None) -> RunsTable:
        """Validate an in-memory table (a copy is kept); errors name ``source``."""
        return _validate(Path(source) if source != "<dataframe>" else source, df.copy(), objective)

    @property
    def source(self) -> str:
        return self.path

    @property
    def weight_columns(self) -> list[str]:
        return [WEIGHT_PREFIX + d for d in self.domains]

    @property
    def metrics(self) -> list[str]:
        """Numeric non-weight columns (``run``/``scale``/``params``/``tokens`` excluded)."""
        return _metric_columns(self.df)

    def __len__(self) -> int:
        return len(self.df)

    def weights(self) -> np.ndarray:
        """Mixture weights, (n, k) aligned to ``domains``."""
        return self.df[self.weight_columns].to_numpy(dtype=float)

    def metric(self, name: str) -> np.ndarray:
        """Column ``name`` as floats, (n,); nan where a run has no value."""
        if name not in self.df.columns or name.startswith(WEIGHT_PREFIX):
            raise RunsTableError(f"{self.path}: no metric column {name!r}; "
                                 f"available: {', '.join(self.metrics) or '(none)'}")
        col = pd.to_numeric(self.df[name], errors="coerce")
        return col.to_numpy(dtype=float)


def _metric_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if not str(c).startswith(WEIGHT_PREFIX)
            and c not in INFO_COLUMNS and pd.api.types.is_numeric_dtype(df[c])]


def _show(v: object) -> str:
    """A cell as a user wrote it: ``nan``, ``-0.5``, ``'abc'`` (not ``np.float64(nan)``)."""
    if isinstance(v, (np.floating, np.integer)):
        v = v.item()
    return repr(v) if isinstance(v, str) else str(v)


def _row_name(df: pd.DataFrame, i: int) -> str:
    if "run" in df.columns:
        return f"row {i} (run {df['run'].iloc[i]!r})"
    return f"row {i}"


def _load(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise RunsTableError(f"{path}: runs table not found")
    if path.is_dir():
        raise RunsTableError(f"{path}: is a folder; expected a runs-table file (.csv or .parquet)")
    fmt = _format(path)
    if fmt == "csv":
        _check_header(path)
    try:
        return pd.read_csv(path) if fmt == "csv" else pd.read_parquet(path)
    except Exception as e:  # pandas/pyarrow raise many types for a bad file
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RunsTableError(f"{path}: cannot read as {fmt}: {msg}") from None


def _check_header(path: Path) -> None:
    """pandas renames a repeated column ``w.a`` to ``w.a.1``: refuse repeated names first."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return  # pandas reports an unreadable file below
    dup = sorted({c for c in header if header.count(c) > 1})
    if dup:
        raise RunsTableError(f"{path}: column(s) {', '.join(repr(c) for c in dup)} appear more than once in the "
                             "header; each column name must be unique")


def _validate_weights(path: Path | str, df: pd.DataFrame, wcols: list[str]) -> None:
    for c in wcols:
        col = pd.to_numeric(df[c], errors="coerce")
        bad = col.isna() | ~np.isfinite(col.to_numpy(dtype=float, na_value=np.nan))
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise RunsTableError(f"{path}: {_row_name(df, i)}, column {c!r}: weight {_show(df[c].iloc[i])} "
                                 "is not a finite number; weights must be numbers >= 0")
        neg = (col < 0).to_numpy()
        if neg.any():
            i = int(np.flatnonzero(neg)[0])
            raise RunsTableError(f"{path}: {_row_name(df, i)}, column {c!r}: weight {_show(col.iloc[i])} "
                                 "is negative; weights must be >= 0")
    sums = df[wcols].to_numpy(dtype=float).sum(axis=1)
    off = np.abs(sums - 1.0) > SUM_TOL
    if off.any():
        i = int(np.flatnonzero(off)[0])
        raise RunsTableError(f"{path}: {_row_name(df, i)}: weights sum to {sums[i]:.6g}; the w. "
                             f"columns of a row must sum to 1 (within {SUM_TOL:g})")


def read_runs_table(path: str | os.PathLike, objective: str | None = None) -> RunsTable:
    """Read and validate a runs table; ``objective`` (if given) must be a numeric column."""
    p = Path(path)
    return _validate(p, _load(p), objective)


def _validate(p: Path | str, df: pd.DataFrame, objective: str | None) -> RunsTable:
    wcols = [str(c) for c in df.columns if str(c).startswith(WEIGHT_PREFIX)]
    if not wcols:
        raise RunsTableError(f"{p}: no mixture columns; a runs table needs 'w.<domain>' columns "
                             f"(found: {', '.join(map(str, df.columns[:10])) or '(none)'})")
    if len(df) == 0:
        raise RunsTableError(f"{p}: the table has no rows")
    _validate_weights(p, df, wcols)
    df[wcols] = df[wcols].astype(float)
    if objective is not None:
        if objective not in df.columns or objective.startswith(WEIGHT_PREFIX):
            raise RunsTableError(f"{p}: objective column {objective!r} not found; available metric "
                                 f"columns: {', '.join(_metric_columns(df)) or '(none)'}")
        if not pd.api.types.is_numeric_dtype(df[objective]):
            raise RunsTableError(f"{p}: objective column {objective!r} is not numeric")
    domains = tuple(c[len(WEIGHT_PREFIX):] for c in wcols)
    return RunsTable(str(p), df, domains)


def write_runs_table(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``df`` as CSV or Parquet (by extension) atomically: temp file, then ``os.replace``."""
    p = Path(path)
    fmt = _format(p)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    os.close(fd)
    try:
        if fmt == "csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
