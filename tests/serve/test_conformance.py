"""RemoteStudy (through a real server) against an in-process Study: the same calls with the same
seed give the same proposals, results, best, recommendation and runs table, and the same mistakes
raise the same exception class with the same message, writing nothing."""

import math

import pandas as pd
import pytest

import mixopt
from mixopt.core.errors import MixoptError
from mixopt.core.trial import TrialState

DOMAINS = ["code", "legal", "web"]


def losses_for(mixture) -> dict[str, float]:
    """A smooth made-up response: each domain's loss falls with its own weight."""
    sq = sum(w * w for w in mixture.values())
    return {d: 3.0 - 0.8 * mixture[d] + 0.5 * sq for d in DOMAINS}


def same_trials(a, b) -> None:
    """Equal but for the MLflow run id (the local study lives in memory)."""
    assert [t.with_(run_id=None) for t in a] == [t.with_(run_id=None) for t in b]


def outcome(call, *args):
    try:
        call(*args)
    except MixoptError as e:
        return type(e).__name__, str(e)
    return None


@pytest.mark.parametrize("searcher,options", [("random", {}), ("regmix", {"surrogate": "linear"})])
def test_same_calls_same_answers(client, store_uri, searcher, options):
    name = f"conformance-{searcher}"
    kw = dict(domains=DOMAINS, searcher=searcher, searcher_options=options, n_init=4, seed=7)
    remote = client.create_study(name, **kw)
    local = mixopt.create_study(name, **kw)  # in memory, same seed
    assert (remote.space, remote.objective, remote.searcher_name, remote.searcher_options, remote.n_init,
            remote.seed, remote.meta) == (local.space, local.objective, local.searcher_name,
                                          local.searcher_options, local.n_init, local.seed, local.meta)
    assert remote.best() is None and local.best() is None

    same_trials([remote.enqueue({"code": 0.5, "legal": 0.25, "web": 0.25}, label="mine")],
                [local.enqueue({"code": 0.5, "legal": 0.25, "web": 0.25}, label="mine")])
    for rnd in range(4):  # the initial design, then the searcher (pending trials counted)
        r, l = remote.ask(2), local.ask(2)
        same_trials(r, l)
        assert all(isinstance(t.mixture, mixopt.Mixture) and t.state is TrialState.PENDING for t in r)
        same_trials([remote.mark_running(r[0].trial_id)], [local.mark_running(l[0].trial_id)])
        for i, (tr, tl) in enumerate(zip(r, l)):
            if rnd == 1 and i == 1:
                told = remote.tell(tr.trial_id, error="OOM"), local.tell(tl.trial_id, error="OOM")
            elif rnd == 2 and i == 1:  # a plain objective value
                told = remote.tell(tr.trial_id, 2.5), local.tell(tl.trial_id, 2.5)
            else:  # a worker result dict with metrics
                res = {"losses": losses_for(tr.mixture), "tokens_per_s": 1234.5, "history": []}
                told = remote.tell(tr.trial_id, res), local.tell(tl.trial_id, res)
            same_trials([told[0]], [told[1]])
        [t] = remote.ask()  # one more, told from the head of the queue
        [u] = local.ask()
        same_trials([t], [u])
        same_trials([remote.tell(t.trial_id, losses_for(t.mixture))], [local.tell(u.trial_id, losses_for(u.mixture))])

    same_trials(remote.trials, local.trials)
    same_trials([remote.trial(3)], [local.trial(3)])
    same_trials([remote.best()], [local.best()])
    assert remote.counts() == local.counts()
    assert remote.counts()["FAILED"] == 1
    rr, lr = remote.recommend(), local.recommend()
    assert (rr.mixture, rr.predicted, rr.std, rr.info) == (lr.mixture, lr.predicted, lr.std, lr.info)
    assert isinstance(rr, type(lr)) and isinstance(rr.mixture, mixopt.Mixture)
    pd.testing.assert_frame_equal(remote.to_dataframe(), local.to_dataframe())
    assert remote.rung_costs() == local.rung_costs() == []

    # what the server did landed in the store: a fresh local load of the served study agrees
    stored = mixopt.load_study(name, store_uri)
    assert [(t.trial_id, t.mixture, t.state, t.value, t.losses, t.error) for t in stored.trials] == \
           [(t.trial_id, t.mixture, t.state, t.value, t.losses, t.error) for t in remote.trials]
    assert client.load_study(name).meta == remote.meta


def test_warm_start_from_table(client, tmp_path):
    df = pd.DataFrame({"run": ["a", "b", "c"], "w.code": [0.2, 0.5, 0.3], "w.legal": [0.3, 0.25, 0.3],
                       "w.web": [0.5, 0.25, 0.4], "loss.code": [3.0, 2.5, 2.8], "loss.legal": [2.9, 3.1, 3.0],
                       "loss.web": [2.0, 2.9, 2.5]})
    path = tmp_path / "past_runs.csv"
    df.to_csv(path, index=False)
    remote = client.create_study("warm", domains=DOMAINS, searcher="regmix", searcher_options={"surrogate": "linear"})
    local = mixopt.create_study("warm", domains=DOMAINS, searcher="regmix", searcher_options={"surrogate": "linear"})
    same_trials(remote.add_completed(path), local.add_completed(path))
    same_trials(remote.add_completed(df.drop(columns=["loss.web"]).assign(obj=[1.0, 2.0, math.nan]), "obj"),
                local.add_completed(df.drop(columns=["loss.web"]).assign(obj=[1.0, 2.0, math.nan]), "obj"))
    assert remote.counts() == local.counts() == {"WAITING": 0, "PENDING": 0, "RUNNING": 0, "COMPLETE": 5, "FAILED": 1}
    same_trials([remote.best()], [local.best()])
    pd.testing.assert_frame_equal(remote.to_dataframe(), local.to_dataframe())
    assert remote.to_csv() == local.to_dataframe().to_csv(index=False)


def same_error(remote_call, local_call) -> None:
    want = outcome(local_call)
    assert want is not None
    assert outcome(remote_call) == want


def test_same_errors_nothing_written(client, store_uri, tmp_path):
    remote = client.create_study("errors", domains=DOMAINS, seed=1)
    local = mixopt.create_study("errors", domains=DOMAINS, seed=1)
    for s in (remote, local):
        [t] = s.ask()
        s.tell(t.trial_id, losses_for(t.mixture))  # trial 0: COMPLETE
        s.ask()  # trial 1: PENDING
        s.enqueue({"code": 1.0})  # trial 2: WAITING
    bad = pd.DataFrame({"w.code": [0.5], "w.nope": [0.5], "objective": [1.0]})
    cases = {
        "bad mixture (sum)": lambda s: s.enqueue({"code": 0.7, "legal": 0.7}),
        "bad mixture (domain)": lambda s: s.enqueue({"code": 0.5, "nope": 0.5}),
        "bad mixture (nan)": lambda s: s.enqueue({"code": math.nan, "legal": 1.0}),
        "bad mixture (negative)": lambda s: s.enqueue({"code": 1.5, "legal": -0.5}),
        "bad mixture (not a mapping)": lambda s: s.enqueue([0.5, 0.5]),
        "unknown trial (tell)": lambda s: s.tell(42, {"code": 1.0}),
        "unknown trial (get)": lambda s: s.trial(42),
        "unknown trial (str id)": lambda s: s.trial("0"),
        "unknown trial (running)": lambda s: s.mark_running(-1),
        "telling twice": lambda s: s.tell(0, 2.0),
        "telling a queued trial": lambda s: s.tell(2, 2.0),
        "running a finished trial": lambda s: s.mark_running(0),
        "bad result": lambda s: s.tell(1, {"code": "x"}),
        "bad result (losses)": lambda s: s.tell(1, {"losses": [1, 2]}),
        "ask n=0": lambda s: s.ask(0),
        "ask n=1.5": lambda s: s.ask(1.5),
        "runs table: unknown domain": lambda s: s.add_completed(bad),
        "runs table: no w. columns": lambda s: s.add_completed(pd.DataFrame({"x": [1.0]})),
        "runs table: missing file": lambda s: s.add_completed(tmp_path / "missing.csv"),
        "runs table: objective column": lambda s: s.add_completed(bad.drop(columns=["w.nope"]), "nope"),
    }
    for what, case in cases.items():
        want = outcome(case, local)
        assert want is not None, what
        assert outcome(case, remote) == want, what
    assert remote.counts() == local.counts() == {"WAITING": 1, "PENDING": 1, "RUNNING": 0, "COMPLETE": 1, "FAILED": 0}
    same_trials(remote.trials, local.trials)

    # before any COMPLETE trial there is nothing to recommend
    same_error(client.create_study("errors-empty", domains=DOMAINS).recommend,
               mixopt.create_study("errors-empty", domains=DOMAINS).recommend)

    # studies: unknown, bad searcher, bad domains, exists (the messages name the same store)
    same_error(lambda: client.load_study("nope"), lambda: mixopt.load_study("nope", store_uri))
    same_error(lambda: client.create_study("s2", domains=DOMAINS, searcher="nope"),
               lambda: mixopt.create_study("s2", domains=DOMAINS, searcher="nope"))
    same_error(lambda: client.create_study("s2", domains=DOMAINS, searcher="regmix", searcher_options={"nope": 1}),
               lambda: mixopt.create_study("s2", domains=DOMAINS, searcher="regmix", searcher_options={"nope": 1}))
    same_error(lambda: client.create_study("s2", domains=["code"]), lambda: mixopt.create_study("s2", domains=["code"]))
    same_error(lambda: client.create_study("s2"), lambda: mixopt.create_study("s2"))
    same_error(lambda: client.create_study("s2", domains=DOMAINS, objective={"domain": "nope"}),
               lambda: mixopt.create_study("s2", domains=DOMAINS, objective={"domain": "nope"}))
    same_error(lambda: client.create_study("errors", domains=DOMAINS),
               lambda: mixopt.create_study("errors", domains=DOMAINS, storage=store_uri))
    assert "s2" not in client.study_names()
    assert client.create_study("errors", domains=DOMAINS, load_if_exists=True).counts() == remote.counts()


def test_space_objective_and_specs(client):
    space = mixopt.MixtureSpace(("code", "legal"), (0.1, 0.0), (0.9, 0.6))
    objective = mixopt.Objective({"web": 1.0}, ("web",), "held-out web")
    spec = mixopt.ProxySpec(preset="dense-0.1m", tokens=20480)
    kw = dict(space=space, objective=objective, searcher="random", seed=5, spec=spec,
              rungs=[mixopt.ProxySpec(preset="dense-0.1m", tokens=10240), spec], extra={"note": "x"})
    remote, local = client.create_study("specs", **kw), mixopt.create_study("specs", **kw)
    assert (remote.space, remote.objective, remote.spec, remote.rungs, remote.meta) == \
           (local.space, local.objective, local.spec, local.rungs, local.meta)
    r, l = remote.ask(3), local.ask(3)
    same_trials(r, l)
    assert all(remote.space.contains(t.mixture) for t in r)
    assert [remote.rung_of(t) for t in r] == [local.rung_of(t) for t in l]
    small = mixopt.ProxySpec(preset="dense-0.1m", tokens=4096)
    same_trials(remote.ask(1, spec=small), local.ask(1, spec=small))
    same_trials([remote.enqueue({"code": 0.5, "legal": 0.5}, spec=small)], [local.enqueue({"code": 0.5, "legal": 0.5},
                                                                                        spec=small)])
    res = {"losses": {"web": 2.5, "code": 3.0}, "train_seconds": 12.0, "history": [{"step": 1, "losses": {"web": 2.7}}]}
    same_trials([remote.tell(r[0].trial_id, res)], [local.tell(l[0].trial_id, res)])
    assert remote.rung_costs() == local.rung_costs()
    pd.testing.assert_frame_equal(remote.to_dataframe(), local.to_dataframe())
