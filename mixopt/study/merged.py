"""A study's merged scores: the tables its screening rounds stored (model-merging proxies), read back.

A screening round (``mixopt.run.experts.screen``) logs one run of role ``merge`` per round under the
study, holding a CSV of every mixture it scored by merging the study's domain experts. This reads
them back as one table, and as the searchers' view of them (``SearchContext.merged``): one
:class:`~mixopt.search.Observation` per mixture (never a trial) and what a merged score costs. The
table is read again only when the study has new rounds (one look at the store's runs per call).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mixopt.core.mixture import Mixture, MixtureSpace
from mixopt.core.trial import TrialState
from mixopt.search import Observation
from mixopt.study.storage import Storage

if TYPE_CHECKING:
    import pandas as pd


class MergedScores:
    """The merged scores of study ``name`` in ``storage`` (cached per set of screening rounds)."""

    def __init__(self, storage: Storage, name: str) -> None:
        self.storage, self.name = storage, name
        self._ids: tuple[str, ...] | None = None
        self._table: pd.DataFrame | None = None
        self._costs: list[float] = []
        self._obs: tuple[tuple, tuple[Observation, ...]] | None = None  # (rounds, domains) -> observations

    def table(self) -> pd.DataFrame:
        """``round``, ``candidate``, ``w.*``, ``loss.*``, ``objective``: every mixture scored by merging
        (empty without screening rounds)."""
        import pandas as pd

        runs = self.storage.runs(self.name, "merge")
        ids = tuple(r["run_id"] for r in runs)
        if ids != self._ids:
            frames = []
            with tempfile.TemporaryDirectory() as d:
                for r in runs:
                    for f in self.storage.run_files(self.name, r["run_id"], Path(d) / r["run_id"]).values():
                        if f.suffix == ".csv":
                            frames.append(pd.read_csv(f))
            self._table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
            # a merged score's FLOPs as a share of one proxy training's, per round
            self._costs = [float(r["metrics"]["score_cost_in_proxies"]) for r in runs
                           if "score_cost_in_proxies" in r["metrics"]]
            self._ids = ids
        return self._table

    def observations(self, space: MixtureSpace, proxy_cost: float) -> tuple[tuple[Observation, ...], float | None]:
        """The merged scores as searchers see them, and one's cost in the unit of ``proxy_cost`` (what
        training one proxy of the experts' spec costs); ((), None) without merged scores."""
        df = self.table()
        if df.empty:
            return (), None
        key = (self._ids, tuple(space.domains))
        if self._obs is None or self._obs[0] != key:  # built once per set of rounds, not on every ask
            X = df[[f"w.{d}" for d in space.domains]].to_numpy(dtype=float)
            self._obs = (key, tuple(Observation(-1 - i, Mixture.from_array(x, space.domains), TrialState.COMPLETE,
                                                float(v))
                                    for i, (x, v) in enumerate(zip(X, df["objective"].to_numpy(dtype=float)))))
        return self._obs[1], float(np.mean(self._costs)) * proxy_cost if self._costs else None
