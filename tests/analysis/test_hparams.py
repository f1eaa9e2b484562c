"""Step Law: the published constants reproduced, fits recovering known power laws, CLI errors."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from mixopt.analysis.hparams import (
    STEP_LAW_BATCH,
    STEP_LAW_LR,
    fit_hparams,
    moe_hparams,
    published_hparams,
    table_from_trials,
)
from mixopt.cli import main
from mixopt.core.errors import RunsTableError, UserError
from mixopt.core.mixture import Mixture
from mixopt.core.spec import ProxySpec
from mixopt.core.trial import Trial, TrialState

TRUE = {"c": math.log(3.0), "a": -0.6, "b": 0.25, "cB": math.log(0.5), "g": 0.55}


def sweep(Ns=(1e6, 3e6, 1e7, 3e7), Ds=(1e8, 3e8, 1e9), d_of_n=None, b=TRUE["b"], noise=2e-4, seed=0):
    """An lr x batch grid at every (N, D): loss is a convex bowl in (log lr, log batch) around the true
    optimum lr* = 3 N^-0.6 D^b, batch* = 0.5 D^0.55, plus noise."""
    rng = np.random.default_rng(seed)
    lrs, bss = 2.0 ** np.arange(-16, -2, 0.25), 2.0 ** np.arange(10, 22, 0.25)
    pairs = [(n, d_of_n(n)) for n in Ns] if d_of_n else [(n, d) for n in Ns for d in Ds]
    rows = []
    for N, D in pairs:
        lr0 = math.exp(TRUE["c"]) * N ** TRUE["a"] * D ** b
        bs0 = math.exp(TRUE["cB"]) * D ** TRUE["g"]
        for lr in lrs[np.abs(np.log(lrs / lr0)) < 1.5]:
            for bs in bss[np.abs(np.log(bss / bs0)) < 1.5]:
                loss = (2.0 + 50 * N ** -0.3) * (1 + 0.01 * math.log(lr / lr0) ** 2 + 0.005 * math.log(bs / bs0) ** 2)
                rows.append((N, D, lr, bs, loss + rng.normal(0, noise)))
    return pd.DataFrame(rows, columns=["N", "D", "lr", "batch_tokens", "loss"])


# --- the published law -------------------------------------------------------------------------
def test_published_constants_are_the_papers_rounded_law():
    # arXiv 2503.04715: lr = 1.79 N^-0.713 D^0.307, B = 0.58 D^0.571
    assert round(math.exp(STEP_LAW_LR[0]), 2) == 1.80 and round(STEP_LAW_LR[1], 3) == -0.713
    assert round(STEP_LAW_LR[2], 3) == 0.307
    assert round(math.exp(STEP_LAW_BATCH[0]), 2) == 0.58 and round(STEP_LAW_BATCH[1], 3) == 0.571


@pytest.mark.parametrize("N,D,lr,bs", [
    # the release's tool (code/fit_tool.py get_mean_lr_bs_scaling_model) on the 1,000 rows of
    # data/1004_fitted_lr_bs_scaling_model_parameters.csv: exp(mean intercept) N^mean D^mean
    (1e9, 1e11, 0.0016623791073370339, 1107466.619546391),
    (7e9, 1.4e12, 0.0009346840680555543, 4996961.32433303),  # the README's example, pred-opt-lr-bs 7e9 1.4e12 2048
    (2e8, 4e9, 0.001946199995164458, 176272.5449737823),
])
def test_published_values_reproduce_the_release(N, D, lr, bs):
    h = published_hparams(N, D, seq_len=2048)
    assert h.lr == pytest.approx(lr, rel=1e-12) and h.batch_tokens == pytest.approx(bs, rel=1e-12)
    assert h.batch_sequences == round(bs / 2048)
    assert h.lr_interval[0] < h.lr < h.lr_interval[1]
    assert h.batch_tokens_interval[0] < h.batch_tokens < h.batch_tokens_interval[1]


def test_interval_matches_the_release_bootstrap_percentiles():
    # 5th/95th percentiles of the 1,000 replicates' predictions at N=1e9, D=1e11: lr 1.54535e-3 .. 1.78590e-3,
    # batch 1.028718e6 .. 1.186905e6 tokens (the log-normal approximation is within 1 %)
    h = published_hparams(1e9, 1e11)
    assert h.lr_interval == pytest.approx((1.54535e-3, 1.78590e-3), rel=0.01)
    assert h.batch_tokens_interval == pytest.approx((1.028718e6, 1.186905e6), rel=0.01)


def test_out_of_range_is_flagged():
    assert published_hparams(1e9, 1e11).in_range
    h = published_hparams(1e6, 1e8, seq_len=128)
    assert not h.in_range and "N=1e+06" in h.message and "D=1e+08" in h.message


def test_moe_cross_check_is_the_ling_law():
    # arXiv 2507.17702 Eq. 3: lr = 1.1576 C^-0.1529, B = 0.0694 C^0.3644 (tokens), searched over 3e17-3e20 FLOPs
    h = moe_hparams(1e9, 5e10, seq_len=4096)  # C = M D = 2 * 1e9 * 5e10 = 1e20
    assert h.lr == pytest.approx(1.1576 * 1e20 ** -0.1529) and h.batch_tokens == pytest.approx(0.0694 * 1e20 ** 0.3644)
    assert h.in_range and h.batch_sequences == round(h.batch_tokens / 4096) and h.N == 1e9
    assert moe_hparams(1e9, 1e10, flops_per_token=1e10).lr == pytest.approx(h.lr)
    assert not moe_hparams(1e9, 5e12).in_range


# --- fitting runs ------------------------------------------------------------------------------
def test_fit_recovers_known_exponents_within_bootstrap_intervals():
    fit = fit_hparams(sweep(), bootstrap=200, seed=0)
    iv = fit.exponent_intervals()
    for key, truth in (("lr.n_exp", TRUE["a"]), ("lr.d_exp", TRUE["b"]), ("batch.d_exp", TRUE["g"])):
        lo, hi = iv[key]
        assert lo <= truth <= hi, (key, truth, iv[key])
        assert hi - lo < 0.12, (key, iv[key])  # an interval this narrow is informative
    assert fit.fixed == () and fit.sizes == 4 and fit.n_groups == 12 and 0 < fit.n_kept < fit.n_runs


def test_fit_predicts_a_held_out_size():
    df = sweep()
    fit = fit_hparams(df[df["N"] < 3e7], bootstrap=200)
    p = fit.predict(3e7, 1e9, seq_len=256)
    lr_true = math.exp(TRUE["c"]) * 3e7 ** TRUE["a"] * 1e9 ** TRUE["b"]
    bs_true = math.exp(TRUE["cB"]) * 1e9 ** TRUE["g"]
    assert p.lr_interval[0] <= lr_true <= p.lr_interval[1] and abs(p.lr / lr_true - 1) < 0.1
    assert p.batch_tokens_interval[0] <= bs_true <= p.batch_tokens_interval[1]
    assert not p.in_range and "N=3e+07" in p.message


def test_seeds_of_a_grid_point_are_averaged_before_the_best_runs_are_kept():
    # per size: lr 0.01 has one lucky seed (4.0) but the worse mean (4.5); lr 0.02 the better mean (4.3)
    rows = [{"N": N, "D": 100 * N, "lr": lr * f, "batch_tokens": 2048.0, "loss": loss}
            for N, f in ((1e6, 1.0), (4e6, 0.5)) for lr, losses in ((0.01, (4.0, 5.0)), (0.02, (4.3, 4.3)))
            for loss in losses]
    fit = fit_hparams(pd.DataFrame(rows), tolerance=0.0, bootstrap=0)
    assert (fit.n_runs, fit.n_kept) == (8, 4)  # the kept configurations' runs, both seeds of each
    assert fit.lr(1e6, 1e8) == pytest.approx(0.02) and fit.lr(4e6, 4e8) == pytest.approx(0.01)


def coarse(noise, seed, Ns=(1e6, 3e6, 1e7, 3e7)):
    """A x2 lr grid of 5 and a batch grid of 4 around each size's optimum (D = 20 N), 3 seeds a point: the
    shape of bench/bench_hparams.py's sweep, with loss noise of ``noise`` (relative)."""
    rng = np.random.default_rng(seed)
    rows = []
    for N in Ns:
        D = 20 * N
        lr0 = math.exp(TRUE["c"]) * N ** TRUE["a"] * D ** STEP_LAW_LR[2]
        bs0 = math.exp(TRUE["cB"]) * D ** TRUE["g"]
        off = rng.uniform(-0.5, 0.5, 2)  # the grid is not centred on the optimum
        for i in range(-2, 3):
            for j in range(-2, 2):
                lr, bs = lr0 * 2.0 ** (i + off[0]), bs0 * 2.0 ** (j + off[1])
                clean = (2.0 + 50 * N ** -0.3) * (1 + 0.02 * math.log(lr / lr0) ** 2 + 0.02 * math.log(bs / bs0) ** 2)
                rows += [(N, D, lr, bs, clean * (1 + rng.normal(0, noise))) for _ in range(3)]
    return pd.DataFrame(rows, columns=["N", "D", "lr", "batch_tokens", "loss"])


def test_surface_optimum_reads_the_law_through_noise_the_kept_set_cannot():
    # relative noise 1 % against a bowl 2 % deep per e-fold: one grid point's best is mostly noise;
    # held-out size 3e7, mean |log error| of the predicted lr and batch over 10 noisy sweeps
    lr_true = math.exp(TRUE["c"]) * 3e7 ** TRUE["a"] * 6e8 ** STEP_LAW_LR[2]
    bs_true = math.exp(TRUE["cB"]) * 6e8 ** TRUE["g"]
    err = {"kept": [], "surface": []}
    for seed in range(10):
        df = coarse(0.01, seed)
        for how in err:
            p = fit_hparams(df[df["N"] < 3e7], bootstrap=0, optimum=how).predict(3e7, 6e8)
            err[how].append((abs(math.log(p.lr / lr_true)), abs(math.log(p.batch_tokens / bs_true))))
    kept, surface = np.mean(err["kept"], axis=0), np.mean(err["surface"], axis=0)
    assert np.all(surface < 0.12) and np.all(kept > 0.2), err  # ~0.04 / 0.09 against ~0.28 / 0.30


def test_surface_fit_recovers_the_law_without_noise_and_bootstraps_an_interval():
    fit = fit_hparams(coarse(0.0, 0), bootstrap=30, optimum="surface")
    assert fit.fixed == ("lr.d_exp",) and fit.n_groups == 4 and fit.tolerance == 0.0
    assert fit.lr.n_exp == pytest.approx(TRUE["a"], abs=1e-3)
    assert fit.batch.d_exp == pytest.approx(TRUE["g"], abs=1e-3)
    assert "quadratic loss surface" in fit.notes[-1] and len(fit.boot_lr) == 30
    with pytest.raises(UserError, match="--optimum: 'best'; allowed: kept, surface"):
        fit_hparams(coarse(0.0, 0), optimum="best")


def test_tokens_proportional_to_params_hold_the_d_exponent_at_the_published_value():
    # D = 20 N: log N and log D are collinear, so lr's D exponent is held at the Step Law's
    fit = fit_hparams(sweep(Ns=(1e6, 3e6, 1e7, 3e7), d_of_n=lambda n: 20 * n, b=STEP_LAW_LR[2]), bootstrap=50)
    assert fit.fixed == ("lr.d_exp",)
    assert fit.lr.d_exp == STEP_LAW_LR[2] and fit.lr.n_exp == pytest.approx(TRUE["a"], abs=0.03)
    assert fit.batch.d_exp == pytest.approx(TRUE["g"], abs=0.05)


def test_budgets_rounded_to_whole_steps_still_count_as_proportional():
    # what hparams-sweep does at a fixed tokens-per-parameter ratio: D = 20 N, rounded to steps of 2,048 tokens
    fit = fit_hparams(sweep(Ns=(1e6, 3e6, 1e7, 3e7), d_of_n=lambda n: 2048 * max(1, round(20 * n / 2048)),
                            b=STEP_LAW_LR[2]), bootstrap=20)
    assert fit.fixed == ("lr.d_exp",) and fit.lr.d_exp == STEP_LAW_LR[2]
    assert fit.lr.n_exp == pytest.approx(TRUE["a"], abs=0.03)


def test_table_from_trials_reads_n_d_lr_batch_from_each_trial():
    spec = ProxySpec(preset="dense-0.1m", tokens=200_000, lr=2e-3, batch_size=8, seq_len=64)
    m = Mixture({"a": 1.0})
    trials = [Trial(0, m, spec, TrialState.COMPLETE, 3.5, metrics={"non_embedding_params": 98624, "tokens": 199_680}),
              Trial(1, m, spec, TrialState.FAILED, None), Trial(2, m, spec, TrialState.COMPLETE, 3.4)]
    df = table_from_trials(trials)
    assert df.to_dict("records") == [
        {"N": 98624.0, "D": 199680.0, "lr": 2e-3, "batch_tokens": 512.0, "loss": 3.5},
        {"N": float(spec.non_embedding_params()), "D": 200000.0, "lr": 2e-3, "batch_tokens": 512.0, "loss": 3.4}]


def test_missing_column_names_it():
    with pytest.raises(RunsTableError, match="missing column.*batch_tokens"):
        fit_hparams(sweep().drop(columns=["batch_tokens"]))


# --- the CLI -----------------------------------------------------------------------------------
def _one_error_line(capsys) -> str:
    cap = capsys.readouterr()
    err = cap.err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("mixopt: error: ") and "Traceback" not in err, err
    assert cap.out == ""
    return err


def test_cli_hparams_json_and_moe(capsys):
    assert main(["hparams", "--params", "1e9", "--tokens", "100B", "--seq-len", "2048", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["hparams"]["lr"] == pytest.approx(0.0016623791073370339) and out["moe"] is None
    assert main(["hparams", "--params", "17.5B", "--tokens", "1T", "--moe",
                 "active=0.85B,experts=384,top_k=12,shared=1,granularity=10.67"]) == 0
    text = capsys.readouterr().out
    assert "total non-embedding params" in text and "efficiency leverage" in text and "outside" in text
    assert "cross-check" in text


def test_cli_fit_runs_predicts_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    sweep().to_csv("runs.csv", index=False)
    assert main(["fit", "--kind", "hparams", "--runs", "runs.csv", "--predict", "1e7:3e8", "--json",
                 "--bootstrap", "50"]) == 0
    res = json.loads(capsys.readouterr().out)
    truth = math.exp(TRUE["c"]) * 1e7 ** TRUE["a"] * 3e8 ** TRUE["b"]
    assert res["kind"] == "hparams" and res["predicted"]["lr"] == pytest.approx(truth, rel=0.05)
    assert main(["fit", "--runs", "runs.csv", "--bootstrap", "20"]) == 0  # --runs implies kind hparams
    assert "lr           =" in capsys.readouterr().out
    assert main(["fit", "--runs", "runs.csv", "--bootstrap", "0", "--json"]) == 0  # no replicates: point intervals
    res = json.loads(capsys.readouterr().out)
    assert res["intervals_90"]["lr.n_exp"] == [res["lr"]["n_exp"]] * 2 and res["bootstrap"] == 0
    coarse(0.0, 0).to_csv("coarse.csv", index=False)
    assert main(["fit", "--runs", "coarse.csv", "--optimum", "surface", "--bootstrap", "5", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["optimum"] == "surface" and res["lr"]["n_exp"] == pytest.approx(TRUE["a"], abs=1e-3)
    assert main(["fit", "--runs", "coarse.csv", "--optimum", "surface", "--bootstrap", "5"]) == 0
    assert "one loss surface over 4 (N, D) groups" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coarse.csv", "runs.csv"]


@pytest.mark.parametrize("mutate,args,needle", [
    (lambda df: df.drop(columns=["loss"]), [], "missing column(s) loss"),
    (lambda df: df.assign(lr=df["lr"].where(df.index != 3, 0.0)), [], "column 'lr', row 3"),
    (lambda df: df.assign(N=-df["N"]), [], "column 'N', row 0"),
    (lambda df: df.assign(D=df["D"].where(df.index != 5, -1.0)), [], "column 'D', row 5"),
    (lambda df: df[df["N"] == 1e6], [], "2 or more model sizes"),
    (lambda df: df.groupby(["N", "D"]).head(1), [], "needs an lr sweep"),
    (lambda df: df, ["--predict", "1e7"], "--predict"),
    (lambda df: df, ["--predict", "0:1e9"], "--predict N"),
    (lambda df: df, ["--kind", "loss_scale"], "--kind hparams only"),
    (lambda df: df, ["--tolerance", "-1"], "--tolerance"),
    (lambda df: df, ["--optimum", "best"], "--optimum: invalid choice: 'best'"),
])
def test_cli_fit_runs_bad_input_is_one_line_exit_2(tmp_path, monkeypatch, capsys, mutate, args, needle):
    monkeypatch.chdir(tmp_path)
    mutate(sweep(Ns=(1e6, 3e6), Ds=(1e8,))).to_csv("runs.csv", index=False)
    assert main(["fit", "--runs", "runs.csv", *args]) == 2
    assert needle in _one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.csv"]


@pytest.mark.parametrize("args,needle", [
    (["--params", "0", "--tokens", "1e9"], "--params"),
    (["--params", "1e9", "--tokens", "lots"], "--tokens"),
    (["--params", "1e9", "--tokens", "1e9", "--moe", "experts=8,top_k=2"], "missing active"),
    (["--params", "1e9", "--tokens", "1e9", "--moe", "active=1e8,experts=8,top_k=9,granularity=2"], "top_k"),
    (["--params", "1e9", "--tokens", "1e9", "--moe", "active=2e9,experts=8,top_k=2,granularity=2"], "exceeds --params"),
    (["--params", "1e9", "--tokens", "1e9", "--moe", "size=3"], "allowed keys"),
])
def test_cli_hparams_bad_input_is_one_line_exit_2(tmp_path, monkeypatch, capsys, args, needle):
    monkeypatch.chdir(tmp_path)
    assert main(["hparams", *args]) == 2
    assert needle in _one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []
