"""`mixopt merge-check`: random mixtures trained for real beside their merged scores, per seed fraction and
merge scale, with RegMix on the same compute; resumable; bad arguments refused with exit 2."""

import json
import math

import pytest
from scipy.stats import spearmanr

import mixopt
from mixopt.cli import main
from tests.conftest import study_yaml, write_domains


def test_merge_check_reports_rank_correlation_per_scale(tmp_path, capsys):
    domains = write_domains(tmp_path / "domains", ("code", "legal", "prose", "math"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = study_yaml(tmp_path / "study.yaml", domains, tmp_path / "cache", uri, tmp_path / "out",
                     objective={"target": "math"})
    args = ["merge-check", str(cfg), "--mixtures", "6", "--scale", "1", "--scale", "1.5", "--resamples", "2"]
    assert main([*args, "--json"]) == 0
    out = capsys.readouterr()
    doc = json.loads(out.out)
    assert doc["target"] == "math" and doc["mixtures"] == 6
    # the default seed fraction is `auto`: half of this tiny proxy's 32 steps (too few for a later hand-off)
    assert [(r["seed_fraction"], r["scale"]) for r in doc["rows"]] == [(0.5, 1.0), (0.5, 1.5)]
    for r in doc["rows"]:
        assert r["n_trained"] == 6 and r["experts_proxies_worth"] == 0.5 + 3 * 0.5  # 3 training domains
        for key in ("mean", "target"):
            assert -1 <= r[key]["spearman"] <= 1 and -1 <= r[key]["pearson"] <= 1 and r[key]["noise"] >= 0
    # the two scales merge the same experts differently, and RegMix had as many proxies as the merge's compute
    assert doc["rows"][0]["mean"]["pearson"] != doc["rows"][1]["mean"]["pearson"]
    reg = doc["regmix"]["dense-0.1m"]
    assert reg["n_train"] == max(4, round(2.0 + 6 * doc["rows"][0]["score_proxies_worth"]))
    assert not math.isnan(reg["mean"]["spearman"])
    assert "Merged vs trained on 6 random mixtures" in out.err and "RegMix regression (dense-0.1m)" in out.err
    (best,) = doc["best_scale"]
    assert best["preset"] == "dense-0.1m" and {best[k]["scale"] for k in ("mean", "target", "both")} <= {1.0, 1.5}
    assert "best scale (dense-0.1m, s=0.50, power 0.5): mean " in out.err  # merge.power's default
    # the zero-compute reference: the trained objective ranked by the mixtures' entropy alone
    checks = [t for t in mixopt.load_study("tiny-merge-check", uri).trials if t.label.startswith("check")]
    ent = [-sum(w * math.log(w) for w in t.mixture.to_dict().values() if w > 0) for t in checks]
    tgt_loss = [t.losses["math"] for t in checks]
    assert doc["entropy"]["dense-0.1m"]["target"]["spearman"] == pytest.approx(spearmanr([-h for h in ent],
                                                                                          tgt_loss).statistic)
    assert "The mixtures' entropy alone (dense-0.1m, no compute)" in out.err
    report = json.loads((tmp_path / "out" / "tiny-merge-check" / "merge_check.json").read_text())
    assert report["rows"] == doc["rows"]

    # the check is a study of its own: again without --resume is refused; with it, nothing is trained again
    assert main(args) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main([*args, "--resume", "--debias", "--json"]) == 0  # --debias: a second row per scale, same experts
    out = capsys.readouterr()
    assert "training the seed" not in out.err
    rows = json.loads(out.out)["rows"]
    assert [(r["scale"], r["debias"]) for r in rows] == [(1.0, False), (1.5, False), (1.0, True), (1.5, True)]
    assert rows[0]["mean"] == doc["rows"][0]["mean"] and rows[2]["mean"]["pearson"] != rows[0]["mean"]["pearson"]
    # --ceiling added on resume: the 6 mixtures trained again with the next proxy seed, the rest reused
    assert main([*args, "--resume", "--ceiling", "--json"]) == 0
    out = capsys.readouterr()
    ceil = json.loads(out.out)["ceiling"]["dense-0.1m"]
    assert (ceil["seed"], ceil["other_seed"]) == (0, 1) and -1 <= ceil["mean"]["spearman"] <= 1
    assert all(-1 <= r[k]["spearman_both"] <= 1 for r in json.loads(out.out)["rows"] for k in ("mean", "target"))
    trials = mixopt.load_study("tiny-merge-check", uri).trials
    again = [t for t in trials if t.label.startswith("again")]
    assert len(again) == 6 and all(t.ok and t.spec.seed == 1 for t in again) and len(trials) == 6 + 6 + reg["n_train"]
    assert "vs trained again (seed 1)" in out.err and "(6 to train now;" in out.err
    # --branch: the 6 mixtures also trained as branches of the seed (its last half of the schedule), on resume
    assert main([*args, "--resume", "--branch", "--json"]) == 0
    out = capsys.readouterr()
    (br,) = json.loads(out.out)["branch"]
    assert (br["preset"], br["seed_fraction"], br["proxies_worth"], br["n"]) == ("dense-0.1m", 0.5, 0.5, 6)
    assert -1 <= br["mean"]["spearman"] <= 1 and -1 <= br["target"]["spearman"] <= 1
    assert all(-1 <= r[k]["spearman_branch"] <= 1 for r in json.loads(out.out)["rows"] for k in ("mean", "target"))
    branched = [t for t in mixopt.load_study("tiny-merge-check", uri).trials if t.label.startswith("branch-s0.5-")]
    assert len(branched) == 6 and {t.metrics["branch_start_step"] for t in branched} == {16}
    assert "Branches (dense-0.1m, s=0.50" in out.err and "merged (scale 1.50, power 0.5) vs those branches" in out.err
    # --power: every scale with the mixtures' own weights (1) and flattened (w ** 0.5), the same experts
    assert main([*args, "--resume", "--power", "1", "--power", "0.5", "--json"]) == 0
    out = capsys.readouterr()
    rows = json.loads(out.out)["rows"]
    assert [(r["power"], r["scale"]) for r in rows] == [(1.0, 1.0), (1.0, 1.5), (0.5, 1.0), (0.5, 1.5)]
    assert rows[2]["mean"]["pearson"] == doc["rows"][0]["mean"]["pearson"]  # the default's rows again
    assert rows[2]["mean"]["pearson"] != rows[0]["mean"]["pearson"] and "training the seed" not in out.err
    assert [b["power"] for b in json.loads(out.out)["best_scale"]] == [1.0, 0.5]
    assert "best scale (dense-0.1m, s=0.50): mean " in out.err and "s=0.50, power 0.5): mean " in out.err
    for bad, needle in ((["--mixtures", "3"], "--mixtures: 3 must be >= 4"), (["--scale", "0"], "--scale: 0.0"),
                        (["--power", "0"], "--power: 0.0 must be a number in (0, 2]"),
                        (["--seed-fraction", "1"], "--seed-fraction: 1.0; allowed: auto or a number in (0, 1)"),
                        (["--seed-fraction", "half"], "'half': allowed: auto or a number in (0, 1)"),
                        (["--target", "nope"], "'nope' is not a corpus domain")):
        assert main(["merge-check", str(cfg), "--name", "other", *bad]) == 2
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err, err


def test_best_scales_per_objective_and_worst_case():
    from mixopt.analysis.merge_check import best_scales, format_check

    def row(scale, mean, target, preset="p", s=0.5, debias=False):
        return {"preset": preset, "seed_fraction": s, "scale": scale, "debias": debias,
                "mean": {"spearman": mean}, "target": {"spearman": target}}

    rows = [row(1.0, 0.56, 0.78), row(1.25, 0.72, 0.81), row(2.0, 0.84, 0.52), row(3.0, float("nan"), 0.9),
            row(1.0, 0.99, 0.99, debias=True),       # debiased rows are not plain scales: left out
            row(1.0, 0.5, 0.5, s=0.25)]              # one scale only at s = 0.25: nothing to choose
    (b,) = best_scales(rows)
    assert (b["preset"], b["seed_fraction"]) == ("p", 0.5)
    assert b["mean"] == {"scale": 2.0, "spearman": 0.84} and b["target"] == {"scale": 3.0, "spearman": 0.9}
    assert b["both"] == {"scale": 1.25, "spearman": 0.72}   # max over scales of min(mean, target); nan never wins
    text = format_check({"mixtures": 4, "target": "t", "rows": [], "regmix": {}, "best_scale": [b]})
    assert ("best scale (p, s=0.50): mean 2 (rho 0.840), target 3 (rho 0.900), "
            "the smaller of the two 1.25 (rho 0.720)") in text
