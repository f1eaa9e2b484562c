"""``mixopt replay``: searchers replayed against a runs table used as a pool."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pytest

from mixopt.analysis.replay import add_replay_parser, cmd_replay, parse_searchers, replay_pool
from mixopt.core.errors import ConfigError, UserError

DOMAINS = ("code", "legal", "prose", "math")


def pool(n=200, seed=0):
    rng = np.random.default_rng(seed)
    W = rng.dirichlet(np.full(len(DOMAINS), 0.7), n)
    loss = 2.0 + np.exp(W @ np.array([0.8, -1.2, 0.4, 0.1])) + rng.normal(0, 0.002, n)   # learnable
    return W, loss


@pytest.fixture
def runs(tmp_path):
    W, loss = pool()
    df = pd.DataFrame(W, columns=[f"w.{d}" for d in DOMAINS])
    df["loss.avg"] = loss
    df["score"] = -loss
    df.loc[7, ["loss.avg", "score"]] = np.nan        # a failed run in the table
    path = tmp_path / "runs.csv"
    df.to_csv(path, index=False)
    return path


def ns(runs, **kw) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_replay_parser(parser.add_subparsers(dest="cmd"))
    argv = ["replay", "--runs", str(runs), "--objective", kw.pop("objective", "loss.avg"),
            "--searcher", kw.pop("searcher", "regmix:surrogate=linear"), "--budget", str(kw.pop("budget", 40)),
            "--seeds", str(kw.pop("seeds", 3)), "--init", str(kw.pop("init", 5))]
    for k, v in kw.items():
        argv += [f"--{k}"] if v is True else [f"--{k}", str(v)]
    return parser.parse_args(argv)


def test_model_based_beats_random_and_json_keys(runs, capsys):
    assert cmd_replay(ns(runs, searcher="regmix:surrogate=linear,mixing_law:restarts=2", json=True)) == 0
    res = json.loads(capsys.readouterr().out)
    assert list(res) == ["random", "regmix:surrogate=linear", "mixing_law:restarts=2"]
    for r in res.values():
        assert {"evals_to_top1_median", "evals_to_top5_median", "curve"} <= set(r)
        assert len(r["curve"]) == 40 and all(c >= 0 for c in r["curve"])
        assert all(a >= b for a, b in zip(r["curve"], r["curve"][1:]))          # best-so-far
    for name in ("regmix:surrogate=linear", "mixing_law:restarts=2"):
        assert res[name]["evals_to_top5_median"] < res["random"]["evals_to_top5_median"]
        assert res[name]["evals_to_top1_median"] <= res["random"]["evals_to_top1_median"]
        assert res[name]["curve"][-1] == 0.0


def test_maximize_flips_the_objective(runs, capsys):
    cmd_replay(ns(runs, objective="score", maximize=True, json=True, seeds=2))
    up = json.loads(capsys.readouterr().out)
    cmd_replay(ns(runs, objective="loss.avg", json=True, seeds=2))           # the same problem, minimized
    down = json.loads(capsys.readouterr().out)
    for r in (up, down):
        for v in r.values():
            v.pop("wall_s"), v.pop("elapsed_s"), v.pop("cpu_s")
    assert up == down
    cmd_replay(ns(runs, objective="score", json=True, seeds=2))              # minimizing a score: other end
    wrong = json.loads(capsys.readouterr().out)
    assert wrong["random"]["curve"][0] != up["random"]["curve"][0]


def test_same_init_rows_for_every_searcher_and_text_output(runs, capsys):
    W, loss = pool()
    res = replay_pool(W, loss, DOMAINS, "random,regmix:surrogate=linear", budget=5, seeds=2, init=5)
    assert res["random"]["curve"] == res["regmix:surrogate=linear"]["curve"]   # all-init: identical
    assert cmd_replay(ns(runs, budget=10, seeds=1, init=2)) == 0
    out = capsys.readouterr().out
    assert "random" in out and "top1%" in out


def test_never_reaching_the_top_counts_budget_plus_one():
    W, loss = pool(100)
    res = replay_pool(W, loss, DOMAINS, "random", budget=1, seeds=3, init=1)
    r = res["random"]
    assert all(v in (1, 2) for v in r["evals_to_top1"]) and r["missed_top1"] == sum(v == 2 for v in r["evals_to_top1"])


def test_plot_is_a_png(runs, tmp_path, capsys):
    out = tmp_path / "curves.png"
    cmd_replay(ns(runs, budget=8, seeds=1, init=2, plot=out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_searcher_option_syntax():
    assert parse_searchers("regmix:surrogate_options.n_estimators=20,top_k=5")[1] == (
        "regmix:surrogate_options.n_estimators=20,top_k=5", "regmix",
        {"surrogate_options": {"n_estimators": 20}, "top_k": 5})
    assert [s[0] for s in parse_searchers("random,mixing_law")] == ["random", "mixing_law"]


@pytest.mark.parametrize("kw,match", [
    ({"searcher": "nope"}, "unknown searcher"),
    ({"searcher": "regmix:bogus=1"}, "bogus"),
    ({"searcher": "top_k=3,regmix"}, "before any searcher"),
    ({"budget": 500}, "more than the table's 200 rows"),
    ({"seeds": 0}, "--seeds"),
    ({"init": 50}, "--init"),
    ({"objective": "loss.nope"}, "loss.nope"),
])
def test_bad_input_is_a_user_error(runs, kw, match):
    with pytest.raises(UserError, match=match):
        cmd_replay(ns(runs, **kw))


def test_unknown_searcher_is_a_config_error(runs):
    with pytest.raises(ConfigError):
        cmd_replay(ns(runs, searcher="random,bogus"))


def test_workers_give_identical_figures_and_progress():
    W, loss = pool(120)
    lines: list[str] = []
    one = replay_pool(W, loss, DOMAINS, "regmix:surrogate=linear,mixing_law:restarts=1,min_fit=6", budget=14,
                      seeds=3, init=2, progress=lines.append)
    two = replay_pool(W, loss, DOMAINS, "regmix:surrogate=linear,mixing_law:restarts=1,min_fit=6", budget=14,
                      seeds=3, init=2, workers=2)
    for r in (one, two):
        for v in r.values():
            v.pop("wall_s"), v.pop("elapsed_s"), v.pop("cpu_s")
    assert one == two
    assert len(lines) == 9 and sum("finished" in m for m in lines) == 3
    with pytest.raises(UserError, match="--workers"):
        replay_pool(W, loss, DOMAINS, "random", budget=5, seeds=1, workers=0)


def test_stop_at_top1_keeps_the_figures():
    W, loss = pool(120)
    full = replay_pool(W, loss, DOMAINS, "regmix:surrogate=linear", budget=30, seeds=3, init=2)
    short = replay_pool(W, loss, DOMAINS, "regmix:surrogate=linear", budget=30, seeds=3, init=2, stop_at_top1=True)
    for label in full:
        for key in ("evals_to_top1", "evals_to_top5", "missed_top1", "evals_to_top1_median"):
            assert short[label][key] == full[label][key]
        assert len(short[label]["curve"]) == 30
        assert short[label]["curve"][-1] >= full[label]["curve"][-1]
