"""Model-merging proxies: k domain experts trained once, any mixture scored by merging them.

:func:`train_experts` trains the seed of an :class:`~mixopt.core.experts.ExpertsSpec` (a pack of one,
on the base mixture, for the first ``seed_steps`` steps of the proxy's learning-rate schedule) and then
the k experts as ONE pack of the batched engine (member i = the seed continued on domain i alone for
the remaining ``expert_steps`` steps of the same schedule, fresh AdamW state), and writes each as a
safetensors file. :func:`merged_losses` scores mixtures: for a chunk of m mixtures W (m, k) it builds a
pack of m merged models ``theta_j = theta_seed + scale * sum_i c[j, i] (theta_i - theta_seed)``, with
``c[j] = W[j] ** power / sum(W[j] ** power)`` (``power`` 1: the mixture's own weights) (every
parameter: embeddings, attention, MLP or MoE experts and router, LayerNorm gains; ``scale`` = 1 is the
plain weight average ``sum_i W[j, i] theta_i`` of the papers, a larger one extrapolates each expert's
"task vector" away from the seed, as task arithmetic does) and evaluates all m in one forward per
validation batch, on the same fixed validation batches trained trials are scored on
(:func:`mixopt.proxies.train.eval_batches`).

Files (in one folder per expert set, named by ``ExpertsSpec.key()``): ``seed.safetensors`` and
``expert-<domain>.safetensors``, each holding the pack member's parameters under the pack's names
(the tied lm-head is ``wte.weight``) and, as metadata, the set's key, the role and the domain.
Both functions are worker functions (plain-data requests and results, called through the executors,
so the driver never imports torch).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mixopt.core.errors import ConfigError, DataError, TrialError
from mixopt.core.experts import SEED_FILE, ExpertsSpec, check_power, check_scale, check_weights, expert_file
from mixopt.core.mixture import Mixture
from mixopt.data.corpus import Corpus
from mixopt.data.shards import write_atomic
from mixopt.proxies.model import build_model, lr_at
from mixopt.proxies.pack import PackGPT
from mixopt.proxies.pack_train import PackTrainer, evaluate_pack
from mixopt.proxies.train import MixtureSampler, eval_batches, resolve_device
from mixopt.proxies.weights import load_into, load_member


def _open_corpus(es: ExpertsSpec, corpus_dir: str) -> Corpus:
    corpus = Corpus.open(corpus_dir)
    if corpus.vocab_size != es.vocab_size:
        raise DataError(f"merge: the experts have vocabulary {es.vocab_size}, the corpus {corpus_dir} {corpus.vocab_size}")
    missing = [d for d in es.domains if d not in corpus.domains]
    if missing:
        raise DataError(f"merge: expert domain(s) {missing} are not in the corpus {corpus_dir}")
    return corpus


def _save(pack: PackGPT, k: int, path: Path, meta: dict[str, str]) -> str:
    """Member k's parameters to ``path`` (atomically) -> the file's sha256."""
    from safetensors.torch import save

    return write_atomic(path, save({n: p[k].detach().float().cpu().contiguous() for n, p in pack.named_parameters()},
                                   meta))


def _train(trainer: PackTrainer, samplers: Sequence[MixtureSampler], steps: int, what: Sequence[str]) -> list[float]:
    """``steps`` optimizer steps, each member on its own sampler -> final training loss per member.

    Raises:
        TrialError: a member's loss became non-finite (kind "diverged").
    """
    for _ in range(steps):
        xs, ys = zip(*(s.next() for s in samplers))
        trainer.step(torch.stack(xs).to(trainer.device), torch.stack(ys).to(trainer.device))
    losses = trainer.losses[:steps].cpu().numpy()
    bad = [w for w, col in zip(what, losses.T) if not np.isfinite(col).all()]
    if bad:
        raise TrialError(f"merge: {', '.join(bad)} diverged (lr {trainer.specs[0].lr:g}); lower proxy.lr", kind="diverged")
    tail = max(1, steps // 10)
    return [float(np.mean(col[-tail:])) for col in losses.T]


def train_experts(request: Mapping[str, Any]) -> dict[str, Any]:
    """Train (what is asked of) an expert set and write its files.

    Args:
        request: ``experts`` (``ExpertsSpec.to_dict()``), ``corpus_dir``, ``out_dir`` (the set's folder),
            ``train`` (the names to (re)train: "seed" and/or domains; default: all), ``num_threads``, ``device``.
    Returns:
        ``files`` {file name: sha256} of what was written, ``train_loss`` {role: final training loss},
        ``tokens`` trained, ``seconds``.
    Raises:
        DataError: the corpus lacks a domain, has another vocabulary, or the seed file needed is bad.
        TrialError: training diverged.
    """
    t0 = time.perf_counter()
    es = ExpertsSpec.from_dict(request["experts"])
    torch.set_num_threads(int(request.get("num_threads", 1)))
    device = resolve_device(str(request.get("device", "cpu")))
    corpus = _open_corpus(es, str(request["corpus_dir"]))
    out = Path(request["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    todo = list(request.get("train") or ["seed", *es.domains])
    spec, V = es.spec, es.vocab_size
    B, T = spec.batch_size, spec.seq_len
    meta = {"key": es.key(), "preset": spec.preset, "vocab_size": str(V)}
    files, train_loss, tokens = {}, {}, 0
    seed_spec = spec.with_preset(spec.preset, tokens=es.seed_steps * B * T)
    if "seed" in todo:
        trainer = PackTrainer([seed_spec], V, device, lr_table=[[lr_at(i, spec)] for i in range(es.seed_steps)])
        base = MixtureSampler(corpus, Mixture(es.base.to_dict(), corpus.domains), B, T, seed=spec.seed)
        train_loss["seed"] = _train(trainer, [base], es.seed_steps, ["the seed"])[0]
        files[SEED_FILE] = _save(trainer.pack, 0, out / SEED_FILE, meta | {"role": "seed", "domain": ""})
        tokens += es.seed_steps * B * T
    domains = [d for d in es.domains if d in todo]
    if domains:
        seed = load_member(out / SEED_FILE, es)
        expert_spec = spec.with_preset(spec.preset, tokens=es.expert_steps * B * T)
        lrs = [[lr_at(es.seed_steps + i, spec)] * len(domains) for i in range(es.expert_steps)]
        trainer = PackTrainer([expert_spec] * len(domains), V, device, lr_table=lrs)
        load_into(trainer.pack, seed)
        samplers = [MixtureSampler(corpus, Mixture({d: 1.0}, corpus.domains), B, T,
                                   seed=spec.seed + 1 + es.domains.index(d)) for d in domains]
        for d, loss in zip(domains, _train(trainer, samplers, es.expert_steps, [f"expert {d!r}" for d in domains])):
            train_loss[d] = loss
        for k, d in enumerate(domains):
            files[expert_file(d)] = _save(trainer.pack, k, out / expert_file(d), meta | {"role": "expert", "domain": d})
        tokens += len(domains) * es.expert_steps * B * T
    return {"files": files, "train_loss": train_loss, "tokens": tokens, "seconds": time.perf_counter() - t0,
            "device": str(device)}


def stack_experts(es: ExpertsSpec, folder: str | os.PathLike, seed: bool = False) -> dict[str, torch.Tensor]:
    """Every parameter of the k experts stacked: {name: (k, ...)} fp32, in ``es.domains`` order; with
    ``seed``, the seed as a last row: (k + 1, ...) (what :func:`merged_pack` needs for ``scale`` != 1)."""
    files = [expert_file(d) for d in es.domains] + ([SEED_FILE] if seed else [])
    members = [load_member(Path(folder) / f, es) for f in files]
    return {n: torch.stack([e[n].float() for e in members]) for n in members[0]}


def debiased(W: torch.Tensor, es: ExpertsSpec) -> torch.Tensor:
    """The experts' weights V = (W - s * base) / (1 - s) for mixtures W (m, k): the continuation mixture that,
    after the seed's share s of training on the base mixture, makes the whole training's mixture W (rows sum
    to 1; entries may be negative: the merge then steps away from an expert)."""
    b = torch.tensor([es.base[d] for d in es.domains], dtype=W.dtype)
    s = es.seed_fraction
    return (W - s * b) / (1.0 - s)


def flattened(W: torch.Tensor, power: float = 1.0) -> torch.Tensor:
    """The experts' weights for mixtures W (m, k): ``W ** power`` renormalized per row (``power`` 1: W itself;
    below 1 the small weights count for more, towards the plain average of the experts a mixture uses)."""
    if power == 1.0:
        return W
    P = W.clamp_min(0.0) ** float(power)
    return P / P.sum(1, keepdim=True)


def merge_coefficients(W: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """The coefficients of the stacked members for ``theta_seed + scale * sum_i W_i (theta_i - theta_seed)``:
    (m, k) ``W`` itself at ``scale`` 1, else (m, k + 1) ``[scale * W, 1 - scale * sum W]`` (seed last)."""
    if scale == 1.0:
        return W
    S = float(scale) * W
    return torch.cat([S, 1.0 - S.sum(1, keepdim=True)], dim=1)


@torch.no_grad()
def merged_pack(stacked: Mapping[str, torch.Tensor], W: torch.Tensor, es: ExpertsSpec,
                scale: float = 1.0) -> PackGPT:
    """A pack of m merged models, W (m, k) -> PackGPT with K = m: member j = theta_seed + scale *
    sum_i W[j, i] (theta_i - theta_seed); at ``scale`` 1 that is sum_i W[j, i] theta_i. ``stacked``
    holds the seed as its last row when ``scale`` != 1 (``stack_experts(..., seed=True)``)."""
    C = merge_coefficients(W, scale)  # (m, k) or (m, k + 1)
    if next(iter(stacked.values())).shape[0] < C.shape[1]:
        raise ValueError(f"merged_pack: scale {scale} needs the seed stacked after the {W.shape[1]} experts")
    pack = PackGPT(PackGPT.config_of(es.spec, es.vocab_size), W.shape[0])
    for name, p in pack.named_parameters():
        E = stacked[name][:C.shape[1]]
        p.copy_(torch.tensordot(C.to(E.dtype), E, dims=1))  # (m, ...)
    return pack


def merged_losses(request: Mapping[str, Any]) -> dict[str, Any]:
    """Score mixtures by merging the experts.

    Args:
        request: ``experts`` (``ExpertsSpec.to_dict()``), ``dir`` (the set's folder), ``mixtures`` (m, k)
            weights over ``experts.domains``, ``corpus_dir``, ``eval_domains`` (default: every corpus
            domain), ``batch`` (merged models per forward, default 32), ``scale`` (the task-vector scale
            around the seed, > 0; default 1: the plain weight average), ``power`` (the mixture's weights are
            merged as ``w ** power``, renormalized; default 1), ``resample`` (0: the trials' validation
            batches; r > 0: another fixed draw, for the noise of a score), ``num_threads``, ``device``.
    Returns:
        ``losses`` (m, D) mean validation loss per mixture and domain, ``domains`` (D), ``eval_tokens``
        per mixture (forward tokens), ``seconds``.
    Raises:
        ConfigError: a mixture off the simplex or of the wrong length.
        DataError: an expert file missing, unreadable or of another set; a domain missing from the corpus.
    """
    t0 = time.perf_counter()
    es = ExpertsSpec.from_dict(request["experts"])
    W = [list(map(float, w)) for w in request["mixtures"]]
    check_weights(W, len(es.domains))
    scale = check_scale(request.get("scale", 1.0))
    power = check_power(request.get("power", 1.0))
    debias = bool(request.get("debias", False))
    if debias and power != 1.0:
        raise ConfigError(f"merge: debias merges the continuation mixture's own weights; power {power:g} must be 1")
    torch.set_num_threads(int(request.get("num_threads", 1)))
    device = resolve_device(str(request.get("device", "cpu")))
    corpus = _open_corpus(es, str(request["corpus_dir"]))
    folder = Path(request["dir"])
    need = [expert_file(d) for d in es.domains] + ([SEED_FILE] if scale != 1.0 else [])
    missing = [f for f in need if not (folder / f).is_file()]
    if missing:
        raise DataError(f"merge: expert file(s) {missing} missing in {folder}; train them (mixopt run --resume)")
    stacked = stack_experts(es, folder, seed=scale != 1.0)
    spec = es.spec
    domains = list(request.get("eval_domains") or corpus.domains)
    r, n_eval = int(request.get("resample", 0)), int(request.get("eval_batches") or spec.eval_batches)
    batches = {d: eval_batches(corpus, d, n_eval, spec.batch_size, spec.seq_len, resample=r) for d in domains}
    chunk = max(1, int(request.get("batch", 32)))
    out = []
    Wt = flattened(torch.tensor(W, dtype=torch.float32), power)
    if debias:
        Wt = debiased(Wt, es)
    for i in range(0, len(W), chunk):
        pack = merged_pack(stacked, Wt[i:i + chunk], es, scale).to(device)
        out.append(evaluate_pack(pack, batches, device))
    losses = np.concatenate(out) if out else np.zeros((0, len(domains)))
    return {"losses": losses.tolist(), "domains": domains, "seconds": time.perf_counter() - t0,
            "eval_tokens": len(domains) * n_eval * spec.batch_size * spec.seq_len}


def solo_from_merged(stacked: Mapping[str, torch.Tensor], w: Sequence[float], es: ExpertsSpec, scale: float = 1.0,
                     power: float = 1.0):
    """The merged model of one mixture as a solo ``GPT`` (for sampling or inspection)."""
    model = build_model(es.spec, es.vocab_size)
    C = merge_coefficients(flattened(torch.tensor([list(map(float, w))]), power), scale)
    sd = {n: torch.tensordot(C, E[:C.shape[1]], dims=1)[0] for n, E in stacked.items()}
    model.load_state_dict(sd | {"lm_head.weight": sd["wte.weight"]})
    return model


__all__ = ["flattened", "load_member", "merge_coefficients", "merged_losses", "merged_pack", "solo_from_merged",
           "stack_experts", "train_experts"]

