"""The weight files of an expert set (seed and experts): read back and checked against the set they should
belong to. Written by :mod:`mixopt.proxies.merge`; read there to merge, and by the engine to start a branch
trial from the seed (:mod:`mixopt.proxies.pack_train`)."""

from __future__ import annotations

import os

import torch

from mixopt.core.errors import DataError
from mixopt.core.experts import ExpertsSpec
from mixopt.proxies.pack import PackGPT


def load_member(path: str | os.PathLike, es: ExpertsSpec) -> dict[str, torch.Tensor]:
    """One expert (or the seed) file's parameters, checked against the set it should belong to.

    Raises:
        DataError: the file is unreadable, or belongs to another set (architecture, vocabulary, key).
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise DataError(f"merge: expert file {path} is unreadable ({e}); delete it, or rerun with --resume "
                        "to retrain it") from None
    if meta.get("key") != es.key():
        raise DataError(f"merge: {path} belongs to expert set {meta.get('key')!r}, not {es.key()!r} (another "
                        "architecture, vocabulary, budget or base mixture)")
    want = _shapes(es)
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if got != want:
        raise DataError(f"merge: {path} does not hold a {es.spec.preset} model of vocabulary {es.vocab_size}")
    return tensors


def _shapes(es: ExpertsSpec) -> dict[str, tuple[int, ...]]:
    pack = PackGPT(PackGPT.config_of(es.spec, es.vocab_size), 1)  # uninitialised: shapes only
    return {n: tuple(p.shape[1:]) for n, p in pack.named_parameters()}


@torch.no_grad()
def load_into(pack: PackGPT, tensors: dict[str, torch.Tensor]) -> None:
    """Every member of ``pack`` takes the one model ``tensors`` (a member file's parameters)."""
    for name, p in pack.named_parameters():
        p.copy_(tensors[name].to(p.dtype)[None].expand_as(p))


__all__ = ["load_into", "load_member"]
