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


class TokenizerError(UserError):
    """A tokenizer file is missing, malformed or not BPE, or its merges do not occur in the given text."""


class BudgetError(UserError):
    """A token budget is larger than the data allows under the repetition cap."""


class NotFoundError(UserError):
    """What was asked for does not exist: a study, a trial (``mixopt serve`` answers 404)."""


class AlreadyExistsError(UserError):
    """Something to be created exists already: a study of that name (``mixopt serve`` answers 409)."""


class OnlineMixerError(UserError):
    """An online mixer got bad input: unknown domains, NaN/negative losses, a step out of order, a bad option, or a
    saved state from another study, mixer or set of domains (``mixopt.online``)."""


class TrialError(MixoptError):
    """A proxy trial failed for an application reason; recorded as FAILED.

    ``kind`` says why (``mixopt.core.worker.FAILURE_KINDS``): "diverged", "data" (weight on a domain
    without enough data, an eval domain missing from the corpus), or "error".
    """

    def __init__(self, message: str = "", kind: str = "error") -> None:
        super().__init__(message)
        self.kind = kind

    def __reduce__(self):  # pickles with its kind (Ray ships a trial's exception to the driver)
        return (type(self), (str(self), self.kind))
