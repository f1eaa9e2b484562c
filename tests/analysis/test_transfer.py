"""`mixopt transfer`: arms from several studies, paired comparisons, the scaling-law prediction, bad input."""

import json
import math

import numpy as np
import pytest
from scipy import stats

from mixopt.analysis.transfer import paired, parse_rung
from mixopt.cli import main
from mixopt.core.errors import UserError
from mixopt.core.spec import ProxySpec
from tests.conftest import study_yaml, write_domains


def test_paired_matches_scipy_and_handles_degenerate_cases():
    a = {0: 2.00, 1: 2.10, 2: 1.95, 3: 2.30}
    b = {0: 2.05, 1: 2.20, 2: 2.01, 5: 9.0}  # seed 3 / 5 unpaired: left out
    r = paired(a, b)
    d = np.array([-0.05, -0.10, -0.06])
    assert r["n"] == 3 and r["diff"] == pytest.approx(d.mean())
    assert r["sem"] == pytest.approx(d.std(ddof=1) / math.sqrt(3))
    assert r["t"] == pytest.approx(d.mean() / r["sem"])
    assert r["p"] == pytest.approx(stats.ttest_rel([2.0, 2.1, 1.95], [2.05, 2.2, 2.01]).pvalue)
    one = paired({0: 1.0}, {0: 2.0})
    assert one["diff"] == -1.0 and math.isnan(one["sem"]) and math.isnan(one["p"])
    same = paired({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0})  # zero variance: no t, no p
    assert same["diff"] == 0 and math.isnan(same["t"])


def test_resumed_transfer_refuses_new_arms_and_keeps_every_stored_one():
    """--resume trains more seeds of the stored arms: an --arm / --mixture / --from arm the study does not
    have is refused by name (it used to be dropped without a word), a stored arm the command does not name
    again is rebuilt from the stored mixture (it used to get no new seeds), a changed mixture is refused."""
    from mixopt.analysis.transfer import _arms_doc, _refuse_new_arms, _resumed_arms
    from mixopt.core.mixture import Mixture, MixtureSpace

    space = MixtureSpace(("a", "b"), (0.0, 0.0), (1.0, 1.0))
    arm = lambda p: {"mixture": Mixture({"a": p, "b": 1 - p}), "proxy": None, "from": "x"}  # noqa: E731
    stored = _arms_doc({"recommended": arm(0.3), "uniform": arm(0.5), "mine": arm(0.9)})
    with pytest.raises(UserError, match=r"--arm new:m.yaml: study 't' has no such arm \(its arms: recommended, "
                                        r"uniform, mine\).*--name"):
        _refuse_new_arms(stored, {"mine": "--arm mine:m.yaml", "new": "--arm new:m.yaml"}, "t")
    _refuse_new_arms(stored, {"mine": "--arm mine:m.yaml"}, "t")        # named again: fine
    _refuse_new_arms({}, {"new": "--arm new:m.yaml"}, "t")              # stored before arms were kept
    out = _resumed_arms(stored, {"recommended": arm(0.3), "uniform": arm(0.5), "best-trial": arm(0.7)}, space, "t")
    assert list(out) == ["recommended", "uniform", "mine"]                # best-trial: not the study's
    assert out["mine"]["mixture"].as_array(("a", "b")).tolist() == pytest.approx([0.9, 0.1])
    with pytest.raises(UserError, match="arm 'recommended' is now another mixture"):
        _resumed_arms(stored, {"recommended": arm(0.4)}, space, "t")


def test_parse_rung():
    base = ProxySpec(preset="dense-0.1m", tokens=100_000, lr=0.01)
    r = parse_rung("dense-3k:320_000", base)
    assert (r.preset, r.tokens, r.lr) == ("dense-3k", 320_000, 0.01)
    for bad in ("dense-3k", "dense-3k:", ":1000", "dense-3k:abc", "dense-3k:-5"):
        with pytest.raises(UserError, match="PRESET:TOKENS"):
            parse_rung(bad, base)
    with pytest.raises(UserError, match="unknown preset 'dense-7k'"):
        parse_rung("dense-7k:1000", base)


@pytest.mark.slow
def test_transfer_arms_paired_and_predicted(tmp_path, capsys):
    domains = write_domains(tmp_path / "domains", ("code", "legal", "prose", "math"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = study_yaml(tmp_path / "s.yaml", domains, tmp_path / "cache", uri, tmp_path / "out",
                     proxy={"preset": "dense-3k", "tokens": 4096, "seq_len": 32, "batch_size": 8, "lr": 0.01,
                            "evals": 1},
                     objective={"target": "math"}, search={"searcher": "regmix", "n_init": 4, "options": {}},
                     budget={"trials": 6})
    assert main(["run", str(cfg)]) == 0
    assert main(["run", str(cfg), "--study", "tiny-rand", "--search.searcher=random"]) == 0
    capsys.readouterr()
    rungs = ["dense-3k:4096", "dense-3k:8192", "dense-6k:4096", "dense-6k:8192", "dense-14k:8192"]
    argv = ["transfer", str(cfg), "--from", "tiny-rand", "--seeds", "2", "--preset", "dense-37k", "--tokens", "16384"]
    assert main([*argv, *[f"--rung={r}" for r in rungs]]) == 0
    out = capsys.readouterr().out
    assert "paired differences" in out and "regmix-uniform" in out and "scaling fit on" in out
    doc = json.loads((tmp_path / "out" / "tiny-transfer" / "transfer.json").read_text())
    arms = set(doc["stats"])
    assert {"regmix", "random", "uniform", "natural"} <= arms and all(st["n"] == 2 for st in doc["stats"].values())
    # the best proxy trial's mixture is an arm of its own, or said to be a recommendation's (trained once)
    twins = [lab for lab, st in doc["stats"].items() if st.get("same_as", "").startswith("best-trial")]
    assert ("best-trial" in arms) + len(twins) == 1 and arms - {"best-trial"} == {"regmix", "random", "uniform", "natural"}
    assert set(doc["stats"]["regmix"]["values"]) == {"0", "1"}  # seeds (JSON keys)
    assert doc["spec"]["preset"] == "dense-37k" and doc["params_ratio"] > 10
    best = doc["stats"]["best-trial"]["from"] if "best-trial" in arms else doc["stats"][twins[0]]["same_as"]
    assert "tiny" in best and "trial" in best
    # the held-out target domain gets no weight in any arm
    assert all(st["mixture"].get("math", 0) == 0 for st in doc["stats"].values())
    for k in ("regmix-uniform", "regmix-natural", "random-uniform", "random-natural"):
        d = doc["diffs"][k]
        assert d["n"] == 2 and math.isfinite(d["diff"]) and 0 <= d["p"] <= 1
    fit = doc["scaling_fit"]
    assert fit["runs"] == len(rungs) * len(arms) and set(fit["predicted"]) == arms
    assert 1e-3 <= fit["alpha"] <= 3 and isinstance(fit["alpha_on_bound"], bool)
    for lab, st in doc["stats"].items():
        assert st["predicted"] == pytest.approx(fit["predicted"][lab])
        assert st["predicted_rel_error"] == pytest.approx((st["predicted"] - st["mean"]) / st["mean"])
    # the target runs are not in the fit: 5 rungs x 5 arms at seed 0, targets at seeds 0 and 1
    import mixopt

    t = mixopt.load_study("tiny-transfer", uri)
    assert len(t.trials) == len(arms) * (2 + len(rungs)) and all(x.ok for x in t.trials)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("tiny-transfer")
    [rep] = client.search_runs([exp.experiment_id], "tags.`mixopt.role` = 'transfer'")
    assert "regmix-uniform.diff" in rep.data.metrics and "regmix.predicted" in rep.data.metrics
    assert (tmp_path / "out" / "tiny-transfer" / "transfer.png").stat().st_size > 0

    # bad input: one line, exit 2, nothing trained
    for bad, needle in ((["--rung", "dense-37k:16384"], "not smaller than the target"),
                        (["--rung", "dense-3k:4096", "--rung", "dense-3k:4096"], "given twice"),
                        (["--from", "nope"], "--from nope: no such study"),
                        (["--rung", "oops"], "PRESET:TOKENS"),
                        (["--name", "tiny-rand"], "that is a source study"),
                        (["--name", "a/b"], "transfer --name: 'a/b'")):
        assert main(["transfer", str(cfg), "--study", "tiny-rand", *bad]) == 2
        assert needle in capsys.readouterr().err
    from mixopt.study import get_storage

    assert get_storage(uri).load_meta("tiny-rand-transfer") is None
    assert main([*argv, *[f"--rung={r}" for r in rungs]]) == 2  # exists: --resume to continue
    # --resume with more seeds trains each arm at the new seed only (no proposals of the study's searcher)
    assert main([*argv, "--seeds", "3", "--resume", *[f"--rung={r}" for r in rungs]]) == 0
    doc = json.loads((tmp_path / "out" / "tiny-transfer" / "transfer.json").read_text())
    assert all(st["n"] == 3 for st in doc["stats"].values())
    t = mixopt.load_study("tiny-transfer", uri)
    assert len(t.trials) == len(arms) * (3 + len(rungs)) and {x.phase for x in t.trials} == {"enqueued"}
    # a new arm on --resume: refused by name, nothing trained
    (tmp_path / "mine.yaml").write_text(json.dumps({"mixture": doc["stats"]["uniform"]["mixture"]}))
    assert main([*argv, "--seeds", "3", "--resume", f"--arm=mine:{tmp_path / 'mine.yaml'}",
                 *[f"--rung={r}" for r in rungs]]) == 2
    assert "has no such arm" in capsys.readouterr().err
    assert len(mixopt.load_study("tiny-transfer", uri).trials) == len(t.trials)
