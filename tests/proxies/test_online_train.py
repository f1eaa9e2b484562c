"""Online mixing in the engine: each pack member with its own mixer (static, aioli, doremi)."""

import importlib.util
import json
from pathlib import Path

import pytest

from mixopt.core.spec import ProxySpec
from mixopt.core.worker import TrialResult
from mixopt.proxies.pack_train import run_pack


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_online_helpers_{name}", Path(__file__).with_name(f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_train = _load("test_train")
corpus_dir = _train.corpus_dir  # tiny corpus: cycle, noise, held, empty
MIX = {"cycle": 0.5, "noise": 0.3, "held": 0.2}
AIOLI = {"update_steps": 20, "lp_rounds": 1, "lp_steps": 2, "eta": 0.5}


def req(corpus_dir, i, online="", **opts):
    spec = ProxySpec(preset="dense-0.1m", tokens=8 * 16 * 60, seq_len=16, batch_size=8, lr=1e-2, eval_batches=2,
                     evals=2, online=online, online_options=opts)
    return {"trial_id": i, "mixture": MIX, "spec": spec.to_dict(), "corpus_dir": str(corpus_dir),
            "eval_domains": ["cycle", "noise", "held"], "num_threads": 1, "device": "cpu"}


def test_members_mix_online_each_with_its_own_mixer(corpus_dir):
    ref = {"cycle": 1.0, "noise": 3.3, "held": 2.0}
    out = run_pack([req(corpus_dir, 0), req(corpus_dir, 1, "static"), req(corpus_dir, 2, "aioli", **AIOLI),
                    req(corpus_dir, 3, "doremi", reference=ref)])
    assert all(isinstance(o, TrialResult) for o in out), out
    plain, static, aioli, doremi = out
    assert static.losses == plain.losses  # a static mixer is the fixed mixture, draw for draw
    assert static.metrics["online_evals"] == 0 and not any("weights" in h for h in static.history[1:])
    traj = [h for h in aioli.history if "weights" in h]
    assert aioli.metrics["online_evals"] > 0 and aioli.metrics["online_learn_steps"] > 0
    assert len(traj) >= 2 and traj[-1]["weights"] != MIX  # Aioli moved off the start
    assert aioli.metrics["online_seconds"] > 0 and abs(sum(traj[-1]["weights"].values()) - 1) < 1e-9
    assert abs(sum(aioli.metrics[f"online_average.{d}"] for d in MIX) - 1) < 1e-6
    dtraj = [h for h in doremi.history if "weights" in h]  # DoReMi: reweighted loss, per-domain batch reports
    assert len(dtraj) > 10 and doremi.metrics["online_updates"] == 60
    w = dtraj[-1]["weights"]
    assert w["noise"] > w["cycle"]  # far above its reference loss on noise: noise gains weight
    assert doremi.losses != plain.losses
    json.dumps(doremi.to_dict())  # the trajectory is plain data


def test_bad_online_config_is_refused_before_training(tmp_path, tiny_domains):
    from mixopt.cli import main
    from tests.conftest import study_yaml

    cfg = study_yaml(tmp_path / "s.yaml", tiny_domains, tmp_path / "cache", f"sqlite:///{tmp_path}/m.db",
                     tmp_path / "out", proxy={"online": "doremi"})
    assert main(["run", str(cfg)]) == 2
    cfg = study_yaml(tmp_path / "s.yaml", tiny_domains, tmp_path / "cache", f"sqlite:///{tmp_path}/m.db",
                     tmp_path / "out", proxy={"online": "aioli", "online_options": {"eta": -1}})
    assert main(["run", str(cfg)]) == 2
    for bad in ({"eval_sequences": 0}, {"eval_sequences": 2.5}, {"eval_sequences": 4, "eval_batches": 1},
                {"eval_batches": 10_000}):  # the last: more than the trials' fixed validation sequences
        cfg = study_yaml(tmp_path / "s.yaml", tiny_domains, tmp_path / "cache", f"sqlite:///{tmp_path}/m.db",
                         tmp_path / "out", proxy={"online": "aioli", "online_options": bad})
        assert main(["run", str(cfg)]) == 2, bad
    assert not (tmp_path / "m.db").exists()


def test_online_evaluations_score_the_first_fixed_sequences(corpus_dir, monkeypatch):
    """Default 8 sequences per domain (the proxy's batch here is 8); eval_sequences / eval_batches set it; the
    sequences are the first of the trials' own fixed validation batches."""
    import torch

    from mixopt.data.corpus import Corpus
    from mixopt.proxies import pack_train
    from mixopt.proxies.train import eval_batches

    seen = []
    real = pack_train.PackTrainer.evaluate_sequences

    def spy(self, batches):
        seen.append({d: b.clone() for d, b in batches.items()})
        return real(self, batches)

    monkeypatch.setattr(pack_train.PackTrainer, "evaluate_sequences", spy)
    for opts, n in (({}, 8), ({"eval_sequences": 3}, 3), ({"eval_sequences": 12}, 12), ({"eval_batches": 2}, 16)):
        seen.clear()
        (out,) = run_pack([req(corpus_dir, 0, "aioli", **AIOLI, **opts)])
        assert out.metrics["online_evals"] == len(seen) > 0, opts
        fixed = eval_batches(Corpus.open(corpus_dir), "cycle", 2, 8, 16).reshape(16, 17)
        assert seen[0]["cycle"].shape == (n, 17) and torch.equal(seen[0]["cycle"], fixed[:n]), opts
    # members of one pack asking for different counts each get the means over their own sequences: the same
    # trajectory as alone
    (alone,) = run_pack([req(corpus_dir, 0, "aioli", **AIOLI, eval_sequences=2)])
    packed, _ = run_pack([req(corpus_dir, 0, "aioli", **AIOLI, eval_sequences=2),
                          req(corpus_dir, 1, "aioli", **AIOLI, eval_sequences=16)])
    assert packed.losses == pytest.approx(alone.losses, abs=1e-5)
    assert [h for h in packed.history if "weights" in h] == [h for h in alone.history if "weights" in h]


def test_a_diverging_online_member_leaves_the_pack_alone(corpus_dir, monkeypatch):
    """NaN losses of one member (its evaluation reaches its mixer first) fail that trial only; a member whose
    mixer cannot be built (DoReMi without a reference) fails with the reason; the others finish."""
    import torch

    from mixopt.core.worker import TrialFailure
    from mixopt.proxies import pack as pack_mod

    real = pack_mod.build_model

    def poisoned(spec, vocab):
        m = real(spec, vocab)
        if spec.seed == 13:
            with torch.no_grad():
                m.wpe.weight[3, 0] = float("nan")
        return m

    monkeypatch.setattr(pack_mod, "build_model", poisoned)
    bad = req(corpus_dir, 0, "aioli", **AIOLI)
    bad["spec"] = {**bad["spec"], "seed": 13}
    no_ref = req(corpus_dir, 2, "doremi")
    out = run_pack([bad, req(corpus_dir, 1, "aioli", **AIOLI), no_ref, req(corpus_dir, 3)])
    assert isinstance(out[0], TrialFailure) and out[0].kind == "diverged", out[0]
    assert isinstance(out[2], TrialFailure) and "reference" in out[2].reason
    assert isinstance(out[1], TrialResult) and isinstance(out[3], TrialResult)


def test_evaluation_time_is_counted_once(corpus_dir, monkeypatch):
    """online_seconds = the mixer's bookkeeping + its evaluations, each second counted once (the evaluations
    were charged twice, to both terms)."""
    import time

    from mixopt.proxies import pack_train

    real = pack_train.PackTrainer.evaluate_sequences

    def slow(self, batches):
        time.sleep(0.05)  # evaluations dominate: bookkeeping is far below this
        return real(self, batches)

    monkeypatch.setattr(pack_train.PackTrainer, "evaluate_sequences", slow)
    (aioli,) = run_pack([req(corpus_dir, 0, "aioli", **AIOLI)])
    m = aioli.metrics
    assert m["online_evals"] >= 4 and m["online_eval_seconds"] >= 0.05 * m["online_evals"]
    assert m["online_eval_seconds"] <= m["online_seconds"] < 1.5 * m["online_eval_seconds"], m
