"""User folders (txt, jsonl, jsonl.gz, parquet) -> corpus, and every bad input -> DataError."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from mixopt.core.errors import DataError
from mixopt.data import Corpus, folder_sources, prepare_corpus, select_documents


def _docs(domain: str, n: int) -> list[str]:
    return [f"{domain} document {i}: " + f"some text about {domain} number {i}. " * (i % 4 + 1)
            for i in range(n)]


def write_domain(folder: Path, fmt: str, texts: list[str]) -> None:
    folder.mkdir(parents=True)
    if fmt == "txt":
        for i, t in enumerate(texts):
            sub = folder / ("nested" if i % 2 else "")
            sub.mkdir(exist_ok=True)
            (sub / f"doc{i:03d}.txt").write_text(t, encoding="utf-8")
    elif fmt == "jsonl":
        (folder / "a.jsonl").write_text("".join(json.dumps({"text": t, "id": i}) + "\n"
                                                for i, t in enumerate(texts)))
    elif fmt == "jsonl.gz":
        with gzip.open(folder / "a.jsonl.gz", "wt", encoding="utf-8") as f:
            f.writelines(json.dumps({"text": t}) + "\n" for t in texts)
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"text": texts, "n": list(range(len(texts)))}), folder / "a.parquet")
    else:
        raise AssertionError(fmt)


def quiet(line: str) -> None:
    pass


@pytest.mark.parametrize("fmt", ["txt", "jsonl", "jsonl.gz", "parquet"])
def test_each_format_becomes_a_corpus(tmp_path: Path, fmt: str) -> None:
    root = tmp_path / "data"
    texts = {"alpha": _docs("alpha", 30), "beta": _docs("beta ünïcødé 字", 25)}
    for name, t in texts.items():
        write_domain(root / name, fmt, t)
    c = prepare_corpus(str(root), tokenizer="bytes", out_dir=tmp_path / "c", progress=quiet)
    assert c.domains == ["alpha", "beta"]
    for name, t in texts.items():
        e = c.manifest["domains"][name]
        assert e["train_docs"] + e["val_docs"] == len(t)
        assert e["val_docs"] >= 1 and e["train_docs"] >= 1
        assert e["bytes"] == sum(len(x.encode()) for x in t)
        # every token is accounted for: bytes of the text + one eot per document
        assert e["train_tokens"] + e["val_tokens"] == e["bytes"] + len(t)
        got = set()
        for split in ("train", "val"):
            arr = c.tokens(name, split)
            assert arr[-1] == c.eot
            got |= {bytes(d).decode("utf-8") for d in _split_eot(arr.tolist(), c.eot)}
        assert got == set(t)


def _split_eot(ids: list[int], eot: int) -> list[list[int]]:
    out, cur = [], []
    for i in ids:
        if i == eot:
            out.append(cur)
            cur = []
        else:
            cur.append(i)
    return out


def test_cap_is_deterministic_and_respected(tmp_path: Path) -> None:
    write_domain(tmp_path / "d" / "a", "txt", _docs("a", 60))
    write_domain(tmp_path / "d" / "b", "txt", _docs("b", 5))
    src = folder_sources(tmp_path / "d")[0]
    docs1, n1 = select_documents(src, 2000, seed=0)
    docs2, n2 = select_documents(src, 2000, seed=0)
    docs3, _ = select_documents(src, 2000, seed=1)
    assert docs1 == docs2 and n1 == n2 <= 2000
    assert n1 == sum(len(d.text.encode()) for d in docs1)
    assert n1 > 2000 - 200  # filled up to the cap, last document truncated
    assert [d.id for d in docs1] != [d.id for d in docs3]  # the seed changes the sample


@pytest.mark.parametrize("case", ["empty_domain", "unsupported_only", "one_domain",
                                  "missing_root", "one_document", "not_utf8"])
def test_bad_folders_raise_data_error_naming_the_path(tmp_path: Path, case: str) -> None:
    root = tmp_path / "data"
    write_domain(root / "good", "txt", _docs("good", 5))
    bad = root / "bad"
    if case == "empty_domain":
        bad.mkdir()
    elif case == "unsupported_only":
        bad.mkdir()
        (bad / "notes.md").write_text("# not a supported file\n")
    elif case == "one_domain":
        pass
    elif case == "missing_root":
        root = tmp_path / "nowhere"
    elif case == "one_document":
        write_domain(bad, "txt", ["only one"])
    elif case == "not_utf8":
        write_domain(bad, "txt", _docs("bad", 3))
        (bad / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(DataError) as ei:
        prepare_corpus(str(root), tokenizer="bytes", out_dir=tmp_path / "c", progress=quiet)
    msg = str(ei.value)
    assert "\n" not in msg
    expected = {"empty_domain": str(bad), "unsupported_only": "*.jsonl", "one_domain": str(root),
                "missing_root": str(root), "one_document": "bad",
                "not_utf8": str(bad / "latin1.txt")}[case]
    assert expected in msg
    if case == "unsupported_only":
        assert str(bad) in msg


def test_jsonl_line_without_text_names_file_and_line(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_domain(root / "good", "jsonl", _docs("good", 5))
    (root / "bad").mkdir()
    (root / "bad" / "x.jsonl").write_text('{"text": "fine"}\n\n{"body": "no text"}\n')
    with pytest.raises(DataError, match=r"x\.jsonl:3: no \"text\" field"):
        prepare_corpus(str(root), tokenizer="bytes", out_dir=tmp_path / "c", progress=quiet)
    (root / "bad" / "x.jsonl").write_text('{"text": "fine"}\n{"text": 3}\n')
    with pytest.raises(DataError, match=r"x\.jsonl:2: field \"text\" is int"):
        prepare_corpus(str(root), tokenizer="bytes", out_dir=tmp_path / "c", progress=quiet)
    (root / "bad" / "x.jsonl").write_text('{"text": "fine"}\n{"text": oops}\n')
    with pytest.raises(DataError, match=r"x\.jsonl:2: invalid JSON"):
        prepare_corpus(str(root), tokenizer="bytes", out_dir=tmp_path / "c", progress=quiet)


def test_corrupt_gzip_and_parquet_without_text(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "data"
    write_domain(root / "good", "jsonl.gz", _docs("good", 5))
    (root / "bad").mkdir()
    (root / "bad" / "x.jsonl.gz").write_bytes(b"definitely not gzip")
    with pytest.raises(DataError, match=r"x\.jsonl\.gz.*cannot read"):
        prepare_corpus(str(root), tokenizer="bytes", out_dir=tmp_path / "c", progress=quiet)
    (root / "bad" / "x.jsonl.gz").unlink()
    pq.write_table(pa.table({"content": ["a", "b"]}), root / "bad" / "y.parquet")
    with pytest.raises(DataError, match=r"y\.parquet: no column \"text\" \(columns: content\)"):
        prepare_corpus(str(root), tokenizer="bytes", out_dir=tmp_path / "c", progress=quiet)


def test_unknown_recipe_and_unprepared_corpus(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"unknown recipe 'pipp'; allowed: pip, debian"):
        prepare_corpus("pipp", progress=quiet, cache_dir=tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        prepare_corpus(str(tmp_path / "no" / "such"), progress=quiet, cache_dir=tmp_path)
    with pytest.raises(DataError, match="mixopt data prepare"):
        Corpus.open(tmp_path)
