"""``lr: auto`` / ``batch_size: auto`` from the published law (the fitted laws: test_hparams_sweep.py)."""

import pytest

from mixopt.analysis import autohp
from mixopt.analysis.autohp import proxy_law, resolve_config, resolve_derived
from mixopt.analysis.hparams import published_hparams
from mixopt.cli import main
from mixopt.core.errors import ConfigError
from mixopt.core.spec import ProxySpec
from mixopt.run.config import load_config
from mixopt.study import InMemoryStorage, create_study
from tests.conftest import study_yaml


@pytest.fixture
def cfg_path(tmp_path, tiny_domains):
    return study_yaml(tmp_path / "s.yaml", tiny_domains, tmp_path / "cache", f"sqlite:///{tmp_path}/none.db",
                      tmp_path / "out", proxy={"preset": "dense-3k", "tokens": 65536, "seq_len": 64},
                      ladder=[{"preset": "dense-6k"}, {"preset": "dense-14k", "lr": 0.02}, {"preset": "dense-37k",
                                                                                          "batch_size": "auto"}])


def _want(spec: ProxySpec) -> tuple[float, int]:
    h = published_hparams(spec.non_embedding_params(), spec.tokens, seq_len=spec.seq_len)
    return float(f"{h.lr * autohp.PROXY_LR_FACTOR:.4g}"), max(1, round(h.batch_tokens * autohp.PROXY_BATCH_FACTOR / 64))


def test_published_law_scaled_for_proxies_every_rung_at_its_size(cfg_path):
    cfg = load_config(cfg_path, ["--proxy.lr=auto", "--proxy.batch_size=auto"])
    assert sorted(cfg.hparams.auto) == ["ladder[2].batch_size", "proxy.batch_size", "proxy.lr"]
    r = resolve_config(cfg)
    assert (r.proxy.lr, r.proxy.batch_size) == _want(r.proxy)
    rungs = {s.preset: s for s in r.ladder_specs()}
    assert (rungs["dense-6k"].lr, rungs["dense-6k"].batch_size) == _want(rungs["dense-6k"])  # inherits proxy's auto
    assert rungs["dense-14k"].lr == 0.02 and rungs["dense-14k"].batch_size == _want(rungs["dense-14k"])[1]
    assert (rungs["dense-37k"].lr, rungs["dense-37k"].batch_size) == _want(rungs["dense-37k"])
    assert r.proxy.lr > rungs["dense-6k"].lr > rungs["dense-37k"].lr  # the law's lr falls with size
    assert r.hparams.resolved["ladder[1].batch_size"] == rungs["dense-14k"].batch_size
    assert "ladder[1].lr" not in r.hparams.resolved and r.hparams.source.startswith("published Step Law")
    assert resolve_config(r) is r  # nothing left to resolve


def test_transfer_targets_are_resolved_at_their_size(cfg_path):
    cfg = resolve_config(load_config(cfg_path, ["--proxy.lr=auto"]))
    target = cfg.proxy.with_preset("dense-37k", tokens=3_200_000)
    (got,), nums = resolve_derived(cfg, [target], "transfer.target")
    assert got.lr == _want(got)[0] and got.batch_size == cfg.proxy.batch_size and nums == {"transfer.target[0].lr": got.lr}
    plain = load_config(cfg_path)  # no auto on the proxies: targets keep the proxies' numbers
    assert resolve_derived(plain, [target], "transfer.target") == ([target], {})


def test_a_resumed_study_keeps_the_numbers_it_was_created_with(cfg_path, monkeypatch):
    cfg = resolve_config(load_config(cfg_path, ["--proxy.lr=auto"]))
    store = InMemoryStorage()
    create_study(cfg.study, domains=["code", "legal", "prose"], storage=store, extra={"config": cfg.to_dict()})
    monkeypatch.setattr(autohp, "PROXY_LR_FACTOR", autohp.PROXY_LR_FACTOR * 2)  # the law changed since
    again = resolve_config(load_config(cfg_path, ["--proxy.lr=auto"]), store)
    assert again.proxy.lr == cfg.proxy.lr and again.to_dict()["ladder"] == cfg.to_dict()["ladder"]
    assert "as study 'tiny' was created" in again.hparams.source
    assert resolve_config(load_config(cfg_path, ["--proxy.lr=auto"])).proxy.lr != cfg.proxy.lr


def test_dry_run_prints_the_resolved_numbers(cfg_path, capsys):
    assert main(["run", str(cfg_path), "--dry-run", "--proxy.lr=auto"]) == 0
    out = capsys.readouterr().out
    r = resolve_config(load_config(cfg_path, ["--proxy.lr=auto"]))
    assert f"# proxy.lr: auto -> {r.proxy.lr}" in out and "# ladder[0].lr: auto -> " in out
    assert f"  lr: {r.proxy.lr}" in out and "# auto from: published Step Law" in out


@pytest.mark.parametrize("over, needle", [
    (["--proxy.warmup_frac=auto"], "proxy.warmup_frac: 'auto' has no law to resolve it"),
    (["--proxy.lr=auto", "--proxy.parametrization=mup"], "proxy.lr: auto has no published law under parametrization"),
    (["--proxy.lr=auto", "--hparams.law=fitted"], "hparams.law: fitted, but no law is fitted"),
    (["--proxy.lr=auto", "--hparams.study=nope"], "hparams.study: no study 'nope'"),
    (["--ladder=[{preset: dense-6k, tokens: auto}]"], "ladder[0].tokens: 'auto' has no law to resolve it"),
    (["--hparams.resolved={proxy.lr: 1}"], "hparams.resolved: set by mixopt"),
])
def test_auto_where_no_law_applies_is_one_line_exit_2(cfg_path, tmp_path, capsys, over, needle):
    assert main(["run", str(cfg_path), *over]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "none.db").exists() and not (tmp_path / "out").exists()


def test_law_fitted_needs_a_fit(cfg_path):
    with pytest.raises(ConfigError, match="hparams.law: fitted"):
        proxy_law(load_config(cfg_path, ["--hparams.law=fitted"]))
