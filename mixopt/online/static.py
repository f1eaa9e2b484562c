"""The control: a fixed mixture for the whole run (the start mixture; uniform by default)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mixopt.online.base import OnlineMixer


@dataclass(frozen=True)
class StaticOptions:
    """No options: the mixture is the mixer's ``start``."""


class StaticMixer(OnlineMixer):
    """Samples ``start`` at every step; asks for no evaluation and no losses (``observe(step, {})``)."""

    name = "static"
    Options = StaticOptions

    def _init_state(self) -> None:
        pass

    def _now(self) -> tuple[str, np.ndarray, None, np.ndarray, bool, bool, None]:
        return "mix", self.start, None, self.start, False, False, None

    def average(self) -> dict[str, float]:
        return self._dict(self.start)
