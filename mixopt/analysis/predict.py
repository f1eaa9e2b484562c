"""Surrogate fidelity: fit on one runs table, rank the runs of another (``mixopt predict``).

Example:
    >>> predict("train.csv", "test.csv", "loss.pile_cc", "lightgbm", n_train=128)  # doctest: +SKIP
    {'spearman': 0.97, 'pearson': 0.96, 'n_train': 128, 'n_test': 256, ...}
"""

from __future__ import annotations

import numpy as np

from mixopt.core.errors import RunsTableError
from mixopt.core.runs_table import RunsTable, read_runs_table


def _aligned_test_weights(train: RunsTable, test: RunsTable) -> np.ndarray:
    """Test weights in train's domain order; RunsTableError naming any domain difference."""
    if set(train.domains) != set(test.domains):
        only_train = sorted(set(train.domains) - set(test.domains))
        only_test = sorted(set(test.domains) - set(train.domains))
        raise RunsTableError(
            f"{test.path}: mixture domains differ from {train.path}: "
            f"only in train: {', '.join(only_train) or '(none)'}; "
            f"only in test: {', '.join(only_test) or '(none)'}")
    return test.df[train.weight_columns].to_numpy(dtype=float)


def predict(train: str, test: str, objective: str, surrogate: str, n_train: int | None = None,
            seed: int = 0, surrogate_options: dict | None = None) -> dict:
    """Fit ``surrogate`` on TRAIN and report rank/linear correlation on TEST.

    ``surrogate`` is any name of :func:`mixopt.search.surrogates.available`, so every searcher's
    model can be scored: ``lightgbm``/``linear``/``auto`` (``regmix``), ``gp``/``bo`` (``bo``'s GP),
    ``mixing_law`` (the ``mixing_law`` searcher's law).

    Rows whose objective is not finite (failed runs) are dropped from both tables first. With
    ``n_train`` smaller than the remaining train rows, a seeded uniform random subset of
    ``n_train`` rows is used (``numpy.random.default_rng(seed)``, without replacement), so
    repeated seeds give independent subsets; ``None`` uses every row. ``seed`` also seeds
    the surrogate; ``surrogate_options`` go to the surrogate (e.g. ``{"warp": "clr"}`` for gp).

    Returns ``{"spearman", "pearson", "n_train", "n_test", "surrogate", "objective"}``; with a
    constant test objective (or constant predictions) the correlations are None and ``note`` says why.
    """
    from scipy import stats

    from mixopt.search.surrogates import make_surrogate

    tr = read_runs_table(train, objective)
    te = read_runs_table(test, objective)
    Xte = _aligned_test_weights(tr, te)
    Xtr, ytr = tr.weights(), tr.metric(objective)
    yte = te.metric(objective)
    keep_tr, keep_te = np.isfinite(ytr), np.isfinite(yte)
    Xtr, ytr, Xte, yte = Xtr[keep_tr], ytr[keep_tr], Xte[keep_te], yte[keep_te]
    if n_train is not None:
        if isinstance(n_train, bool) or not isinstance(n_train, (int, np.integer)) or n_train < 2:
            raise RunsTableError(f"{train}: n_train={n_train!r} must be an integer >= 2")
        if n_train > len(ytr):
            raise RunsTableError(f"{train}: n_train={n_train} but the table has only {len(ytr)} "
                                 f"runs with a finite {objective!r}")
        if n_train < len(ytr):
            idx = np.sort(np.random.default_rng(seed).choice(len(ytr), size=n_train, replace=False))
            Xtr, ytr = Xtr[idx], ytr[idx]
    if len(ytr) < 2:
        raise RunsTableError(f"{train}: only {len(ytr)} runs with a finite {objective!r}; need >= 2")
    if len(yte) < 3:
        raise RunsTableError(f"{test}: only {len(yte)} runs with a finite {objective!r}; need >= 3")
    model = make_surrogate(surrogate, seed=seed, **dict(surrogate_options or {})).fit(Xtr, ytr)
    pred = model.predict(Xte)
    out = {"spearman": None, "pearson": None, "n_train": int(len(ytr)), "n_test": int(len(yte)),
           "surrogate": surrogate, "objective": objective}
    if np.ptp(yte) == 0 or np.ptp(pred) == 0:  # a correlation with a constant is undefined, not NaN
        out["note"] = (f"correlations undefined: {objective!r} is constant in {test}" if np.ptp(yte) == 0 else
                       "correlations undefined: the surrogate predicts one value for every test run")
        return out
    out["spearman"] = float(stats.spearmanr(pred, yte).statistic)
    out["pearson"] = float(stats.pearsonr(pred, yte).statistic)
    return out
