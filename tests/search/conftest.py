"""Shared helpers for the searcher tests."""

import pytest

from mixopt.core.mixture import Mixture
from mixopt.search.base import Observation, SearchContext


@pytest.fixture
def one_thread():
    """One torch thread: on a shared two-core machine, two threads only contend."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def ctx_from(space, xs, values, states=None, seed=0) -> SearchContext:
    """A context of observations at mixtures ``xs`` (projected into ``space``) with ``values``."""
    obs = []
    for i, (x, v) in enumerate(zip(xs, values)):
        st = states[i] if states else "COMPLETE"
        obs.append(Observation(i, Mixture.from_array(space.project(x), space.domains), st,
                               v if st == "COMPLETE" else None))
    return SearchContext(space, tuple(obs), seed)


def mixtures_of(proposals) -> list:
    """The mixtures of a searcher's proposals."""
    return [p.mixture for p in proposals]
