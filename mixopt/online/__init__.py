"""Online mixers: a mixture that changes while the model trains (Aioli, DoReMi, static).

One protocol, the same object in mixopt's engine, in your own PyTorch loop and behind an HTTP
endpoint (every request, report and state is plain data):

``make_mixer(name, domains, start=None, study=None, **options)``
    ``"aioli"`` (arXiv 2411.05735; :class:`AioliOptions`), ``"doremi"`` (arXiv 2305.10429;
    :class:`DoremiOptions`), ``"static"`` (the control). ``start``: begin from any mixture (a
    study's recommendation: the "restricted" start), else uniform.
``mixer.step``
    the next training step (= steps completed); steps are 0-based.
``mixer.plan() -> StepPlan``
    what to do at ``mixer.step``: ``mixture`` to sample, ``evaluate`` (report per-domain
    validation losses first, then ask again), ``report`` (the batch's per-domain train losses are
    needed after the step), ``loss_weights`` (DoReMi's per-domain loss multipliers or None),
    ``phase`` ("prior" | "learn" | "mix"), ``domain_weights`` (the method's own mixture: the
    trajectory to log), ``until`` (the plan holds up to this step). ``plan().to_dict()`` is JSON.
``mixer.weights() -> dict``
    ``plan().mixture``.
``mixer.observe(step, losses, kind="train" | "eval", reference=None)``
    ``"eval"``: every domain's validation loss before training ``step`` (only when asked);
    ``"train"``: completes ``step``, with the batch's per-domain mean losses (``{}`` when the plan
    does not ask for them). Bad input (unknown domain, NaN or negative loss, a step out of order,
    an evaluation not asked for) raises :class:`OnlineMixerError` and changes nothing.
``mixer.average()``, ``mixer.summary()``, ``mixer.stats()``
    the method's output mixture for a static run (DoReMi: alpha averaged over updates; Aioli: its
    p^t averaged over the steps), a plain-data summary, counts of steps/evals/LearnParams/updates.
``mixer.state_dict()`` / ``mixer.load_state_dict(state)`` / ``load_mixer(state)``
    JSON-ready state: ``format``, ``mixer``, ``study``, ``domains``, ``options``, ``start``,
    ``fingerprint``, ``step``, ``stats``, ``sums`` and the method's ``method`` fields. Restoring
    continues the exact trajectory; a state of another mixer, study, domain list, start or
    options is refused.

A training step, by hand::

    plan = mixer.plan()
    if plan.evaluate:
        mixer.observe(plan.step, evaluate_every_domain(model), kind="eval")
        plan = mixer.plan()
    train one step on a batch sampled by plan.mixture (losses weighted by plan.loss_weights if set)
    mixer.observe(plan.step, per_domain_batch_losses if plan.report else {})

:class:`DomainSampler` (draws examples from per-domain datasets by ``mixer.weights()``, seeded and
resumable) and :class:`MixerCallback` (evaluates when asked, reports per-example losses as
per-domain means) do this for a plain PyTorch loop: see ``docs/online.md``.

Example (a made-up loss model in place of training):
    >>> from mixopt.online import make_mixer
    >>> mixer = make_mixer("aioli", ["code", "prose"], update_steps=40, lp_rounds=1, lp_steps=2)
    >>> loss = {"code": 4.0, "prose": 4.0}
    >>> for step in range(120):
    ...     plan = mixer.plan()
    ...     if plan.evaluate:
    ...         mixer.observe(step, loss, kind="eval")
    ...         plan = mixer.plan()
    ...     # training on prose lowers its loss 4x faster than training on code lowers code's
    ...     loss = {"code": loss["code"] - 0.005 * plan.mixture["code"],
    ...             "prose": loss["prose"] - 0.02 * plan.mixture["prose"]}
    ...     mixer.observe(step, {})
    >>> p = mixer.plan().domain_weights  # Aioli's p^t (the step's own mixture may be a LearnParams probe)
    >>> p["prose"] > 0.5 > p["code"], mixer.stats()
    (True, {'steps': 120, 'evals': 9, 'learn_steps': 12, 'updates': 3})
"""

from mixopt.core.errors import OnlineMixerError
from mixopt.online.aioli import AioliMixer, AioliOptions
from mixopt.online.base import OnlineMixer, StepPlan
from mixopt.online.doremi import DoremiMixer, DoremiOptions
from mixopt.online.registry import MIXERS, load_mixer, make_mixer, mixer_names
from mixopt.online.sampler import Batch, DomainSampler, MixerCallback, per_domain_means
from mixopt.online.static import StaticMixer

__all__ = ["MIXERS", "AioliMixer", "AioliOptions", "Batch", "DomainSampler", "DoremiMixer", "DoremiOptions",
           "MixerCallback", "OnlineMixer", "OnlineMixerError", "StaticMixer", "StepPlan", "load_mixer", "make_mixer",
           "mixer_names", "per_domain_means"]
