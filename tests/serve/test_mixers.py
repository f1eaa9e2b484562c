"""Online mixers over HTTP: the same plans, states and errors as in-process (mixopt.online)."""

import pytest

from mixopt.core.errors import AlreadyExistsError, NotFoundError, OnlineMixerError
from mixopt.online import make_mixer
from mixopt.serve.server import BackgroundServer

DOMAINS = ["code", "prose", "math"]
OPTS = {"update_steps": 30, "lp_rounds": 1, "lp_steps": 2}


def drive(mixer, steps: int, start: int = 0) -> list[dict]:
    """A made-up loss model: training on a domain lowers its loss; every plan recorded."""
    loss = {"code": 4.0, "prose": 4.5, "math": 5.0}
    plans = []
    for step in range(start, start + steps):
        plan = mixer.plan()
        if plan.evaluate:
            mixer.observe(step, loss, kind="eval")
            plan = mixer.plan()
        plans.append(plan.to_dict())
        loss = {d: loss[d] - (0.01, 0.03, 0.02)[i] * plan.mixture[d] for i, d in enumerate(DOMAINS)}
        mixer.observe(step, {})
    return plans


def test_served_mixer_matches_the_in_process_one(client):
    local = make_mixer("aioli", DOMAINS, study="s/t1", **OPTS)
    remote = client.create_mixer("aioli-1", "aioli", DOMAINS, study="s/t1", **OPTS)
    assert drive(remote, 70) == drive(local, 70)
    assert remote.state_dict() == local.state_dict() and remote.summary() == local.summary()
    assert remote.step == local.step == 70 and remote.weights() == local.weights()
    # the same mistakes, the same exception and message; the mixer unchanged
    for bad in ({"nope": 1.0}, {"code": float("nan")}, {"code": -1.0}):
        with pytest.raises(OnlineMixerError) as r:
            remote.observe(70, bad)
        with pytest.raises(OnlineMixerError) as l_:
            local.observe(70, bad)
        assert str(r.value) == str(l_.value)
    assert remote.state_dict() == local.state_dict()


def test_ids_state_and_restart(client, store_uri):
    m = client.create_mixer("doremi-1", "doremi", DOMAINS, study="s/t2", reference={d: 3.0 for d in DOMAINS})
    with pytest.raises(AlreadyExistsError, match="exists on this server"):
        client.create_mixer("doremi-1", "static", DOMAINS)
    same = client.create_mixer("doremi-1", "doremi", DOMAINS, study="s/t2", reference={d: 3.0 for d in DOMAINS},
                               load_if_exists=True)
    assert same.name == "doremi" and same.step == m.step
    with pytest.raises(AlreadyExistsError, match="with another mixer"):  # not silently someone else's mixer
        client.create_mixer("doremi-1", "static", DOMAINS, load_if_exists=True)
    with pytest.raises(OnlineMixerError, match="options.start"):  # one clear error, not a 500
        client.request("POST", "/mixers", {"id": "x", "name": "static", "domains": DOMAINS,
                                           "options": {"start": {"code": 1.0}}})
    with pytest.raises(NotFoundError, match="no mixer 'nope'"):
        client.mixer("nope")
    # the same refusals as in-process, and a refused mixer does not take its id
    from mixopt.online import make_mixer

    for args, opts in ((("static", "abc"), {}), (("aioli", DOMAINS), {"seed": -1})):
        with pytest.raises(OnlineMixerError) as local:
            make_mixer(*args, **opts)
        with pytest.raises(OnlineMixerError) as remote:
            client.create_mixer("y", *args, **opts)
        assert str(remote.value) == str(local.value)
    assert client.create_mixer("y", "static", DOMAINS).name == "static"
    plan = m.plan()
    m.observe(0, {d: 4.0 for d in DOMAINS} if plan.report else {})
    state = m.state_dict()
    # a server restart: the trainer puts the saved state back and continues the same trajectory
    with BackgroundServer(store_uri, host="127.0.0.1", port=0) as other:
        from mixopt.client import Client

        again = Client(other.url).restore_mixer("doremi-1", state)
        assert again.step == 1 and again.plan() == m.plan()
        with pytest.raises(OnlineMixerError, match="study"):  # another study's state is refused
            Client(other.url).create_mixer("x", "doremi", DOMAINS, study="s/other",
                                           reference={d: 3.0 for d in DOMAINS}).load_state_dict(state)
