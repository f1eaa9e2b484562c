"""executor.synchronous: the same config and seed give the same trials whatever order workers finish in."""

import random

from mixopt.run.config import load_config
from mixopt.run.executors import LocalExecutor
from mixopt.run.loop import run
from mixopt.study import InMemoryStorage
from tests.conftest import study_yaml


class OutOfOrder:
    """Two workers whose trials finish in an order drawn from ``seed`` (one per ``wait``), as on a busy machine."""

    def __init__(self, seed: int) -> None:
        self.inner, self.capacity, self.rng = LocalExecutor(capacity=2), 2, random.Random(seed)
        self.done = []

    def submit(self, tid, req):
        self.inner.submit(tid, req)
        self.done += self.inner.wait()

    def running(self):
        return len(self.done)

    def wait(self, timeout=None):
        return [self.done.pop(self.rng.randrange(len(self.done)))] if self.done else []

    def cancel(self):
        return []

    def shutdown(self):
        pass


def _trials(tmp_path, tiny_domains, sync: bool, order: int):
    path = study_yaml(tmp_path / f"s{sync}{order}.yaml", tiny_domains, tmp_path / "cache", "sqlite:///unused.db",
                      tmp_path / "out", budget={"trials": 8}, search={"n_init": 2},
                      executor={"kind": "local", "workers": 2, "synchronous": sync})
    out = run(load_config(path), storage=InMemoryStorage(), executor=OutOfOrder(order), progress=lambda m: None)
    return [tuple(round(t.mixture[d], 12) for d in sorted(t.mixture)) for t in out.study.trials], \
        dict(out.recommendation.mixture)


def test_synchronous_runs_repeat_whatever_order_trials_finish_in(tmp_path, tiny_domains):
    sync = [_trials(tmp_path, tiny_domains, True, order) for order in (0, 1, 2)]
    assert sync[0] == sync[1] == sync[2]
    # asynchronous (the default): what the searcher has seen when it asks depends on the order
    free = [_trials(tmp_path, tiny_domains, False, order) for order in (0, 1, 2)]
    assert len({str(f) for f in free}) > 1
    assert all(f[0][:2] == sync[0][0][:2] for f in free)  # the initial design is the same either way
