"""Corpus preparation: split, tokenizers, manifest contract, incremental and interrupt-safe runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from mixopt.core.errors import ConfigError, DataError
from mixopt.data import Corpus, Document, corpus_path_for, prepare_corpus, shards, split_documents

SAMPLE = ("Hello, world!  Tabs\tand\nnewlines\r\n, ünïcødé 字 🙂, code: def f(x): return x**2\n"
          "   leading spaces and trailing   ")


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for d, n in (("code", 24), ("prose", 30), ("legal", 12)):
        (root / d).mkdir(parents=True)
        for i in range(n):
            (root / d / f"{i:02d}.txt").write_text(f"{d} {i} " + SAMPLE * (1 + i % 3))
    return root


class Log(list):
    def __call__(self, line: str) -> None:
        self.append(line)


def test_split_is_by_document_id_and_deterministic() -> None:
    docs = [Document(f"doc-{i}", "x") for i in range(400)]
    train, val = split_documents(docs, 0.1, "d")
    train2, val2 = split_documents(list(reversed(docs)), 0.1, "d")
    assert {d.id for d in val} == {d.id for d in val2} and {d.id for d in train} == {d.id for d in train2}
    assert 20 <= len(val) <= 60  # ~10% of 400
    tr, va = split_documents(docs[:2], 0.05, "d")
    assert len(tr) == 1 and len(va) == 1  # at least one on each side
    tr, va = split_documents(docs[:3], 0.5, "d")
    assert len(tr) >= 1 and len(va) >= 1
    with pytest.raises(DataError, match="at least 2"):
        split_documents(docs[:1], 0.05, "domain 'x'")


def test_two_runs_give_identical_bytes(folder: Path, tmp_path: Path) -> None:
    a = prepare_corpus(str(folder), vocab_size=300, out_dir=tmp_path / "a", progress=Log())
    b = prepare_corpus(str(folder), vocab_size=300, out_dir=tmp_path / "b", progress=Log())
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()
    for d in a.domains:
        assert a.manifest["domains"][d]["sha256"] == b.manifest["domains"][d]["sha256"]
        for s in ("train", "val"):
            assert np.array_equal(a.tokens(d, s), b.tokens(d, s))


def test_manifest_contract(folder: Path, tmp_path: Path) -> None:
    c = prepare_corpus(str(folder), vocab_size=300, out_dir=tmp_path / "c", progress=Log())
    m = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert set(m) == {"format", "vocab_size", "dtype", "eot", "tokenizer", "settings", "domains"}
    assert m["format"] == 1 and m["dtype"] == "uint16" and m["tokenizer"] == {"kind": "bpe", "file": "tokenizer.json"}
    assert m["eot"] == c.tokenizer().token_to_id("<|endoftext|>") and m["vocab_size"] <= 300
    for name, e in m["domains"].items():
        assert set(e) == {"train_tokens", "val_tokens", "train_docs", "val_docs", "bytes", "sha256",
                          "source", "fingerprint"}
        assert set(e["sha256"]) == {"train", "val"}
        assert (tmp_path / "c" / name / "train.bin").stat().st_size == 2 * e["train_tokens"]
    assert c.token_counts("val") == {d: m["domains"][d]["val_tokens"] for d in c.domains}
    assert c.tokens("code", "train").dtype == np.dtype("<u2")
    c.verify()
    with pytest.raises(DataError, match="unknown domain 'nope'; allowed: code, legal, prose"):
        c.tokens("nope", "train")
    with pytest.raises(DataError, match="allowed: train, val"):
        c.tokens("code", "test")
    # corruption is caught by verify()
    p = tmp_path / "c" / "legal" / "val.bin"
    data = bytearray(p.read_bytes())
    data[0] ^= 1
    p.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"legal/val\.bin: sha256 differs"):
        Corpus.open(tmp_path / "c").verify()


def test_bpe_round_trip(folder: Path, tmp_path: Path) -> None:
    c = prepare_corpus(str(folder), vocab_size=400, out_dir=tmp_path / "c", progress=Log())
    tok = c.tokenizer()
    for text in (SAMPLE, "", " ", "never seen: Ωμέγα ∑ ∫ ☃ \x00\x7f", "code 0 " + SAMPLE):
        ids = tok.encode(text).ids
        assert tok.decode(ids) == text
    # the shards decode back to the documents (eot dropped)
    ids = c.tokens("legal", "val").tolist()
    assert ids[-1] == c.eot
    assert SAMPLE in c.decode(ids)
    assert len(tok.encode(SAMPLE * 3).ids) < len((SAMPLE * 3).encode()) / 1.5  # merges were learned


def test_bytes_round_trip_and_uint32(tmp_path: Path, folder: Path) -> None:
    c = prepare_corpus(str(folder), tokenizer="bytes", out_dir=tmp_path / "c", progress=Log())
    assert (c.vocab_size, c.eot, c.dtype.name, c.tokenizer()) == (257, 256, "uint16", None)
    assert c.manifest["tokenizer"] == {"kind": "bytes", "file": None}
    ids = c.tokens("prose", "train")
    docs = bytes(ids[ids != 256].astype(np.uint8)).decode("utf-8")
    assert SAMPLE in docs
    assert shards.dtype_for(65535) == np.dtype("<u2") and shards.dtype_for(65536) == np.dtype("<u4")
    enc = shards.Encoder(None)
    assert enc.decode(enc.encode([SAMPLE]).tolist()) == SAMPLE


def test_incremental_skips_complete_and_redoes_interrupted(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "c"
    prepare_corpus(str(folder), vocab_size=300, out_dir=out, progress=Log())
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.bin")}
    tok_mtime = (out / "tokenizer.json").stat().st_mtime_ns

    log = Log()
    prepare_corpus(str(folder), vocab_size=300, out_dir=out, progress=log)
    assert sum("up to date" in line for line in log) == 4  # tokenizer + 3 domains
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.bin")} == mtimes
    assert (out / "tokenizer.json").stat().st_mtime_ns == tok_mtime

    # simulate an interruption: "prose" never reached the manifest, "code" left a temp file
    m = json.loads((out / "manifest.json").read_text())
    del m["domains"]["prose"]
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DataError, match=r"corpus incomplete \(domains not prepared: prose\)"):
        Corpus.open(out)
    stray = out / "code" / ".train.bin.tmp-abc123"
    stray.write_bytes(b"\x00\x01half")
    log = Log()
    c = prepare_corpus(str(folder), vocab_size=300, out_dir=out, progress=log)
    redone = {line.split(":")[0] for line in log if "docs" in line}
    assert redone == {"prose", "code"}
    assert not stray.exists()
    assert (out / "legal" / "train.bin").stat().st_mtime_ns == mtimes[out / "legal" / "train.bin"]
    c.verify()

    # a changed source redoes everything (the BPE tokenizer saw all domains)
    (folder / "legal" / "new.txt").write_text("a brand new legal document " * 20)
    log = Log()
    prepare_corpus(str(folder), vocab_size=300, out_dir=out, progress=log)
    assert not any("up to date" in line for line in log)

    # a truncated shard (size no longer matches the manifest) is redone
    p = out / "code" / "val.bin"
    p.write_bytes(p.read_bytes()[:-2])
    log = Log()
    prepare_corpus(str(folder), vocab_size=300, out_dir=out, progress=log).verify()
    assert {line.split(":")[0] for line in log if "docs" in line} == {"code"}


def test_default_location_and_argument_checks(folder: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MIXOPT_CACHE_DIR", str(tmp_path / "cache"))
    where = corpus_path_for(str(folder), tokenizer="bytes", max_bytes_per_domain=10_000)
    assert where.parent == tmp_path / "cache" / "corpus" and where.name.startswith("data-bytes-257-")
    assert not where.exists()
    c = prepare_corpus(str(folder), tokenizer="bytes", max_bytes_per_domain=10_000, progress=Log())
    assert c.path == where
    assert corpus_path_for(str(folder), tokenizer="bytes", max_bytes_per_domain=10_000, seed=1) != where
    for kwargs, pattern in (({"vocab_size": 100}, "vocab_size"), ({"val_fraction": 0.0}, "val_fraction"),
                            ({"val_fraction": 0.6}, "0 < x <= 0.5"), ({"tokenizer": "word"}, "bpe, bytes"),
                            ({"max_bytes_per_domain": 0}, "max_bytes_per_domain")):
        with pytest.raises(ConfigError, match=pattern):
            prepare_corpus(str(folder), progress=Log(), **kwargs)


def test_atomic_write_leaves_no_partial_file(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")

    def boom(src, dst):  # the process dies right before the rename
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        shards.write_tokens(target, np.arange(10, dtype=np.uint16))
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]
