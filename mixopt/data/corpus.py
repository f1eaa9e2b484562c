"""Prepare a tokenized corpus on disk (incremental, interrupt-safe) and open it.

Layout of a corpus folder::

    manifest.json            the contract (format 1), written atomically after every domain
    tokenizer.json           byte-level BPE (absent for the bytes tokenizer)
    <domain>/train.bin       raw little-endian token ids, each document followed by eot
    <domain>/val.bin

A domain is complete once it is listed in ``manifest["domains"]``; the corpus is complete
when every name in ``manifest["settings"]["domains"]`` is listed. Re-running
:func:`prepare_corpus` skips domains whose fingerprint (settings + source listing +
tokenizer) still matches and whose files have the recorded sizes; everything else is redone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from mixopt.core.errors import ConfigError, DataError
from mixopt.data import shards
from mixopt.data.recipes import resolve_recipe
from mixopt.data.sources import Document, DomainSource, select_documents

FORMAT = 1
SPLITS = ("train", "val")
TOKENIZER_SAMPLE_BYTES = 1_000_000  # per domain, so no domain dominates the BPE merges
_PREPARE_HINT = "run `mixopt data prepare` (or mixopt.data.prepare_corpus) first"


# ----------------------------------------------------------------------------- settings

def _check_settings(tokenizer: str, vocab_size: int, max_bytes_per_domain: int | None,
                    val_fraction: float, seed: int) -> None:
    if tokenizer not in ("bpe", "bytes"):
        raise ConfigError(f"data.tokenizer: {tokenizer!r} is unknown; allowed: bpe, bytes")
    if tokenizer == "bpe" and (isinstance(vocab_size, bool) or not isinstance(vocab_size, int)
                               or not 258 <= vocab_size < 2**32):
        raise ConfigError(f"data.vocab_size: {vocab_size!r} is invalid; the bpe tokenizer needs an "
                          "integer >= 258 (256 bytes + <|endoftext|> + at least one merge)")
    if max_bytes_per_domain is not None and (isinstance(max_bytes_per_domain, bool)
                                             or not isinstance(max_bytes_per_domain, int)
                                             or max_bytes_per_domain <= 0):
        raise ConfigError(f"data.max_bytes_per_domain: {max_bytes_per_domain!r} is invalid; "
                          "allowed: a positive integer (bytes) or None for no cap")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) \
            or not 0 < val_fraction <= 0.5:
        raise ConfigError(f"data.val_fraction: {val_fraction!r} is invalid; allowed: 0 < x <= 0.5")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"data.seed: {seed!r} is invalid; allowed: an integer")


def _core_settings(recipe_key: str, tokenizer: str, vocab_size: int,
                   max_bytes_per_domain: int | None, val_fraction: float, seed: int) -> dict[str, Any]:
    return {"recipe": recipe_key, "tokenizer": tokenizer,
            "vocab_size": shards.BYTES_VOCAB if tokenizer == "bytes" else int(vocab_size),
            "max_bytes_per_domain": max_bytes_per_domain, "val_fraction": float(val_fraction),
            "seed": int(seed)}


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def default_cache_dir() -> Path:
    """``$MIXOPT_CACHE_DIR`` or ``~/.cache/mixopt``."""
    return Path(os.environ.get("MIXOPT_CACHE_DIR") or Path.home() / ".cache" / "mixopt").expanduser()


def corpus_path_for(recipe: str = "pip", *, tokenizer: str = "bpe", vocab_size: int = 4096,
                    max_bytes_per_domain: int | None = 4_000_000, val_fraction: float = 0.05,
                    cache_dir: str | os.PathLike | None = None, seed: int = 0) -> Path:
    """Where :func:`prepare_corpus` puts (or finds) this corpus; builds nothing.

    ``<cache_dir>/corpus/<recipe>-<tokenizer>-<vocab>-<8 hex of the settings hash>``.
    """
    _check_settings(tokenizer, vocab_size, max_bytes_per_domain, val_fraction, seed)
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    name, key, _ = resolve_recipe(recipe, cache)
    core = _core_settings(key, tokenizer, vocab_size, max_bytes_per_domain, val_fraction, seed)
    return cache / "corpus" / f"{name}-{tokenizer}-{core['vocab_size']}-{_hash(core)[:8]}"


# ----------------------------------------------------------------------------- split

def _val_score(doc_id: str) -> float:
    """A uniform number in [0, 1) from sha1(doc id): the document's split coordinate."""
    return int.from_bytes(hashlib.sha1(doc_id.encode("utf-8")).digest()[:8], "big") / 2.0**64


def split_documents(docs: list[Document], val_fraction: float, where: str
                    ) -> tuple[list[Document], list[Document]]:
    """(train, val) by document: val iff sha1(id) score < val_fraction.

    At least one document lands on each side; fewer than 2 documents raise DataError.
    """
    if len(docs) < 2:
        raise DataError(f"{where}: {len(docs)} non-empty document(s); a domain needs at least 2 "
                        "(one for train, one for validation)")
    scores = [_val_score(d.id) for d in docs]
    is_val = [s < val_fraction for s in scores]
    if not any(is_val):
        is_val[int(np.argmin(scores))] = True
    if all(is_val):
        is_val[int(np.argmax(scores))] = False
    return ([d for d, v in zip(docs, is_val) if not v], [d for d, v in zip(docs, is_val) if v])


# ----------------------------------------------------------------------------- prepare

def _print_stderr(line: str) -> None:
    print(f"mixopt data: {line}", file=sys.stderr, flush=True)


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on ``folder/.lock`` so two processes never prepare it at once."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock
        yield
        return
    with open(folder / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        m = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) and m.get("format") == FORMAT else None


def _shards_ok(folder: Path, entry: dict[str, Any], itemsize: int) -> bool:
    try:
        return all((folder / f"{s}.bin").stat().st_size == entry[f"{s}_tokens"] * itemsize
                   for s in SPLITS)
    except (OSError, KeyError, TypeError):
        return False


def prepare_corpus(recipe: str = "pip", *, tokenizer: str = "bpe", vocab_size: int = 4096,
                   max_bytes_per_domain: int | None = 4_000_000, val_fraction: float = 0.05,
                   cache_dir: str | os.PathLike | None = None,
                   out_dir: str | os.PathLike | None = None, seed: int = 0,
                   progress: Callable[[str], None] | None = None) -> Corpus:
    """Build (or reuse) the token shards of a corpus and return it opened.

    Args:
        recipe: ``"pip"``, ``"debian"`` or a folder with one subfolder per domain.
        tokenizer: ``"bpe"`` (byte-level BPE trained on the train splits) or ``"bytes"``.
        vocab_size: BPE vocabulary incl. ``<|endoftext|>`` (ignored for bytes: 257).
        max_bytes_per_domain: UTF-8 bytes of text used per domain (None: all of it).
        val_fraction: share of documents (by sha1 of their id) held out for validation.
        cache_dir: root for corpora and downloads (default ``$MIXOPT_CACHE_DIR`` or
            ``~/.cache/mixopt``); out_dir overrides the corpus folder itself.
        seed: seeds which documents are taken under the byte cap.
        progress: receives one line per step (default: stderr).

    Example:
        >>> corpus = prepare_corpus("pip", tokenizer="bytes", max_bytes_per_domain=200_000)
        >>> corpus.tokens("code", "train")[:5]  # doctest: +SKIP
    """
    _check_settings(tokenizer, vocab_size, max_bytes_per_domain, val_fraction, seed)
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    name, key, sources = resolve_recipe(recipe, cache)
    core = _core_settings(key, tokenizer, vocab_size, max_bytes_per_domain, val_fraction, seed)
    out = Path(out_dir).expanduser() if out_dir else \
        cache / "corpus" / f"{name}-{tokenizer}-{core['vocab_size']}-{_hash(core)[:8]}"
    out.mkdir(parents=True, exist_ok=True)
    with _locked(out):
        _Preparer(out, sources, core, _print_stderr if progress is None else progress).run()
    return Corpus.open(out)


class _Preparer:
    """One preparation pass over ``sources`` into ``out`` (see the module docstring)."""

    def __init__(self, out: Path, sources: list[DomainSource], core: dict[str, Any],
                 progress: Callable[[str], None]) -> None:
        self.out, self.sources, self.core, self.say = out, sources, core, progress
        self.old = _read_manifest(out) or {}

    def run(self) -> None:
        t0 = time.perf_counter()
        fps = {s.name: s.fingerprint() for s in self.sources}
        shards.remove_stray_temps(self.out)
        encoder, tok_info = self._tokenizer(fps)
        settings = {**self.core, "split": "sha1(doc id) score < val_fraction",
                    "tokenizer_sample_bytes": TOKENIZER_SAMPLE_BYTES,
                    "domains": [s.name for s in self.sources], **tok_info}
        manifest = {"format": FORMAT, "vocab_size": encoder.vocab_size,
                    "dtype": encoder.dtype.name, "eot": encoder.eot,
                    "tokenizer": {"kind": self.core["tokenizer"],
                                  "file": "tokenizer.json" if encoder.tokenizer else None},
                    "settings": settings, "domains": {}}
        todo = []
        old_domains = self.old.get("domains") or {}
        for src in self.sources:
            fp = _hash([self.core, fps[src.name], tok_info.get("tokenizer_sha256", "bytes")])
            entry = old_domains.get(src.name)
            interrupted = shards.remove_stray_temps(self.out / src.name) > 0
            if (isinstance(entry, dict) and entry.get("fingerprint") == fp and not interrupted
                    and self.old.get("dtype") == encoder.dtype.name
                    and _shards_ok(self.out / src.name, entry, encoder.dtype.itemsize)):
                manifest["domains"][src.name] = entry
                self.say(f"{src.name}: up to date ({entry['train_tokens']:,} train tokens)")
            else:
                todo.append((src, fp))
        shards.write_json(self.out / "manifest.json", manifest)  # drops stale domains first
        for src, fp in todo:
            manifest["domains"][src.name] = self._domain(src, fp, encoder)
            shards.write_json(self.out / "manifest.json", manifest)
        if todo:
            self.say(f"done: {len(todo)} domain(s) prepared in {time.perf_counter() - t0:.1f}s "
                     f"-> {self.out}")

    def _tokenizer(self, fps: dict[str, str]) -> tuple[shards.Encoder, dict[str, Any]]:
        if self.core["tokenizer"] == "bytes":
            return shards.Encoder(None), {}
        tok_fp = _hash([self.core, sorted(fps.items()), TOKENIZER_SAMPLE_BYTES])
        path = self.out / "tokenizer.json"
        old = self.old.get("settings") or {}
        if (old.get("tokenizer_fingerprint") == tok_fp and path.is_file()
                and shards.file_sha256(path) == old.get("tokenizer_sha256")):
            self.say("tokenizer: up to date")
            return shards.Encoder(shards.load_tokenizer(path)), {
                "tokenizer_fingerprint": tok_fp, "tokenizer_sha256": old["tokenizer_sha256"]}
        t0 = time.perf_counter()
        cap = TOKENIZER_SAMPLE_BYTES
        if self.core["max_bytes_per_domain"] is not None:
            cap = min(cap, self.core["max_bytes_per_domain"])
        texts: list[str] = []
        for src in self.sources:  # a balanced sample: the first `cap` bytes of each train split
            docs, _ = select_documents(src, cap, self.core["seed"])
            texts += [d.text for d in docs if _val_score(d.id) >= self.core["val_fraction"]]
        tok = shards.train_bpe(texts, self.core["vocab_size"])
        sha = shards.write_atomic(path, tok.to_str().encode("utf-8"))
        self.say(f"tokenizer: byte-level BPE, vocab {tok.get_vocab_size():,}, trained on "
                 f"{sum(len(t) for t in texts) / 1e6:.1f}M chars in {time.perf_counter() - t0:.1f}s")
        return shards.Encoder(tok), {"tokenizer_fingerprint": tok_fp, "tokenizer_sha256": sha}

    def _domain(self, src: DomainSource, fp: str, encoder: shards.Encoder) -> dict[str, Any]:
        t0 = time.perf_counter()
        folder = self.out / src.name
        folder.mkdir(exist_ok=True)
        docs, nbytes = select_documents(src, self.core["max_bytes_per_domain"], self.core["seed"])
        train, val = split_documents(docs, self.core["val_fraction"], f"domain '{src.name}' ({src.source})")
        entry: dict[str, Any] = {"sha256": {}}
        for split, part in (("train", train), ("val", val)):
            tokens = encoder.encode([d.text for d in part])
            entry["sha256"][split] = shards.write_tokens(folder / f"{split}.bin", tokens)
            entry[f"{split}_tokens"] = int(tokens.size)
            entry[f"{split}_docs"] = len(part)
        entry.update(bytes=nbytes, source=src.source, fingerprint=fp)
        entry = {k: entry[k] for k in ("train_tokens", "val_tokens", "train_docs", "val_docs",
                                       "bytes", "sha256", "source", "fingerprint")}
        self.say(f"{src.name}: {len(docs):,} docs ({len(val):,} val), {nbytes / 1e6:.2f} MB, "
                 f"{entry['train_tokens']:,} + {entry['val_tokens']:,} tokens, "
                 f"{time.perf_counter() - t0:.1f}s")
        return entry


# ----------------------------------------------------------------------------- reading

class Corpus:
    """A prepared corpus: memory-mapped token shards per domain and split.

    Example:
        >>> c = Corpus.open(path)  # doctest: +SKIP
        >>> c.domains, c.tokens("code", "val").shape  # doctest: +SKIP
        (['code', 'legal', ...], (61234,))
    """

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest
        self.domains: list[str] = sorted(manifest["domains"])
        self.vocab_size: int = int(manifest["vocab_size"])
        self.eot: int = int(manifest["eot"])
        self.dtype = np.dtype(manifest["dtype"]).newbyteorder("<")

    @classmethod
    def open(cls, path: str | os.PathLike) -> Corpus:
        """Open a complete corpus folder; DataError if its manifest is missing or incomplete."""
        p = Path(path).expanduser()
        mf = p / "manifest.json"
        if not mf.is_file():
            raise DataError(f"{p}: no corpus here ({mf.name} missing); {_PREPARE_HINT}")
        try:
            m = json.loads(mf.read_text())
        except (OSError, ValueError) as e:
            raise DataError(f"{mf}: unreadable manifest ({e}); {_PREPARE_HINT}") from None
        if not isinstance(m, dict) or m.get("format") != FORMAT:
            raise DataError(f"{mf}: unsupported manifest format {m.get('format') if isinstance(m, dict) else m!r}; "
                            f"expected {FORMAT}; {_PREPARE_HINT}")
        want = (m.get("settings") or {}).get("domains") or []
        missing = [d for d in want if d not in (m.get("domains") or {})]
        if missing or not m.get("domains"):
            raise DataError(f"{p}: corpus incomplete (domains not prepared: "
                            f"{', '.join(missing) or 'all'}); {_PREPARE_HINT}")
        return cls(p, m)

    def fingerprint(self) -> str:
        """16 hex digits naming this corpus's content (its domains' shard entries: token counts and
        checksums): what was trained on it is reusable wherever the fingerprint is the same."""
        return _hash({"vocab_size": self.vocab_size, "domains": self.manifest["domains"]})[:16]

    def _entry(self, domain: str) -> dict[str, Any]:
        if domain not in self.manifest["domains"]:
            raise DataError(f"{self.path}: unknown domain {domain!r}; allowed: {', '.join(self.domains)}")
        return self.manifest["domains"][domain]

    def tokens(self, domain: str, split: str = "train") -> np.ndarray:
        """Token ids of one domain and split, memory-mapped read-only. Shape (n_tokens,)."""
        if split not in SPLITS:
            raise DataError(f"split {split!r} is unknown; allowed: {', '.join(SPLITS)}")
        n = int(self._entry(domain)[f"{split}_tokens"])
        path = self.path / domain / f"{split}.bin"
        if not path.is_file() or path.stat().st_size != n * self.dtype.itemsize:
            raise DataError(f"{path}: missing or not {n} tokens as the manifest says; {_PREPARE_HINT}")
        if n == 0:
            return np.zeros(0, dtype=self.dtype)
        return np.memmap(path, dtype=self.dtype, mode="r", shape=(n,))

    def token_counts(self, split: str = "train") -> dict[str, int]:
        """Tokens per domain in ``split`` (documents' eot separators included)."""
        if split not in SPLITS:
            raise DataError(f"split {split!r} is unknown; allowed: {', '.join(SPLITS)}")
        return {d: int(self.manifest["domains"][d][f"{split}_tokens"]) for d in self.domains}

    def tokenizer(self) -> Any | None:
        """The ``tokenizers.Tokenizer`` (BPE), or None for the bytes tokenizer."""
        file = self.manifest["tokenizer"].get("file")
        return shards.load_tokenizer(self.path / file) if file else None

    def decode(self, ids: Any) -> str:
        """Text of token ids (eot dropped); for inspection."""
        return shards.Encoder(self.tokenizer()).decode(list(ids))

    def verify(self) -> None:
        """Recompute every shard's sha256; DataError naming the first file that differs."""
        for d in self.domains:
            for split in SPLITS:
                path = self.path / d / f"{split}.bin"
                if not path.is_file():
                    raise DataError(f"{path}: missing; {_PREPARE_HINT}")
                if shards.file_sha256(path) != self.manifest["domains"][d]["sha256"][split]:
                    raise DataError(f"{path}: sha256 differs from the manifest (corrupted or "
                                    f"modified); delete {self.path} and prepare again")

    def verify_once(self) -> bool:
        """:meth:`verify` the shards unless they are unchanged (size and mtime) since the last
        verification recorded in ``verified.json``; also checks every token id is < vocab_size.
        Returns True when the shards were read (False: unchanged since they were verified)."""
        stamp = {f"{d}/{s}": list(self._stat(d, s)) for d in self.domains for s in SPLITS}
        marker = self.path / "verified.json"
        try:
            if json.loads(marker.read_text()) == stamp:
                return False
        except (OSError, ValueError):
            pass
        self.verify()
        for d in self.domains:
            for split in SPLITS:
                t = self.tokens(d, split)
                if len(t) and int(t.max()) >= self.vocab_size:
                    raise DataError(f"{self.path / d / split}.bin: token id {int(t.max())} >= vocab_size "
                                    f"{self.vocab_size}; delete {self.path} and prepare again")
        with contextlib.suppress(OSError):  # a read-only cache is verified again next time
            shards.write_json(marker, stamp)
        return True

    def _stat(self, domain: str, split: str) -> tuple[int, int]:
        st = (self.path / domain / f"{split}.bin").stat()
        return st.st_size, st.st_mtime_ns

    def __repr__(self) -> str:
        return f"Corpus({str(self.path)!r}, domains={self.domains}, vocab_size={self.vocab_size})"
