"""The engine's GPU path, checked on CPU: the compiled pack step traces as one graph without breaks (a host
sync inside it would break it) for dense and MoE, a later pack of the same shape reuses that graph, a
compile backend can be named, and ``run_pack`` stops at its deadline between steps."""

import importlib.util
import time
from pathlib import Path

import pytest
import torch
from torch._dynamo.utils import counters

from mixopt.core.spec import ProxySpec
from mixopt.core.worker import TrialFailure, TrialResult
from mixopt.proxies.pack_train import PackTrainer, run_pack


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_compile_helpers_{name}", Path(__file__).with_name(f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_train = _load("test_train")
corpus_dir, request = _train.corpus_dir, _train.request


def trainer(preset: str, K: int = 2, compile="eager") -> PackTrainer:
    specs = [ProxySpec(preset=preset, tokens=4 * 16 * 8, seq_len=16, batch_size=4, seed=k) for k in range(K)]
    return PackTrainer(specs, 64, torch.device("cpu"), compile=compile)


def batch(K: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, 64, (K, 4, 17), generator=g)
    return t[..., :-1], t[..., 1:]


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["dense-3k", "moe-0.1m"])
def test_compiled_step_is_one_graph_and_reused_by_the_next_pack(preset):
    torch._dynamo.reset()
    graphs, breaks = counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())
    first = trainer(preset)
    for s in range(3):
        first.step(*batch(seed=s))
    assert first._compiled is not None and first.compile_error is None
    assert counters["stats"]["unique_graphs"] - graphs == 1  # forward and loss in one graph
    assert sum(counters["graph_break"].values()) == breaks  # nothing in it syncs with the host
    second = trainer(preset)  # a new pack of the same shape: dynamo's cache serves it, no new graph
    for s in range(2):
        second.step(*batch(seed=s))
    assert counters["stats"]["unique_graphs"] - graphs == 1
    eager = trainer(preset, compile=False)
    for s in range(2):
        eager.step(*batch(seed=s))
    # dense: the same fp32 arithmetic; MoE: its compiled grouped matmuls run in bf16, as on CUDA
    tol = 1e-5 if preset.startswith("dense") else 0.05
    assert torch.allclose(second.losses[:2], eager.losses[:2], atol=tol)


def test_a_compile_backend_can_be_named():
    t = trainer("dense-3k", compile="aot_eager")
    assert t._compiled is not None
    assert trainer("dense-3k", compile=False)._compiled is None


def test_run_pack_stops_at_its_deadline(corpus_dir):
    reqs = [request(corpus_dir, {"cycle": 1.0}, seed=k, tokens=8 * 16 * 6, evals=1) | {"trial_id": k} for k in range(2)]
    stopped = run_pack(reqs, deadline=time.time() - 1)
    assert all(isinstance(o, TrialFailure) and o.kind == "error" and "stopped at step 0 of 6" in o.reason
               for o in stopped), stopped
    assert all(isinstance(o, TrialResult) for o in run_pack(reqs, deadline=time.time() + 600))
