"""Mixers by name: :func:`make_mixer` builds one, :func:`load_mixer` rebuilds one from its saved state."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mixopt.core.errors import OnlineMixerError
from mixopt.online.aioli import AioliMixer
from mixopt.online.base import OnlineMixer
from mixopt.online.doremi import DoremiMixer
from mixopt.online.static import StaticMixer

MIXERS: dict[str, type[OnlineMixer]] = {m.name: m for m in (AioliMixer, DoremiMixer, StaticMixer)}


def mixer_names() -> list[str]:
    return sorted(MIXERS)


def make_mixer(name: str, domains: Sequence[str], *, start: Mapping[str, float] | str | None = None,
               study: str | None = None, **options: Any) -> OnlineMixer:
    """A new online mixer.

    Args:
        name: ``"aioli"``, ``"doremi"`` or ``"static"``.
        domains: the domain names, in a fixed order (k >= 2).
        start: the mixture to begin from (a study's recommendation, any mapping domain -> weight
            naming every domain); None or "uniform": 1/k each. ``static`` keeps it for good.
        study: what this mixer belongs to (a study name, "study/trial-3", ...); a saved state is
            only accepted by a mixer with the same study, domains, start and options.
        **options: the method's options (``AioliOptions``, ``DoremiOptions``); unknown ones are refused.

    Example:
        >>> m = make_mixer("static", ["code", "prose"], start={"code": 0.25, "prose": 0.75})
        >>> m.weights()
        {'code': 0.25, 'prose': 0.75}
    """
    cls = MIXERS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise OnlineMixerError(f"online mixer {name!r} is unknown; allowed: {', '.join(mixer_names())}")
    return cls(domains, start=start, study=study, **options)


def load_mixer(state: Mapping[str, Any]) -> OnlineMixer:
    """The mixer that saved ``state`` (from ``state_dict()``), rebuilt from the state alone."""
    if not isinstance(state, Mapping):
        raise OnlineMixerError(f"load_mixer: state must be a mapping (from state_dict()), got {type(state).__name__}")
    domains, start, options = state.get("domains"), state.get("start"), state.get("options")
    if not isinstance(domains, list) or not all(isinstance(d, str) for d in domains) or not isinstance(start, list) \
            or len(start) != len(domains) or not isinstance(options, Mapping):
        raise OnlineMixerError("load_mixer: state lacks domains, start or options (is it from state_dict()?)")
    mixer = make_mixer(state.get("mixer"), domains, start=dict(zip(domains, start)), study=state.get("study"),
                       **dict(options))
    mixer.load_state_dict(state)
    return mixer
