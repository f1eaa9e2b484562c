"""The ground floor: value types every other layer shares.

:class:`Mixture` / :class:`MixtureSpace`, :class:`Objective`, :class:`ProxySpec`,
:class:`Trial`, the worker boundary (:class:`TrialRequest` / :class:`TrialResult`), runs
tables, the typed config loader and the error hierarchy. Imports nothing else of mixopt.
"""
