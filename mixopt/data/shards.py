"""Tokenizers (byte-level BPE or raw bytes) and atomic token shards.

A shard is a raw little-endian array of token ids (``uint16`` when the vocabulary is below
65536, else ``uint32``); every document is followed by the end-of-text token ``eot``. Files
are written to a temporary name in the same folder and ``os.replace``-d into place only when
complete, so a reader never sees a half-written file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

EOT_TOKEN = "<|endoftext|>"
BYTES_VOCAB = 257  # 256 byte values + eot
BYTES_EOT = 256
TMP_MARK = ".tmp-"  # temp files are named ".<final name>.tmp-<random>"
_CHUNK_DOCS = 512  # documents per encode_batch call
_CHUNK_BYTES = 4_000_000  # ... or at most this much text per call


def dtype_for(vocab_size: int) -> np.dtype:
    """``uint16`` for vocabularies below 65536, else ``uint32``."""
    return np.dtype("<u2") if vocab_size < 65536 else np.dtype("<u4")


def train_bpe(texts: Iterable[str], vocab_size: int) -> Any:
    """Train a byte-level BPE ``tokenizers.Tokenizer`` with ``<|endoftext|>`` as token 0.

    Decoding is lossless: ``tok.decode(tok.encode(x).ids) == x`` for any string.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT_TOKEN],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def load_tokenizer(path: Path) -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


class Encoder:
    """Turns documents into one token array, each document followed by ``eot``.

    ``tokenizer`` is a ``tokenizers.Tokenizer`` or None for raw UTF-8 bytes.
    """

    def __init__(self, tokenizer: Any | None) -> None:
        self.tokenizer = tokenizer
        if tokenizer is None:
            self.vocab_size, self.eot = BYTES_VOCAB, BYTES_EOT
        else:
            self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
            self.eot = tokenizer.token_to_id(EOT_TOKEN)
            if self.eot is None:
                raise ValueError(f"tokenizer has no {EOT_TOKEN} token")
        self.dtype = dtype_for(self.vocab_size)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Token ids of ``texts`` (each followed by eot) as one array of ``self.dtype``. Shape (N,)."""
        parts: list[np.ndarray] = []
        eot = np.array([self.eot], dtype=self.dtype)
        if self.tokenizer is None:
            for t in texts:
                parts += [np.frombuffer(t.encode("utf-8"), dtype=np.uint8).astype(self.dtype), eot]
        else:
            for chunk in _chunks(texts):
                for enc in self.tokenizer.encode_batch(chunk, add_special_tokens=False):
                    parts += [np.asarray(enc.ids, dtype=self.dtype), eot]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=self.dtype)

    def decode(self, ids: Sequence[int]) -> str:
        if self.tokenizer is None:
            return bytes(int(i) for i in ids if i != BYTES_EOT).decode("utf-8", "replace")
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)


def _chunks(texts: Sequence[str]) -> Iterable[list[str]]:
    chunk: list[str] = []
    size = 0
    for t in texts:
        chunk.append(t)
        size += len(t)
        if len(chunk) >= _CHUNK_DOCS or size >= _CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _tmp_path(path: Path) -> tuple[int, str]:
    return tempfile.mkstemp(prefix=f".{path.name}{TMP_MARK}", dir=path.parent)


def write_atomic(path: Path, data: bytes) -> str:
    """Write ``data`` to ``path`` via a temp file + ``os.replace``; returns its sha256 hex."""
    fd, tmp = _tmp_path(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return hashlib.sha256(data).hexdigest()


def write_tokens(path: Path, tokens: np.ndarray) -> str:
    """Write a token array (little-endian) atomically; returns the file's sha256 hex."""
    return write_atomic(path, tokens.astype(tokens.dtype.newbyteorder("<"), copy=False).tobytes())


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def remove_stray_temps(folder: Path) -> int:
    """Delete temp files an interrupted run left in ``folder``; returns how many."""
    n = 0
    if folder.is_dir():
        for p in folder.iterdir():
            if p.name.startswith(".") and TMP_MARK in p.name and p.is_file():
                p.unlink(missing_ok=True)
                n += 1
    return n
