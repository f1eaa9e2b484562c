"""Typed exceptions under one root.

User mistakes (a bad config, mixture, runs table, CLI argument or data folder) raise a
subclass of :class:`UserError`; the CLI prints its message on one line and exits with
code 2. Anything else is a bug or a system failure and keeps its traceback.
"""

from __future__ import annotations


class MixoptError(Exception):
    """Root of every exception mixopt raises on purpose."""


class UserError(MixoptError):
    """Something the user gave us is wrong. The message says what, where and what is allowed."""

    exit_code = 2


class ConfigError(UserError):
    """A study config key, type or value is invalid."""


class MixtureError(UserError):
    """A mixture is negative, non-finite, does not sum to 1, or names an unknown domain."""


class SpaceError(UserError):
    """A mixture space is infeasible (floors/caps cannot hold a point of the simplex)."""


class RunsTableError(UserError):
    """A runs table lacks `w.` columns or the objective column, or holds bad values."""


class DataError(UserError):
    """A corpus source or domain folder is missing, empty, or unreadable."""


class BudgetError(UserError):
    """A token budget is larger than the data allows under the repetition cap."""


class TrialError(MixoptError):
    """A proxy trial failed for an application reason (diverged, bad data); recorded as FAILED."""
