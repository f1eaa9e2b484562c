"""``mixopt hparams-sweep`` on a tiny corpus: the grid through the engine, its runs table and fit, and
``lr: auto`` / ``batch_size: auto`` of another study taking the swept law (``hparams: {study: ...}``)."""

import json
import math

import pandas as pd
import pytest
import yaml

from mixopt.analysis.autohp import resolve_config
from mixopt.analysis.hparams import fit_hparams
from mixopt.analysis.hparams_sweep import sweep_specs
from mixopt.cli import main
from mixopt.core.errors import ConfigError, UserError
from mixopt.core.spec import ProxySpec
from mixopt.run.config import load_config
from mixopt.study import get_storage, load_study
from tests.conftest import study_yaml, write_domains


def _yaml(tmp_path, tiny_domains):
    return study_yaml(tmp_path / "s.yaml", tiny_domains, tmp_path / "cache", f"sqlite:///{tmp_path}/m.db",
                               tmp_path / "out", proxy={"seq_len": 32, "eval_batches": 1, "evals": 1},
                               executor={"kind": "local", "pack_size": 2})


SWEEP = ["--presets", "dense-3k,dense-6k", "--lrs", "0.01,0.04", "--batches", "2,4", "--tokens", "1024"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    cfg = _yaml(tmp, write_domains(tmp / "domains"))
    code = main(["hparams-sweep", str(cfg), *SWEEP, "--bootstrap", "5", "--json"])
    return tmp, cfg, code


def test_sweep_trains_the_grid_as_a_study_and_fits_the_law(swept, capsys):
    tmp, cfg, code = swept
    assert code == 0
    study = load_study("tiny-hparams", get_storage(f"sqlite:///{tmp}/m.db"))
    specs = [t.spec for t in study.trials]
    assert len(specs) == 8 and all(t.ok for t in study.trials)
    assert {(s.preset, s.lr, s.batch_size) for s in specs} == {(p, lr, b) for p in ("dense-3k", "dense-6k")
                                                               for lr in (0.01, 0.04) for b in (2, 4)}
    assert {t.metrics["tokens"] for t in study.trials} == {1024}  # one D per size, whatever the batch
    assert {t.metrics["pack_size"] for t in study.trials} == {2}  # members differing in lr share a pack
    runs = pd.read_csv(tmp / "out" / "tiny-hparams" / "hparams_runs.csv")
    assert list(runs.columns[:5]) == ["N", "D", "lr", "batch_tokens", "loss"] and len(runs) == 8
    assert sorted(runs["batch_tokens"].unique()) == [64, 128]
    doc = json.loads((tmp / "out" / "tiny-hparams" / "hparams_sweep.json").read_text())
    assert [g["preset"] for g in doc["grid"]] == ["dense-3k", "dense-6k"]
    for g in doc["grid"]:  # the best point is the grid's minimum
        assert g["best"]["loss"] == min(c["loss"] for c in g["grid"])
    fit = fit_hparams(runs, bootstrap=0)
    assert doc["fit"]["lr"]["n_exp"] == pytest.approx(fit.lr.n_exp)
    fits = [r for r in study.storage.runs("tiny-hparams", "fit") if r["tags"].get("mixopt.fit") == "hparams"]
    assert len(fits) == 1  # logged with the sweep study: `mixopt fit --kind hparams` on it


def test_auto_takes_the_swept_law(swept):
    tmp, cfg, _ = swept
    c = load_config(cfg, ["--study=user", "--proxy.lr=auto", "--proxy.batch_size=auto", "--proxy.preset=dense-14k",
                          "--proxy.tokens=4096", "--hparams.study=tiny-hparams"])
    assert sorted(c.hparams.auto) == ["proxy.batch_size", "proxy.lr"]
    r = resolve_config(c)
    fit = fit_hparams(pd.read_csv(tmp / "out" / "tiny-hparams" / "hparams_runs.csv"), bootstrap=0)
    want = fit.predict(r.proxy.non_embedding_params(), 4096, seq_len=32)
    assert r.proxy.lr == float(f"{want.lr:.4g}") and r.proxy.batch_size == max(1, round(want.batch_tokens / 32))
    assert r.hparams.resolved == {"proxy.lr": r.proxy.lr, "proxy.batch_size": r.proxy.batch_size}
    assert "fitted to study 'tiny-hparams'" in r.hparams.source


def test_a_law_swept_in_another_parametrization_is_refused(swept):
    tmp, cfg, _ = swept  # the sweep is standard: its best lr says nothing of a muP proxy's (or another alpha's)
    c = load_config(cfg, ["--study=user", "--proxy.lr=auto", "--proxy.preset=dense-14k", "--proxy.tokens=4096",
                          "--hparams.study=tiny-hparams", "--proxy.parametrization=mup"])
    with pytest.raises(ConfigError, match=r"proxy.lr: auto from Step-Law forms fitted to study 'tiny-hparams', whose "
                                          r"runs are parametrization standard, but this proxy is mup, alpha 4;"):
        resolve_config(c)


def test_the_studys_own_fit_run_is_its_law(swept):
    tmp, cfg, _ = swept  # the sweep study has a fit run: a config naming that study resolves from it
    c = resolve_config(load_config(cfg, ["--study=tiny-hparams", "--proxy.lr=auto"]))
    assert "fitted to study 'tiny-hparams'" in c.hparams.source
    pub = resolve_config(load_config(cfg, ["--study=tiny-hparams", "--proxy.lr=auto", "--hparams.law=published"]))
    assert pub.hparams.source.startswith("published Step Law") and pub.proxy.lr != c.proxy.lr


def test_sweep_specs_round_tokens_to_whole_steps_at_every_batch():
    base = ProxySpec(preset="dense-3k", seq_len=128, batch_size=16, tokens=320000)
    specs = sweep_specs(base, ["dense-3k", "dense-37k"], [0.01, 0.02], [8, 16, 32], tokens_per_param=100)
    assert len(specs) == 12
    by = {s.preset: s.tokens for _, s in specs}
    assert by["dense-3k"] == 311296 and by["dense-3k"] % (32 * 128) == 0  # 100 x 3,120 params, whole steps
    assert by["dense-37k"] == math.floor(100 * base.with_preset("dense-37k").non_embedding_params() / 4096) * 4096


@pytest.mark.parametrize("args, needle", [
    (["--presets", "dense-3k,nope"], "--presets nope: "),
    (["--lrs", "0.01,-1"], "--lrs: '-1' must be > 0"),
    (["--batches", "2,x"], "--batches: 'x' is not an integer"),
    (["--tokens", "10"], "--tokens: 10 tokens for dense-3k is less than one step"),
])
def test_bad_sweep_input_is_one_line_exit_2_nothing_written(tmp_path, tiny_domains, capsys, args, needle):
    cfg = _yaml(tmp_path, tiny_domains)
    flags = dict(zip(SWEEP[::2], SWEEP[1::2])) | dict(zip(args[::2], args[1::2]))
    assert main(["hparams-sweep", str(cfg), *[x for kv in flags.items() for x in kv]]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "m.db").exists() and not (tmp_path / "out").exists()


def test_unresolved_auto_is_refused_before_anything_is_written(tmp_path, tiny_domains):
    from mixopt.run.loop import run

    cfg = load_config(_yaml(tmp_path, tiny_domains), ["--proxy.lr=auto"])
    with pytest.raises(UserError, match="proxy.lr: auto is not resolved"):
        run(cfg)
    assert not (tmp_path / "m.db").exists()
    assert yaml.safe_load(_yaml(tmp_path, tiny_domains).read_text())["proxy"].get("lr") is None


def test_resume_grows_the_grid_and_trains_only_the_new_points(tmp_path, tiny_domains, capsys):
    cfg = _yaml(tmp_path, tiny_domains)
    small = ["--presets", "dense-3k", "--lrs", "0.01", "--batches", "4", "--tokens", "1024", "--no-fit"]
    assert main(["hparams-sweep", str(cfg), *small]) == 0
    study = load_study("tiny-hparams", get_storage(f"sqlite:///{tmp_path}/m.db"))
    [first] = study.trials
    grown = ["--presets", "dense-3k", "--lrs", "0.01,0.02", "--batches", "2,4", "--tokens", "1024", "--no-fit"]
    assert main(["hparams-sweep", str(cfg), *grown, "--resume"]) == 0
    assert "the grid grew by 3 point(s)" in capsys.readouterr().err
    study = load_study("tiny-hparams", get_storage(f"sqlite:///{tmp_path}/m.db"))
    assert len(study.trials) == 4 and all(t.ok for t in study.trials)
    assert study.trials[0].run_id == first.run_id  # kept, not retrained
    assert {(t.spec.lr, t.spec.batch_size) for t in study.trials} == {(0.01, 2), (0.01, 4), (0.02, 2), (0.02, 4)}
    assert main(["hparams-sweep", str(cfg), *grown, "--resume"]) == 0  # complete: nothing more to train
    assert len(load_study("tiny-hparams", get_storage(f"sqlite:///{tmp_path}/m.db")).trials) == 4
    assert "the grid grew" not in capsys.readouterr().err
    # a grid that drops a point of the stored one, or changes a budget, is refused in one line, exit 2
    for flags, needle in [(["--lrs", "0.02"], "holds dense-3k lr=0.01 B=4 seed=0 which the new grid lacks"),
                          (["--tokens", "2048"], "holds dense-3k lr=0.01 B=4 seed=0 at 1,024 tokens, the new grid at "
                                                 "2,048"),
                          (["--mixture", "uniform"], "was trained on the natural mixture, not uniform")]:
        f = dict(zip(grown[:-1:2], grown[1:-1:2])) | dict(zip(flags[::2], flags[1::2]))
        assert main(["hparams-sweep", str(cfg), *[x for kv in f.items() for x in kv], "--no-fit", "--resume"]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1, err
    assert len(load_study("tiny-hparams", get_storage(f"sqlite:///{tmp_path}/m.db")).trials) == 4


def test_auto_fits_the_sweep_the_way_its_last_fit_run_did(swept):
    # a `fit --kind hparams --optimum surface` run on the sweep study: `auto` reads the law that way too (this
    # tiny grid has 2 lrs and 2 batch sizes, too few for a surface: the refusal shows the option was read)
    tmp, cfg, _ = swept
    store = get_storage(f"sqlite:///{tmp}/m.db")
    assert main(["fit", str(cfg), "--study", "tiny-hparams", "--kind", "hparams", "--optimum", "surface"]) == 2
    store.log_run("tiny-hparams", "fit-hparams", "fit", {"tolerance": 0.0025, "optimum": "surface"}, {},
                  {"mixopt.fit": "hparams"}, [])
    c = load_config(cfg, ["--study=user", "--proxy.lr=auto", "--hparams.study=tiny-hparams"])
    with pytest.raises(ConfigError, match="hparams.study: .*optimum surface needs 3 or more learning rates"):
        resolve_config(c)


def test_resume_does_not_retrain_a_failed_point(tmp_path, tiny_domains, capsys):
    # a diverged grid point stays FAILED: resuming the same grid trains nothing and reports no growth
    from mixopt.core.trial import TrialState

    cfg = _yaml(tmp_path, tiny_domains)
    small = ["--presets", "dense-3k", "--lrs", "0.01,0.02", "--batches", "4", "--tokens", "1024", "--no-fit"]
    assert main(["hparams-sweep", str(cfg), *small]) == 0
    store = get_storage(f"sqlite:///{tmp_path}/m.db")
    t = load_study("tiny-hparams", store).trials[1]
    store.update_trial("tiny-hparams", t.with_(state=TrialState.FAILED, value=None, error="diverged"))
    capsys.readouterr()
    assert main(["hparams-sweep", str(cfg), *small, "--resume"]) == 0
    assert "the grid grew" not in capsys.readouterr().err
    study = load_study("tiny-hparams", store)
    assert [x.state for x in study.trials] == [TrialState.COMPLETE, TrialState.FAILED]


def test_a_best_point_on_the_grids_edge_is_flagged():
    from mixopt.analysis.hparams_sweep import format_sweep, grid_doc

    rows = [{"N": 3e3, "D": 3e5, "lr": lr, "batch_tokens": 128.0 * b, "loss": 5.0 + abs(lr - 0.02) + 0.01 * b,
             "preset": "dense-3k", "batch_size": b, "seed": 0} for lr in (0.01, 0.02, 0.04) for b in (4, 8, 16)]
    [g] = grid_doc(pd.DataFrame(rows))
    assert (g["best"]["lr"], g["best"]["batch_size"]) == (0.02, 4) and g["edges"] == ["lowest batch"]
    text = format_sweep({"study": "s", "runs": 9, "failed": 0, "objective": "o", "grid": [g], "fit": None})
    assert "note: the best point is at the grid's lowest batch: the optimum may lie beyond it" in text
    inside = [r for r in rows if r["batch_size"] != 16] + [{**r, "batch_size": 2, "batch_tokens": 256.0,
                                                           "loss": r["loss"] + 0.1} for r in rows if r["batch_size"] == 4]
    assert grid_doc(pd.DataFrame(inside))[0]["edges"] == []
