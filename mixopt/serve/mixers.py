"""Online mixers behind ``mixopt serve``: a trainer in any language reports losses and gets weights.

Each mixer (:mod:`mixopt.online`) is held by the server under an id its creator chooses, behind its
own lock (a mixer is a state machine: two reports at once must not interleave). Its state can be
read (``GET .../state``) and restored into a new server (``PUT .../state``): a trainer that saves it
with its checkpoints resumes the same trajectory anywhere. Errors are the mixers' own
(:class:`~mixopt.core.errors.OnlineMixerError`, 400), an unknown id 404, an id taken 409.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from mixopt.core.errors import AlreadyExistsError, NotFoundError, OnlineMixerError
from mixopt.core.names import check_study_name
from mixopt.core.spec import RESERVED_ONLINE_KEYS
from mixopt.online import OnlineMixer, load_mixer, make_mixer
from mixopt.serve.bodies import _Body


class MixerBody(_Body):
    """``mixopt.online.make_mixer`` arguments, plus the id the mixer is reached by."""

    id: str = Field(description="the mixer's id on this server (e.g. 'my-run-7')")
    name: str = Field("aioli", description="aioli | doremi | static")
    domains: Any = Field(description="the domain names, a list (checked by make_mixer, as in-process)")
    start: Any = Field(None, description="the mixture to begin from ({domain: weight}; default uniform)")
    study: str | None = Field(None, description="what the mixer belongs to (its saved state is only accepted by "
                                                "a mixer of the same study, domains, start and options)")
    options: dict[str, Any] = Field(default_factory=dict, description="the method's options")
    load_if_exists: bool = False


class ObserveBody(_Body):
    step: Any = Field(description="the step the report is about (0-based)")
    losses: Any = Field(description="{domain: loss}: an evaluation's (every domain) or a step's batch ({} allowed)")
    kind: Any = Field("train", description="train | eval")
    reference: Any = Field(None, description="DoReMi: the reference model's per-domain losses for this step")


class StateBody(_Body):
    state: Any = Field(description="a mixer's state_dict()")


@dataclass
class _Held:
    mixer: OnlineMixer
    lock: threading.Lock = field(default_factory=threading.Lock)


class MixerHub:
    """The mixers one server holds, each behind its own lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, _Held] = {}

    def ids(self) -> list[str]:
        return sorted(self._held)

    def create(self, b: MixerBody) -> OnlineMixer:
        check_study_name(b.id, "mixer id")
        taken = sorted(set(b.options) & RESERVED_ONLINE_KEYS)
        if taken:
            raise OnlineMixerError(f"options.{taken[0]}: give it as the body's own field, not as an option")
        mixer = make_mixer(b.name, b.domains, start=b.start, study=b.study, **dict(b.options))
        mixer.plan()  # a mixer that cannot plan its first step is refused here, not held under the id
        with self._lock:
            held = self._held.get(b.id)
            if held is not None:
                if b.load_if_exists and held.mixer.fingerprint == mixer.fingerprint:
                    return held.mixer
                raise AlreadyExistsError(f"mixer {b.id!r} exists on this server" + (
                    " with another mixer, study, domains, start or options" if b.load_if_exists else
                    "; choose another id, or pass load_if_exists"))
            self._held[b.id] = _Held(mixer)
            return mixer

    def restore(self, mixer_id: str, state: Mapping[str, Any]) -> OnlineMixer:
        """Put a saved state under ``mixer_id``: into the mixer held there (it must match), or as a new one."""
        check_study_name(mixer_id, "mixer id")
        with self._lock:
            held = self._held.get(mixer_id)
            if held is None:
                self._held[mixer_id] = held = _Held(load_mixer(state))
                return held.mixer
        with held.lock:
            self.check_held(mixer_id, held)
            held.mixer.load_state_dict(state)
            return held.mixer

    def check_held(self, mixer_id: str, held: _Held) -> None:
        """Inside ``held.lock``: the mixer is still the one held under its id (not deleted meanwhile)."""
        if self._held.get(mixer_id) is not held:
            raise NotFoundError(f"mixer {mixer_id!r} was deleted")

    def held(self, mixer_id: str) -> _Held:
        h = self._held.get(mixer_id)
        if h is None:
            raise NotFoundError(f"no mixer {mixer_id!r} on this server" + (f"; mixers: {', '.join(self.ids())}"
                                                                          if self._held else ""))
        return h

    def delete(self, mixer_id: str) -> None:
        with self._lock:
            self.held(mixer_id)
            del self._held[mixer_id]


def mixer_info(mixer_id: str, mixer: OnlineMixer) -> dict[str, Any]:
    """What the create and plan calls answer: the id, the mixer's identity and its current plan."""
    return {"id": mixer_id, "name": mixer.name, "domains": list(mixer.domains), "study": mixer.study,
            "step": mixer.step, "plan": mixer.plan().to_dict()}


def add_routes(app, hub: MixerHub, _json: Callable[[Any], Any]) -> None:
    """The ``/mixers`` endpoints (see :mod:`mixopt.serve.app`'s list); ``_json`` makes a JSON response."""

    @app.get("/mixers", tags=["online mixers"])
    def mixers() -> Any:
        """The ids of the mixers this server holds."""
        return _json({"mixers": hub.ids()})

    @app.post("/mixers", tags=["online mixers"])
    def create(body: MixerBody) -> Any:
        """Create an online mixer (``mixopt.online.make_mixer``) under the id given."""
        m = hub.create(body)
        return _json(mixer_info(body.id, m))

    @app.get("/mixers/{mixer_id}/plan", tags=["online mixers"])
    def plan(mixer_id: str) -> Any:
        """The plan of the mixer's next step: mixture to sample, evaluation due, report needed, ..."""
        h = hub.held(mixer_id)
        with h.lock:
            return _json(mixer_info(mixer_id, h.mixer))

    @app.post("/mixers/{mixer_id}/observe", tags=["online mixers"])
    def observe(mixer_id: str, body: ObserveBody) -> Any:
        """Report an evaluation (kind eval) or a step's batch losses (kind train); answers the next plan."""
        h = hub.held(mixer_id)
        with h.lock:
            hub.check_held(mixer_id, h)
            h.mixer.observe(body.step, body.losses, kind=body.kind, reference=body.reference)
            return _json(mixer_info(mixer_id, h.mixer))

    @app.get("/mixers/{mixer_id}/state", tags=["online mixers"])
    def state(mixer_id: str) -> Any:
        """The mixer's state (save it with your checkpoints; PUT it back to resume)."""
        h = hub.held(mixer_id)
        with h.lock:
            return _json({"state": h.mixer.state_dict(), "summary": h.mixer.summary()})

    @app.put("/mixers/{mixer_id}/state", tags=["online mixers"])
    def restore(mixer_id: str, body: StateBody) -> Any:
        """Restore a saved state (refused when it is another study's, mixer's or domain list's)."""
        return _json(mixer_info(mixer_id, hub.restore(mixer_id, body.state)))

    @app.delete("/mixers/{mixer_id}", tags=["online mixers"])
    def delete(mixer_id: str) -> Any:
        hub.delete(mixer_id)
        return _json({"deleted": mixer_id})
