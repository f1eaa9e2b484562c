"""Scheduling by packs: the loop groups trials of one architecture into packs of ``pack_size``,
one task each; every trial keeps its own run, metrics and state."""

from pathlib import Path

import mixopt
from mixopt.core.mixture import Mixture
from mixopt.core.spec import ProxySpec
from mixopt.core.trial import Trial, TrialState
from mixopt.run.config import load_config
from mixopt.run.executors import LocalExecutor
from mixopt.run.loop import packs, run
from tests.conftest import study_yaml


def _trial(i: int, spec: ProxySpec) -> Trial:
    return Trial(i, Mixture({"a": 0.5, "b": 0.5}), spec, TrialState.PENDING)


def test_packs_group_by_architecture_and_size():
    cfg = load_config(None, [])
    base = ProxySpec(preset="dense-0.1m", tokens=20480)
    other_seed = ProxySpec(preset="dense-0.1m", tokens=20480, seed=3)      # same pack: seed is per member
    bigger = ProxySpec(preset="dense-1m", tokens=20480)                     # another architecture
    ts = [_trial(0, base), _trial(1, bigger), _trial(2, other_seed), _trial(3, base), _trial(4, base)]
    got = [[t.trial_id for t in p] for p in packs(ts, 2, cfg)]
    assert got == [[0, 2], [3, 4], [1]]
    assert [[t.trial_id for t in p] for p in packs(ts, 1, cfg)] == [[0], [2], [3], [4], [1]]


class CountingExecutor(LocalExecutor):
    def __init__(self):
        super().__init__()
        self.packs: list[list[int]] = []

    def submit_pack(self, trial_ids, requests):
        self.packs.append(list(trial_ids))
        super().submit_pack(trial_ids, requests)


def _cfg(tmp_path: Path, domains: Path):
    path = study_yaml(tmp_path / "study.yaml", domains, tmp_path / "cache", f"sqlite:///{tmp_path / 'mlflow.db'}",
                      tmp_path / "out", study="packed", search={"searcher": "random", "n_init": 0, "options": {}},
                      budget={"trials": 6}, executor={"pack_size": 3})
    return load_config(path)


def test_packed_run_keeps_one_run_per_trial(tmp_path, tiny_domains):
    ex = CountingExecutor()
    out = run(_cfg(tmp_path, tiny_domains), executor=ex)
    assert ex.packs == [[0, 1, 2], [3, 4, 5]]
    study = mixopt.load_study("packed", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert study.counts()["COMPLETE"] == 6
    for t in study.trials:
        assert set(t.losses) == {"code", "legal", "prose"} and t.metrics["pack_size"] == 3
        assert t.run_id
    assert out.recommendation is not None
