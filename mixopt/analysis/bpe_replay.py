"""Replay a BPE merge list on text and record every pair count at every merge step.

The half of data mixture inference (Hayase et al., "Data Mixture Inference: What do BPE
Tokenizers Reveal about their Training Data?", arXiv 2407.16607) that needs no solver:

1. :func:`load_bpe` reads a Hugging Face ``tokenizer.json`` whose model is BPE and keeps its
   normalizer and pre-tokenizer (through the ``tokenizers`` library, so text is split exactly
   the way the tokenizer's trainer split it).
2. :func:`count_words` pre-tokenizes each domain's documents and counts the words (pre-tokens):
   one sparse ``(documents, words)`` count matrix per domain over the union of the words.
3. :func:`replay` applies the first ``T`` merges in order to every distinct word, as
   ``tokenizers``' ``BpeTrainer`` did while training (left to right, non-overlapping), and
   records how many times each adjacent pair occurs in each word before each merge. A word's
   segmentation does not depend on how often it occurs, so the replay runs once over the
   distinct words, and the pair counts of any weighting of the words (a domain, a bootstrap
   resample) are one sparse product: ``counts = replay.deltas @ word_counts``.

Pair counts follow the trainer: every adjacent position counts, overlaps included (``aaa`` holds
the pair ``(a, a)`` twice).
"""

from __future__ import annotations

import json
from array import array
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from mixopt.core.errors import DataError, TokenizerError


@dataclass(frozen=True)
class BpeModel:
    """A BPE tokenizer's ordered merges with the pre-processing its trainer applied.

    ``merges[t]`` is the pair merged at step t (0-based), as vocabulary strings. ``source`` names
    the file in messages.
    """

    source: str
    merges: tuple[tuple[str, str], ...]
    vocab: Mapping[str, int]
    prefix: str | None
    suffix: str | None
    tokenizer: Any  # tokenizers.Tokenizer: its normalizer and pre_tokenizer

    def pieces(self, text: str) -> list[str]:
        """The words (pre-tokens) the trainer counted for ``text``: normalized, then pre-tokenized."""
        tok = self.tokenizer
        if tok.normalizer is not None:
            text = tok.normalizer.normalize_str(text)
        if tok.pre_tokenizer is None:
            return [text] if text else []
        return [s for s, _ in tok.pre_tokenizer.pre_tokenize_str(text)]


def _bad(source: str, what: str) -> TokenizerError:
    return TokenizerError(f"{source}: {what}")


def _parse_merges(raw: Any, source: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, list) or not raw:
        raise _bad(source, "model.merges is empty or not a list; a BPE tokenizer.json lists its merges in order")
    out = []
    for i, m in enumerate(raw):
        if isinstance(m, str):
            parts = m.split(" ")
        elif isinstance(m, list):
            parts = m
        else:
            parts = []
        if len(parts) != 2 or not all(isinstance(x, str) and x for x in parts):
            raise _bad(source, f"model.merges[{i}] is {m!r}; each merge must be \"left right\" or [left, right]")
        out.append((parts[0], parts[1]))
    return tuple(out)


def load_bpe(tokenizer: str | Path | Any) -> BpeModel:
    """Read a Hugging Face ``tokenizer.json`` (a path) or a ``tokenizers.Tokenizer``.

    Raises TokenizerError (one line naming the file) when the file is missing or not JSON, its
    model is not BPE (WordPiece, Unigram and WordLevel have no merge list), or the ``tokenizers``
    library cannot load it.
    """
    from tokenizers import Tokenizer

    if isinstance(tokenizer, Tokenizer):
        source, text = "<tokenizers.Tokenizer>", tokenizer.to_str()
    else:
        path = Path(tokenizer).expanduser()
        source = str(tokenizer)
        if not path.is_file():
            raise _bad(source, "file not found; give a Hugging Face tokenizer.json")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise _bad(source, f"cannot read it as UTF-8 text ({e})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise _bad(source, f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); "
                   "expected a Hugging Face tokenizer.json") from None
    model = doc.get("model") if isinstance(doc, dict) else None
    if not isinstance(model, dict):
        raise _bad(source, "no \"model\" object; expected a Hugging Face tokenizer.json")
    kind = model.get("type", "BPE" if "merges" in model else None)
    if kind != "BPE":
        raise _bad(source, f"the model is {kind or 'of unknown type'}, not BPE; data mixture inference needs "
                   "a BPE merge list (WordPiece, Unigram and WordLevel tokenizers have none)")
    merges = _parse_merges(model.get("merges"), source)
    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
        raise _bad(source, "model.vocab is not a mapping token -> id")
    try:
        tok = Tokenizer.from_str(text)
    except Exception as e:  # the Rust loader raises plain Exception with its reason
        raise _bad(source, f"the tokenizers library cannot load it ({str(e).splitlines()[0] if str(e) else e!r})"
                   ) from None
    return BpeModel(source, merges, vocab, model.get("continuing_subword_prefix") or None,
                    model.get("end_of_word_suffix") or None, tok)


# ----------------------------------------------------------------------------- word counts

@dataclass(frozen=True)
class WordTable:
    """Distinct words over all domains and how often each document holds each.

    ``doc_words[i]``: CSR ``(documents of domain i, len(words))`` counts; ``doc_bytes[i]``: UTF-8
    bytes per document, shape ``(documents,)``.
    """

    domains: tuple[str, ...]
    words: list[str]
    doc_words: tuple[sp.csr_matrix, ...]
    doc_bytes: tuple[np.ndarray, ...]

    def counts(self, doc_weights: Sequence[np.ndarray] | None = None) -> np.ndarray:
        """Word counts per domain, shape ``(len(words), len(domains))``; ``doc_weights[i]`` (one
        multiplicity per document, e.g. a bootstrap resample) weights domain i's documents."""
        cols = [m.T @ (np.ones(m.shape[0]) if doc_weights is None else doc_weights[i])
                for i, m in enumerate(self.doc_words)]
        return np.stack(cols, axis=1)

    def bytes(self, doc_weights: Sequence[np.ndarray] | None = None) -> np.ndarray:
        """UTF-8 bytes per domain, shape ``(len(domains),)``."""
        return np.array([b.sum() if doc_weights is None else b @ doc_weights[i]
                         for i, b in enumerate(self.doc_bytes)], dtype=float)


def count_words(bpe: BpeModel, texts: Mapping[str, Sequence[str]]) -> WordTable:
    """Pre-tokenize every document of every domain; DataError for a domain without text."""
    word_id: dict[str, int] = {}
    words: list[str] = []
    mats, sizes = [], []
    for domain, docs in texts.items():
        rows, cols, vals = array("i"), array("i"), array("d")
        nbytes = []
        for d, text in enumerate(docs):
            if not isinstance(text, str):
                raise DataError(f"domain {domain!r}: document {d} is {type(text).__name__}, must be a string")
            for w, n in Counter(bpe.pieces(text)).items():
                i = word_id.get(w)
                if i is None:
                    i = word_id[w] = len(words)
                    words.append(w)
                rows.append(d)
                cols.append(i)
                vals.append(n)
            nbytes.append(len(text.encode("utf-8")))
        if not nbytes or sum(nbytes) == 0:
            raise DataError(f"domain {domain!r}: no text; every domain needs at least one non-empty document")
        mats.append((np.frombuffer(rows, np.int32), np.frombuffer(cols, np.int32), np.frombuffer(vals), len(nbytes)))
        sizes.append(np.array(nbytes, dtype=float))
    csr = tuple(sp.csr_matrix((v, (r, c)), shape=(n, len(words))) for r, c, v, n in mats)
    return WordTable(tuple(texts), words, csr, tuple(sizes))


# ----------------------------------------------------------------------------- replay

@dataclass(frozen=True)
class Replay:
    """Pair counts before each of the first ``T`` merges, as sparse changes over distinct words.

    States: state k is the segmentation before merge k (k = 0 .. T-1). A *group* is one
    (state, pair) whose count changed entering that state (state 0: the initial counts);
    groups are sorted by state, then pair. Shapes: ``group_pair (G,)`` pair ids in ``[0, K)``;
    ``state_ptr (T+1,)`` groups of state k are ``state_ptr[k]:state_ptr[k+1]``;
    ``deltas`` CSR ``(G, words)`` occurrence changes per word; ``chosen (T,)`` the pair id of
    merge k, or -1 when its pair occurs in no word before merge k (it cannot occur in the text);
    ``pairs[p]`` the pair's two strings.
    """

    group_pair: np.ndarray
    state_ptr: np.ndarray
    deltas: sp.csr_matrix
    chosen: np.ndarray
    pairs: list[tuple[str, str]]

    @property
    def merges(self) -> int:
        return len(self.chosen)

    def head(self, merges: int) -> Replay:
        """The same replay cut to its first ``merges`` merges."""
        T = min(merges, self.merges)
        g = int(self.state_ptr[T])
        return Replay(self.group_pair[:g], self.state_ptr[: T + 1], self.deltas[:g], self.chosen[:T], self.pairs)

    def group_counts(self, word_counts: np.ndarray) -> np.ndarray:
        """Pair count changes per group and domain, ``(G, domains)``, from ``(words, domains)`` counts."""
        return np.asarray(self.deltas @ word_counts)


def _symbols(bpe: BpeModel, words: Sequence[str]) -> tuple[list[list[int]], dict[str, int]]:
    """Each word as the trainer's initial symbols (characters; subword prefix and end-of-word suffix
    applied), as ids; characters outside the vocabulary are dropped, as the trainer dropped them."""
    sym: dict[str, int] = dict(bpe.vocab)
    next_id = max(sym.values(), default=0) + 1
    pre, suf = bpe.prefix, bpe.suffix
    seqs = []
    for w in words:
        if pre is None and suf is None:
            seq = [sym[c] for c in w if c in sym]
        else:
            seq = []
            last = len(w) - 1
            for j, c in enumerate(w):
                if c not in sym:
                    continue
                s = (pre + c if pre and j > 0 else c) + (suf if suf and j == last else "")
                if s not in sym:
                    sym[s], next_id = next_id, next_id + 1
                seq.append(sym[s])
        seqs.append(seq)
    return seqs, sym


def replay(bpe: BpeModel, words: Sequence[str], merges: int) -> Replay:
    """Apply ``bpe.merges[:merges]`` to every word in order, recording pair-count changes."""
    seqs, sym = _symbols(bpe, words)
    next_id = max(sym.values(), default=0) + 1
    shift = 1 << 40  # pair key = left * shift + right (symbol ids stay far below 2**40)
    pair_id: dict[int, int] = {}
    pairs: list[tuple[int, int]] = []
    index: dict[int, set[int]] = {}  # pair key -> words that may hold it (a superset)
    ev_state, ev_pair, ev_word, ev_delta = array("i"), array("i"), array("i"), array("i")

    def pid(key: int) -> int:
        p = pair_id.get(key)
        if p is None:
            p = pair_id[key] = len(pairs)
            pairs.append(divmod(key, shift))
        return p

    for wi, s in enumerate(seqs):
        for (a, b), n in Counter(zip(s, s[1:])).items():
            key = a * shift + b
            index.setdefault(key, set()).add(wi)
            ev_state.append(0), ev_pair.append(pid(key)), ev_word.append(wi), ev_delta.append(n)
    T = min(merges, len(bpe.merges))
    chosen = np.full(T, -1, dtype=np.int64)
    for t in range(T):
        left, right = bpe.merges[t]
        if bpe.prefix and right.startswith(bpe.prefix):
            merged = left + right[len(bpe.prefix):]
        else:
            merged = left + right
        for s in (left, right, merged):
            if s not in sym:
                sym[s], next_id = next_id, next_id + 1
        a, b, c = sym[left], sym[right], sym[merged]
        key = a * shift + b
        if key in pair_id:
            chosen[t] = pair_id[key]
        if t == T - 1:
            break  # the counts after the last merge are never needed
        for wi in index.pop(key, ()):
            s = seqs[wi]
            n_sym = len(s)
            new, i = [], 0
            while i < n_sym:
                if i + 1 < n_sym and s[i] == a and s[i + 1] == b:
                    new.append(c)
                    i += 2
                else:
                    new.append(s[i])
                    i += 1
            if len(new) == n_sym:
                continue  # stale index entry: the pair left this word earlier
            seqs[wi] = new
            old = Counter(zip(s, s[1:]))
            for (x, y), n in Counter(zip(new, new[1:])).items():
                o = old.pop((x, y), 0)
                if n != o:
                    k2 = x * shift + y
                    ev_state.append(t + 1), ev_pair.append(pid(k2)), ev_word.append(wi), ev_delta.append(n - o)
                    if o == 0:
                        index.setdefault(k2, set()).add(wi)
            for (x, y), o in old.items():
                ev_state.append(t + 1), ev_pair.append(pid(x * shift + y)), ev_word.append(wi), ev_delta.append(-o)
    return _grouped(ev_state, ev_pair, ev_word, ev_delta, chosen, pairs, sym, T, len(seqs))


def _grouped(ev_state: array, ev_pair: array, ev_word: array, ev_delta: array, chosen: np.ndarray,
             pairs: list[tuple[int, int]], sym: dict[str, int], T: int, n_words: int) -> Replay:
    state = np.frombuffer(ev_state, np.int32).astype(np.int64)
    pair = np.frombuffer(ev_pair, np.int32).astype(np.int64)
    K = max(len(pairs), 1)
    keys, inverse = np.unique(state * K + pair, return_inverse=True)
    deltas = sp.csr_matrix((np.frombuffer(ev_delta, np.int32).astype(float), (inverse, np.frombuffer(ev_word, np.int32))),
                           shape=(len(keys), n_words))
    deltas.sum_duplicates()
    g_state, g_pair = keys // K, keys % K
    state_ptr = np.searchsorted(g_state, np.arange(T + 1), side="left")
    name = {i: s for s, i in sym.items()}
    return Replay(g_pair, state_ptr, deltas, chosen, [(name[a], name[b]) for a, b in pairs])
