"""Data mixture inference (issue 21): replay exactness, recovery of a known mixture, the CLI and bad inputs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import yaml

from mixopt.analysis.bpe_replay import count_words, load_bpe, replay
from mixopt.analysis.infer_mixture import infer_mixture
from mixopt.cli import main
from mixopt.core.errors import DataError, TokenizerError
from mixopt.core.mixture import Mixture
from mixopt.data.shards import train_bpe

SYLLABLES = {  # each domain draws its words from its own syllables, so its pair statistics differ
    "code": ["def", "ret", "self", "imp", "ort", "lam", "cls", "arg", "kw", "_", "x", "(", ")", ":"],
    "legal": ["li", "cen", "se", "war", "ran", "ty", "cop", "yr", "ight", "hold", "er", "no", "tice"],
    "prose": ["the", "ki", "ng", "que", "en", "wa", "lk", "ed", "gar", "den", "bi", "rd", "sa", "ng"],
}


def _vocab(domain: str, rng: random.Random, n: int = 300) -> tuple[list[str], list[float]]:
    syl = SYLLABLES[domain]
    words = list(dict.fromkeys("".join(rng.choice(syl) for _ in range(rng.randint(1, 4))) for _ in range(4 * n)))[:n]
    return words, [1.0 / (r + 1) for r in range(len(words))]  # Zipf frequencies


def synthetic_docs(domain: str, nbytes: int, seed: int) -> list[str]:
    """Documents of ~2 KB of words drawn i.i.d. from the domain's (fixed) Zipfian vocabulary."""
    words, freq = _vocab(domain, random.Random(domain))
    rng = random.Random(f"{domain}:{seed}")
    docs, total = [], 0
    while total < nbytes:
        doc = " ".join(rng.choices(words, freq, k=400))
        docs.append(doc)
        total += len(doc)
    return docs


def train_on(weights: dict[str, float], total: int, merges: int, seed: int = 0):
    """(tokenizer, true byte shares, training texts by domain) for a mixture of ``total`` bytes."""
    texts = {d: synthetic_docs(d, int(w * total), seed) for d, w in weights.items()}
    tok = train_bpe([t for docs in texts.values() for t in docs], 257 + merges)
    nbytes = {d: sum(len(t) for t in docs) for d, docs in texts.items()}
    return tok, {d: b / sum(nbytes.values()) for d, b in nbytes.items()}, texts


@pytest.fixture(scope="module")
def known(tmp_path_factory) -> dict:
    """A tokenizer trained on a known mixture (300 KB), its true byte shares and its training texts."""
    tok, truth, texts = train_on({"code": 0.5, "legal": 0.3, "prose": 0.2}, 300_000, 400)
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return {"path": path, "truth": truth, "texts": texts}


def test_replay_counts_match_naive_merging(known) -> None:
    """Pair counts before every merge equal those of applying the merges one by one to each word."""
    bpe = load_bpe(known["path"])
    words = sorted({w for doc in known["texts"]["code"][:3] for w in bpe.pieces(doc)})
    T = 60
    rp = replay(bpe, words, T)
    step = rp.group_counts(np.ones((len(words), 1)))[:, 0]
    current: dict[tuple[str, str], float] = {}
    seqs = [list(w) for w in words]
    for k in range(T):
        for g in range(rp.state_ptr[k], rp.state_ptr[k + 1]):
            pair = rp.pairs[rp.group_pair[g]]
            current[pair] = current.get(pair, 0) + step[g]
        naive: dict[tuple[str, str], int] = {}
        for s in seqs:
            for pair in zip(s, s[1:]):
                naive[pair] = naive.get(pair, 0) + 1
        assert {p: c for p, c in current.items() if c} == naive, f"before merge {k}"
        a, b = bpe.merges[k]
        for i, s in enumerate(seqs):
            out, j = [], 0
            while j < len(s):
                if j + 1 < len(s) and s[j] == a and s[j + 1] == b:
                    out.append(a + b)
                    j += 2
                else:
                    out.append(s[j])
                    j += 1
            seqs[i] = out


def test_training_text_gives_the_exact_mixture(known) -> None:
    """On the tokenizer's own training text every constraint holds without slack: the byte shares come back."""
    res = infer_mixture(known["path"], known["texts"], merges=400)
    assert res.slack == pytest.approx(0.0, abs=1e-6)
    assert res.missing == 0 and res.merges == 400
    for d, w in known["truth"].items():
        assert res.mixture[d] == pytest.approx(w, abs=2e-3)


def test_known_mixture_recovered_from_other_samples(known) -> None:
    """Fresh samples of the same domains (another seed, 50 KB per domain) recover the mixture.

    Tolerance 0.02 per weight: over six fresh samples (seeds 1-3, 50 and 150 KB per domain) the
    largest error was 0.005, and the bootstrap's 90% intervals are about 0.005 wide.
    """
    samples = {d: synthetic_docs(d, 50_000, seed=1) for d in known["truth"]}
    res = infer_mixture(known["path"], samples, merges=400, bootstrap=3, seed=3)
    err = max(abs(res.mixture[d] - w) for d, w in known["truth"].items())
    assert err < 0.02, (res.mixture, known["truth"])
    assert set(res.intervals) == set(known["truth"])
    for lo, hi in res.intervals.values():
        assert 0 <= lo <= hi <= 1
    assert res.seconds["total"] > 0 and res.rounds >= 1 and res.bootstrap == 3


def _folder(root: Path, texts: dict[str, list[str]]) -> Path:
    for d, docs in texts.items():
        (root / d).mkdir(parents=True)
        for i, t in enumerate(docs):
            (root / d / f"doc{i:03d}.txt").write_text(t)
    return root


def test_cli_writes_a_mixture_transfer_reads(known, tmp_path, capsys) -> None:
    folder = _folder(tmp_path / "domains", {d: synthetic_docs(d, 40_000, seed=2) for d in known["truth"]})
    out = tmp_path / "mixture.yaml"
    rc = main(["infer-mixture", "--tokenizer", str(known["path"]), "--recipe", str(folder), "--merges", "300",
               "--sample-mb", "0.03", "--bootstrap", "2", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "code" in text and "interval" in text
    doc = yaml.safe_load(out.read_text())
    m = Mixture.from_file(out, list(known["truth"]))
    assert set(m) == set(known["truth"]) and set(doc["intervals"]) == set(known["truth"])
    assert doc["inferred_from"]["merges"] == 300
    assert main(["infer-mixture", "--tokenizer", str(known["path"]), "--recipe", str(folder), "--merges", "100",
                 "--sample-mb", "0.03", "--bootstrap", "0", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert abs(sum(res["mixture"].values()) - 1) < 1e-9 and res["intervals"] == {}


def _wordpiece(path: Path) -> Path:
    from tokenizers import Tokenizer, models

    Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1, "##b": 2}, unk_token="[UNK]")).save(str(path))
    return path


def _unigram(path: Path) -> Path:
    from tokenizers import Tokenizer, models

    Tokenizer(models.Unigram([("<unk>", 0.0), ("a", -1.0), ("b", -2.0)], 0)).save(str(path))
    return path


def _foreign(path: Path) -> Path:
    rng = random.Random(0)
    text = ["".join(rng.choice("汉字数据混合推断分词器训练语料") for _ in range(2000)) for _ in range(20)]
    train_bpe(text, 400).save(str(path))
    return path


@pytest.mark.parametrize("case", ["wordpiece", "unigram", "malformed", "missing_file", "empty_domain", "no_folder",
                                  "foreign_merges", "bad_merges_arg"])
def test_cli_bad_input_one_line_exit_2_nothing_written(known, tmp_path, capsys, case) -> None:
    folder = _folder(tmp_path / "domains", {d: synthetic_docs(d, 20_000, seed=2) for d in ("code", "legal")})
    tok, recipe, extra = str(known["path"]), str(folder), []
    if case == "wordpiece":
        tok = str(_wordpiece(tmp_path / "wp.json"))
    elif case == "unigram":
        tok = str(_unigram(tmp_path / "ug.json"))
    elif case == "malformed":
        (tmp_path / "bad.json").write_text('{"model": {"type": "BPE", "merges": [')
        tok = str(tmp_path / "bad.json")
    elif case == "missing_file":
        tok = str(tmp_path / "nope.json")
    elif case == "empty_domain":
        (folder / "empty").mkdir()
        (folder / "empty" / "blank.txt").write_text("   \n")
    elif case == "no_folder":
        recipe = str(tmp_path / "no" / "such" / "folder")
    elif case == "foreign_merges":
        tok = str(_foreign(tmp_path / "zh.json"))
    elif case == "bad_merges_arg":
        extra = ["--merges", "0"]
    out = tmp_path / "out.yaml"
    rc = main(["infer-mixture", "--tokenizer", tok, "--recipe", recipe, "--sample-mb", "0.02", "--bootstrap", "0",
               "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("mixopt: error:"), err
    assert not out.exists()
    expected = {"wordpiece": "not BPE", "unigram": "not BPE", "malformed": "not valid JSON", "missing_file": "not found",
                "empty_domain": "'empty'", "no_folder": "does not exist", "foreign_merges": "occur in none",
                "bad_merges_arg": "merges"}[case]
    assert expected in err


def test_api_errors_are_user_errors(known) -> None:
    with pytest.raises(DataError, match="at least 2"):
        infer_mixture(known["path"], {"code": ["def x"]})
    with pytest.raises(DataError, match="'legal': no text"):
        infer_mixture(known["path"], {"code": ["def x(self)"], "legal": ["", "  "]})
    with pytest.raises(TokenizerError, match="not valid JSON"):
        load_bpe(Path(__file__))
    table = count_words(load_bpe(known["path"]), {"a": ["xx yy"], "b": ["zz"]})
    assert table.counts().shape == (len(table.words), 2)


def test_subword_prefix_and_suffix_tokenizers_replay_exactly(known, tmp_path) -> None:
    """A BPE trained with a continuing-subword prefix and an end-of-word suffix (whitespace pre-tokenizer,
    no byte level) is replayed as its trainer counted: its own training text needs no slack."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="[UNK]", continuing_subword_prefix="##", end_of_word_suffix="</w>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=["[UNK]"], continuing_subword_prefix="##",
                                  end_of_word_suffix="</w>", show_progress=False)
    texts = {d: docs[:20] for d, docs in known["texts"].items()}
    tok.train_from_iterator([t for docs in texts.values() for t in docs], trainer)
    path = tmp_path / "wp-style-bpe.json"
    tok.save(str(path))
    res = infer_mixture(path, texts, merges=150)
    assert res.slack == pytest.approx(0.0, abs=1e-6) and res.missing == 0


def test_val_split_takes_only_held_out_documents(tmp_path) -> None:
    from mixopt.analysis.infer_mixture import sample_texts
    from mixopt.data import split_documents
    from mixopt.data.sources import Document

    texts = {d: [f"{d} document {i} " * 20 for i in range(40)] for d in ("code", "legal")}
    folder = _folder(tmp_path / "domains", texts)
    val = sample_texts(str(folder), None, split="val", val_fraction=0.2)
    for d, docs in texts.items():
        held = split_documents([Document(f"doc{i:03d}.txt", t) for i, t in enumerate(docs)], 0.2, d)[1]
        assert sorted(val[d]) == sorted(x.text for x in held) and 0 < len(val[d]) < len(docs)
    capped = sample_texts(str(folder), 500, split="train", val_fraction=0.2)
    assert all(sum(len(t) for t in v) <= 500 for v in capped.values())
