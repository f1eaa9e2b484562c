"""mixopt serve: ask/tell over HTTP for trainers anywhere.

``app`` (the FastAPI JSON API over :class:`mixopt.study.Study`, one lock per study), ``server``
(run it: foreground or a background thread; loopback unless a token is set), ``cli`` (``mixopt
serve``) and ``wire`` (the JSON shapes, shared with :mod:`mixopt.client`; no FastAPI, no MLflow).
"""
