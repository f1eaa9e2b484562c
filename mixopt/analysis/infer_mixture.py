"""What was this tokenizer trained on? Data mixture inference from a BPE merge list.

Hayase, Liu, Choi, Oh and Smith, "Data Mixture Inference: What do BPE Tokenizers Reveal about
their Training Data?" (arXiv 2407.16607). A BPE trainer merges, at every step, the pair that is
most frequent in its training data; so if that data mixes domains with shares ``alpha`` of its
pairs, the pair merged at step t must be the most frequent one in the alpha-weighted pair counts
of the domains *after the first t merges*. :func:`infer_mixture`:

1. samples each domain's text (a recipe, sampled by :func:`sample_texts`, or texts given);
2. pre-tokenizes it the way the tokenizer does and replays the first T merges on it, keeping
   every pair's count in every domain at every step (:mod:`mixopt.analysis.bpe_replay`);
3. solves the paper's linear program, with a slack per merge and per pair for the difference
   between our samples and the training data, lazily with HiGHS (:mod:`mixopt.analysis.mixture_lp`);
4. turns pair shares into byte shares with each sample's bytes per pair:
   ``w_i ~ alpha_i * B_i / P_i`` (B: bytes, P: initial pairs of domain i's sample);
5. optionally bootstraps: every domain's documents are resampled with replacement, the counts
   recomputed from the same replay (one sparse product) and the program solved again (warm, from
   the rows the first solve needed); the interval is the central ``level`` range of each weight.

How well this works, and how fast, for T and the sample size: ``bench/bench_infer_mixture.py``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mixopt.analysis.bpe_replay import BpeModel, Replay, WordTable, count_words, load_bpe, replay
from mixopt.analysis.mixture_lp import Counts, solve
from mixopt.core.errors import DataError, TokenizerError, UserError
from mixopt.core.mixture import Mixture
from mixopt.data.corpus import default_cache_dir, split_documents
from mixopt.data.recipes import resolve_recipe
from mixopt.data.sources import select_documents

SAMPLE_BYTES = 8_000_000  # per domain; see infer_mixture's docstring
SPLITS = ("all", "train", "val")


@dataclass(frozen=True)
class InferredMixture:
    """The result of :func:`infer_mixture`.

    ``mixture``: inferred byte shares of the tokenizer's training data. ``intervals``: per domain
    the bootstrap ``level`` interval ``(low, high)`` (empty without bootstrap). ``pair_shares``:
    the LP's solution (shares of initial pairs). ``merges``: merges used (T); ``missing``:
    how many of them occur in none of the samples (their constraints are skipped).
    ``seconds``: ``sample`` (reading and pre-tokenizing), ``replay``, ``solve``, ``bootstrap``,
    ``total``.
    """

    mixture: Mixture
    intervals: Mapping[str, tuple[float, float]]
    pair_shares: Mapping[str, float]
    merges: int
    missing: int
    sample_bytes: Mapping[str, int]
    documents: Mapping[str, int]
    constraints: int
    rounds: int
    slack: float
    status: str
    bootstrap: int
    level: float
    seconds: Mapping[str, float] = field(default_factory=dict)
    tokenizer: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain data: the mixture (``{"mixture": {domain: weight}, ...}``, the format mixture files use)."""
        return {"mixture": self.mixture.to_dict(),
                "intervals": {d: [lo, hi] for d, (lo, hi) in self.intervals.items()},
                "level": self.level, "bootstrap": self.bootstrap, "tokenizer": self.tokenizer,
                "merges": self.merges, "missing_merges": self.missing,
                "pair_shares": dict(self.pair_shares), "sample_bytes": dict(self.sample_bytes),
                "documents": dict(self.documents), "constraints": self.constraints, "rounds": self.rounds,
                "slack": self.slack, "lp_status": self.status, "seconds": dict(self.seconds)}


# ----------------------------------------------------------------------------- samples

def sample_texts(recipe: str, sample_bytes: int | None = SAMPLE_BYTES, seed: int = 0, split: str = "all",
                 val_fraction: float = 0.05, cache_dir: str | Path | None = None) -> dict[str, list[str]]:
    """Each domain's sample: ``{domain: [document text]}`` from a recipe name or folder.

    Documents come in a seeded shuffle of the domain's files (:func:`mixopt.data.select_documents`)
    up to ``sample_bytes`` UTF-8 bytes (the last one cut). ``split="val"`` keeps only documents a
    mixopt corpus holds out for validation (sha1 of the document id < ``val_fraction``), which
    mixopt's own tokenizer never saw; ``"train"`` only the others; ``"all"`` every document.
    """
    if split not in SPLITS:
        raise UserError(f"split: {split!r} is unknown; allowed: {', '.join(SPLITS)}")
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    _, _, sources = resolve_recipe(recipe, cache)
    out: dict[str, list[str]] = {}
    for src in sources:
        if split == "all":
            docs, _ = select_documents(src, sample_bytes, seed)
        else:
            docs, _ = select_documents(src, None, seed)
            train, val = split_documents(docs, val_fraction, f"domain {src.name!r}")
            docs, total, kept = (val if split == "val" else train), 0, []
            for d in docs:
                n = len(d.text.encode("utf-8"))
                if sample_bytes is not None and total + n > sample_bytes:
                    kept.append(d._replace(text=d.text.encode("utf-8")[: sample_bytes - total].decode("utf-8", "ignore")))
                    break
                kept.append(d)
                total += n
            docs = kept
        out[src.name] = [d.text for d in docs]
    return out


# ----------------------------------------------------------------------------- the public API

def _byte_shares(alpha: np.ndarray, B: np.ndarray, P: np.ndarray) -> np.ndarray:
    """Pair shares -> byte shares: ``w_i ~ alpha_i * B_i / P_i`` (B: sample bytes, P: initial pairs)."""
    w = alpha * B / np.where(P > 0, P, 1.0)
    return w / w.sum() if w.sum() > 0 else np.full(len(w), 1.0 / len(w))


def _texts(recipe_or_texts: Any, sample_bytes: int | None, seed: int, split: str,
           cache_dir: str | Path | None) -> dict[str, list[str]]:
    if isinstance(recipe_or_texts, (str, Path)):
        texts = sample_texts(str(recipe_or_texts), sample_bytes, seed, split, cache_dir=cache_dir)
    elif isinstance(recipe_or_texts, Mapping):
        texts = {}
        for d, docs in recipe_or_texts.items():
            if not isinstance(d, str) or not d:
                raise DataError(f"texts: domain names must be non-empty strings, got {d!r}")
            if isinstance(docs, str) or not isinstance(docs, Sequence):
                raise DataError(f"texts[{d!r}]: must be a list of document strings, got {type(docs).__name__}")
            texts[d] = list(docs)
    else:
        raise UserError(f"recipe_or_texts: {type(recipe_or_texts).__name__} is not allowed; give a recipe "
                        "('pip', 'debian' or a folder with one subfolder per domain) or {domain: [texts]}")
    if len(texts) < 2:
        raise DataError(f"domains: {len(texts)} given ({', '.join(texts) or 'none'}); inference needs at least 2")
    for d, docs in texts.items():
        if not any(isinstance(t, str) and t.strip() for t in docs):
            raise DataError(f"domain {d!r}: no text; every domain needs at least one non-empty document")
    return texts


def _check_args(merges: int, bootstrap: int, level: float, max_missing: float, sample_bytes: int | None) -> None:
    def bad(name: str, v: Any, allowed: str) -> UserError:
        return UserError(f"{name}: {v!r} is invalid; allowed: {allowed}")

    if isinstance(merges, bool) or not isinstance(merges, int) or merges < 1:
        raise bad("merges", merges, "an integer >= 1")
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 0:
        raise bad("bootstrap", bootstrap, "an integer >= 0")
    if not (isinstance(level, (int, float)) and 0 < level < 1):
        raise bad("level", level, "a number in (0, 1)")
    if not (isinstance(max_missing, (int, float)) and 0 <= max_missing <= 1):
        raise bad("max_missing", max_missing, "a number in [0, 1]")
    if sample_bytes is not None and (isinstance(sample_bytes, bool) or not isinstance(sample_bytes, int)
                                     or sample_bytes < 1):
        raise bad("sample_bytes", sample_bytes, "a positive integer or None")


def infer_mixture(tokenizer: str | Path | Any, recipe_or_texts: str | Path | Mapping[str, Sequence[str]], *,
                  merges: int = 3000, sample_bytes: int | None = SAMPLE_BYTES, split: str = "all",
                  bootstrap: int = 0, level: float = 0.9, seed: int = 0, max_missing: float = 0.1,
                  cache_dir: str | Path | None = None) -> InferredMixture:
    """Infer the mixture of domains a BPE tokenizer was trained on (Hayase et al., arXiv 2407.16607).

    Args:
        tokenizer: path to a Hugging Face ``tokenizer.json`` with a BPE model, or a ``tokenizers.Tokenizer``.
        recipe_or_texts: ``"pip"``, ``"debian"``, a folder with one subfolder per domain, or
            ``{domain: [document text]}`` (used as given).
        merges: T, how many of the first merges give constraints (all when there are fewer).
        sample_bytes: UTF-8 bytes per domain read from a recipe (default 8 MB; None: everything). The error
            falls with the sample (``bench/bench_infer_mixture.py``: on the pip domains, mean MSE 1.0e-3 from
            1 MB per domain, about 3e-4 from all of each domain's other half, 1 to 7 MB); pre-tokenizing
            costs about 1 s per MB on one core.
        split: which of a recipe's documents: ``all``, ``val`` (held out by a mixopt corpus) or ``train``.
        bootstrap: resamples of every domain's documents for the intervals (0: none).
        level: central probability of the intervals.
        seed: which documents are sampled (recipes) and the bootstrap resamples.
        max_missing: largest share of the T merges allowed to occur in none of the samples; beyond it
            the domains do not cover the tokenizer's data and TokenizerError is raised.

    Raises UserError subclasses (one line) for a bad tokenizer file, empty or unknown domains and bad arguments.

    Example:
        >>> res = infer_mixture("tokenizer.json", "pip", merges=3000, bootstrap=20)  # doctest: +SKIP
        >>> res.mixture, res.intervals["code"]  # doctest: +SKIP
    """
    t0 = time.perf_counter()
    _check_args(merges, bootstrap, level, max_missing, sample_bytes)
    bpe = load_bpe(tokenizer)
    table = count_words(bpe, _texts(recipe_or_texts, sample_bytes, seed, split, cache_dir))
    return infer_from_words(bpe, table, merges=merges, bootstrap=bootstrap, level=level, seed=seed,
                            max_missing=max_missing, sample_seconds=time.perf_counter() - t0)


def infer_from_words(bpe: BpeModel, table: WordTable, *, merges: int = 3000, bootstrap: int = 0, level: float = 0.9,
                     seed: int = 0, max_missing: float = 0.1, replayed: Replay | None = None,
                     sample_seconds: float = 0.0) -> InferredMixture:
    """:func:`infer_mixture` from samples already pre-tokenized (:func:`mixopt.analysis.bpe_replay.count_words`);
    ``replayed``: a replay of ``bpe`` on ``table.words`` over at least ``merges`` merges, to reuse."""
    _check_args(merges, bootstrap, level, max_missing, None)
    t1 = time.perf_counter()
    rp = replay(bpe, table.words, merges) if replayed is None else replayed.head(merges)
    counts = Counts.build(rp, table.counts())
    B = table.bytes()
    for d, p in zip(table.domains, counts.P):
        if p <= 0:
            raise DataError(f"domain {d!r}: its text has no two adjacent symbols in any word; nothing to count")
    missing = int((~counts.live).sum())
    if missing > max_missing * rp.merges:
        k = int(np.flatnonzero(~counts.live)[0])
        raise TokenizerError(
            f"{bpe.source}: {missing} of the first {rp.merges} merges ({missing / rp.merges:.0%}) occur in none of "
            f"the domains' text (the first: merge {k} {bpe.merges[k][0]!r} + {bpe.merges[k][1]!r}), so the tokenizer "
            f"was trained on other text than these domains; allowed: at most {max_missing:.0%} (max_missing)")
    t2 = time.perf_counter()
    sol, prog, rounds = solve(counts, len(rp.pairs))
    w = _byte_shares(sol.alpha, B, counts.P)
    t3 = time.perf_counter()
    intervals: dict[str, tuple[float, float]] = {}
    if bootstrap:
        rng = np.random.default_rng(seed)
        draws = []
        for _ in range(bootstrap):
            mult = [rng.multinomial(len(b), np.full(len(b), 1.0 / len(b))).astype(float) for b in table.doc_bytes]
            cb = Counts.build(rp, table.counts(mult))
            ab = solve(cb, len(rp.pairs), warm=prog, stable_rounds=2, stable_tol=1e-4)[0].alpha  # 1e-4: ample
            draws.append(_byte_shares(ab, table.bytes(mult), cb.P))
        q = np.quantile(np.array(draws), [(1 - level) / 2, (1 + level) / 2], axis=0)
        intervals = {d: (float(q[0, i]), float(q[1, i])) for i, d in enumerate(table.domains)}
    t4 = time.perf_counter()
    return InferredMixture(
        mixture=Mixture.from_array(w, list(table.domains)), intervals=intervals,
        pair_shares=dict(zip(table.domains, (sol.alpha / sol.alpha.sum()).tolist())), merges=rp.merges, missing=missing,
        sample_bytes={d: int(b) for d, b in zip(table.domains, B)},
        documents={d: int(m.shape[0]) for d, m in zip(table.domains, table.doc_words)},
        constraints=prog.added, rounds=rounds, slack=sol.objective, status=sol.status, bootstrap=bootstrap, level=level,
        seconds={"sample": sample_seconds, "replay": t2 - t1, "solve": t3 - t2, "bootstrap": t4 - t3,
                 "total": sample_seconds + t4 - t1},
        tokenizer=bpe.source)
