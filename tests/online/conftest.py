"""Shared helpers for the online-mixer tests: a made-up training (a loss model) and a loop that drives a mixer."""

import numpy as np
import pytest


class LossWorld:
    """Per-domain losses that a step on mixture p lowers, with no model behind them.

    ``linear``: ``loss_i -= (A p)_i`` each step (Aioli's linear dynamic mixing law, exactly).
    Otherwise gaps over floors shrink with diminishing returns: ``gap_i *= exp(-(A p)_i)``.
    ``noise`` adds seeded Gaussian noise to what is reported (not to the state).
    """

    def __init__(self, domains, a, start=4.0, floors=None, linear=False, noise=0.0, seed=0):
        self.domains, self.a, self.linear, self.noise = list(domains), np.asarray(a, float), linear, noise
        k = len(self.domains)
        self.floors = np.zeros(k) if floors is None else np.asarray(floors, float)
        self.loss = np.full(k, float(start)) if np.isscalar(start) else np.asarray(start, float)
        self.rng = np.random.default_rng(seed)

    def train(self, mixture):
        p = np.array([mixture[d] for d in self.domains])
        if self.linear:
            self.loss = self.loss - self.a @ p
        else:
            self.loss = self.floors + (self.loss - self.floors) * np.exp(-(self.a @ p))

    def losses(self):
        x = self.loss + (self.rng.normal(0, self.noise, len(self.loss)) if self.noise else 0.0)
        return dict(zip(self.domains, np.maximum(x, 0.0).tolist()))


def drive(mixer, world, steps, evals=None):
    """Run ``steps`` steps of the protocol; returns every step's plan as plain data (``evals`` collects eval steps)."""
    trace = []
    for _ in range(steps):
        plan = mixer.plan()
        if plan.evaluate:
            if evals is not None:
                evals.append(plan.step)
            mixer.observe(plan.step, world.losses(), kind="eval")
            plan = mixer.plan()
        world.train(plan.mixture)
        mixer.observe(plan.step, world.losses() if plan.report else {})
        trace.append(plan.to_dict())
    return trace


@pytest.fixture
def world():
    return LossWorld


@pytest.fixture
def run():
    return drive
