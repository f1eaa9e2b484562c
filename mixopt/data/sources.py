"""Domain sources: named iterators of documents, and the readers behind them.

A :class:`DomainSource` lists *units* (usually files); each unit yields documents
``(doc_id, text)`` with ids that are stable across runs and machines (paths relative to the
domain root, plus ``#line`` / ``#row`` for multi-document files). :func:`select_documents`
turns a source into the documents a corpus uses: units in a seeded shuffle of their sorted
order, documents taken until ``max_bytes`` (UTF-8) is reached, the last one truncated.

User folders hold one subfolder per domain with ``.txt`` (one document per file),
``.jsonl`` / ``.jsonl.gz`` (one document per line, field ``text``) or ``.parquet`` (column
``text``) files, searched recursively. Every mistake raises :class:`DataError` naming the
file (and line or column) and what is allowed.
"""

from __future__ import annotations

import ast
import functools
import gzip
import hashlib
import json
import os
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from mixopt.core.errors import DataError

SUPPORTED_SUFFIXES = (".txt", ".jsonl", ".jsonl.gz", ".parquet")


class Document(NamedTuple):
    """One document: a stable id (hashed for the train/val split) and its text."""

    id: str
    text: str


@dataclass(frozen=True)
class Unit:
    """A readable piece of a source (a file); ``read()`` yields its documents in order."""

    id: str
    size: int
    read: Callable[[], Iterable[Document]]


class DomainSource:
    """A named document source.

    Args:
        name: the domain name (a folder name under the corpus).
        source: a one-line human description (written to the manifest).
        list_units: returns the units; called once, lazily.
        version: extra fingerprint material (package versions, extraction scheme).
    """

    def __init__(self, name: str, source: str, list_units: Callable[[], list[Unit]],
                 version: str = "") -> None:
        self.name, self.source, self.version = name, source, version
        self._list_units = list_units
        self._units: list[Unit] | None = None

    def units(self) -> list[Unit]:
        if self._units is None:
            self._units = sorted(self._list_units(), key=lambda u: u.id)
        return self._units

    def fingerprint(self) -> str:
        """sha256 over version and the sorted (unit id, size) listing; cheap (stat only)."""
        h = hashlib.sha256(f"{self.name}\0{self.version}\0".encode())
        for u in self.units():
            h.update(f"{u.id}\0{u.size}\n".encode())
        return h.hexdigest()

    def __repr__(self) -> str:
        return f"DomainSource({self.name!r}, {self.source!r})"


def select_documents(src: DomainSource, max_bytes: int | None, seed: int) -> tuple[list[Document], int]:
    """Documents of ``src`` capped at ``max_bytes`` UTF-8 bytes; returns (docs, total bytes).

    Units are visited in a seeded shuffle of their sorted order; documents are taken in order
    until the cap, the last one truncated to fit. Empty (whitespace-only) documents are skipped.
    """
    units = list(src.units())
    random.Random(f"{seed}:{src.name}").shuffle(units)
    docs: list[Document] = []
    total = 0
    for unit in units:
        for doc in unit.read():
            if not doc.text.strip():
                continue
            n = len(doc.text.encode("utf-8"))
            if max_bytes is not None and total + n > max_bytes:
                cut = doc.text.encode("utf-8")[: max_bytes - total].decode("utf-8", "ignore")
                if cut.strip():
                    docs.append(Document(doc.id, cut))
                    total += len(cut.encode("utf-8"))
                return docs, total
            docs.append(doc)
            total += n
    return docs, total


# ----------------------------------------------------------------------------- file walking

def walk_files(root: Path, suffixes: tuple[str, ...], skip_dirs: frozenset[str] = frozenset(),
               skip: Callable[[str], bool] | None = None) -> list[tuple[str, Path, int]]:
    """Files under ``root`` ending in one of ``suffixes``: (relative posix path, path, size).

    Hidden files/folders and folders named in ``skip_dirs`` are skipped; ``skip(rel)`` can
    veto more. Symlinked folders are not followed.
    """
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in skip_dirs)
        for fn in sorted(filenames):
            if fn.startswith(".") or not fn.endswith(suffixes):
                continue
            p = Path(dirpath) / fn
            rel = p.relative_to(root).as_posix()
            if skip is not None and skip(rel):
                continue
            try:
                out.append((rel, p, p.stat().st_size))
            except OSError as e:
                raise DataError(f"{p}: cannot read file ({e.strerror})") from None
    return out


def read_text_file(path: Path, strict: bool = True) -> str:
    """The file's text as UTF-8; ``strict=False`` replaces undecodable bytes."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read file ({e.strerror})") from None
    try:
        return data.decode("utf-8", "strict" if strict else "replace")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 at byte {e.start}; text files must be UTF-8") from None


def _txt_docs(path: Path, rel: str) -> Iterator[Document]:
    yield Document(rel, read_text_file(path))


def _jsonl_docs(path: Path, rel: str) -> Iterator[Document]:
    opener = gzip.open if rel.endswith(".gz") else open
    lineno = 0
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
                if not isinstance(rec, dict) or "text" not in rec:
                    raise DataError(f"{path}:{lineno}: no \"text\" field; each line must be a "
                                    "JSON object with a string field \"text\"")
                if not isinstance(rec["text"], str):
                    raise DataError(f"{path}:{lineno}: field \"text\" is "
                                    f"{type(rec['text']).__name__}, must be a string")
                yield Document(f"{rel}#{lineno}", rec["text"])
    except (OSError, EOFError, UnicodeDecodeError) as e:
        where = f"{path}:{lineno + 1}" if lineno else str(path)
        raise DataError(f"{where}: cannot read ({e}); expected UTF-8 JSON lines"
                        f"{' (gzip)' if rel.endswith('.gz') else ''}") from None


def _parquet_docs(path: Path, rel: str) -> Iterator[Document]:
    import pyarrow.parquet as pq  # heavy; only needed for parquet folders

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for bad files
        raise DataError(f"{path}: cannot read parquet file ({e})") from None
    names = pf.schema_arrow.names
    if "text" not in names:
        raise DataError(f"{path}: no column \"text\" (columns: {', '.join(names) or 'none'}); "
                        "parquet files need a string column \"text\"")
    row = 0
    for batch in pf.iter_batches(columns=["text"], batch_size=1024):
        for value in batch.column(0).to_pylist():
            if not isinstance(value, str):
                raise DataError(f"{path}: column \"text\", row {row}: "
                                f"{'null' if value is None else type(value).__name__}, must be a string")
            yield Document(f"{rel}#{row}", value)
            row += 1


_READERS = {".txt": _txt_docs, ".jsonl": _jsonl_docs, ".jsonl.gz": _jsonl_docs,
            ".parquet": _parquet_docs}


def _reader_for(rel: str) -> Callable[[Path, str], Iterator[Document]]:
    for suffix in (".jsonl.gz", ".jsonl", ".parquet", ".txt"):
        if rel.endswith(suffix):
            return _READERS[suffix]
    raise AssertionError(rel)


def folder_domain(name: str, root: Path) -> DomainSource:
    """A user domain folder: supported files searched recursively (see module docstring)."""

    def list_units() -> list[Unit]:
        if not root.is_dir():
            raise DataError(f"domain folder {root} does not exist")
        files = walk_files(root, SUPPORTED_SUFFIXES)
        if not files:
            raise DataError(f"domain folder {root} has no supported files; allowed: "
                            f"{', '.join('*' + s for s in SUPPORTED_SUFFIXES)} (searched recursively)")
        return [Unit(rel, size, functools.partial(_reader_for(rel), p, rel)) for rel, p, size in files]

    return DomainSource(name, f"folder {root}", list_units, version="folder-v1")


def folder_sources(root: Path) -> list[DomainSource]:
    """One source per non-hidden subfolder of ``root``; DataError if fewer than 2."""
    if not root.is_dir():
        raise DataError(f"recipe folder {root} does not exist; give a folder holding one "
                        "subfolder per domain")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(subdirs) < 2:
        found = ", ".join(p.name for p in subdirs) or "none"
        raise DataError(f"recipe folder {root} has {len(subdirs)} domain subfolder(s) ({found}); "
                        "need at least 2, one subfolder per domain")
    return [folder_domain(p.name, p) for p in subdirs]


# ----------------------------------------------------------------------------- docstrings

def _docstrings(tree: ast.Module, module: str) -> list[str]:
    """``qualname`` + docstring for the module and every class/function, in source order."""
    out: list[str] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}.{child.name}"
                doc = ast.get_docstring(child, clean=True)
                if doc and doc.strip():
                    out.append(f"{name}\n{doc}")
                visit(child, name)

    doc = ast.get_docstring(tree, clean=True)
    if doc and doc.strip():
        out.append(f"{module}\n{doc}")
    visit(tree, module)
    # Docs attached at run time: numpy's add_newdoc("numpy", "name", """doc""") and
    # mpmath's function_docs module (name = r"""doc""" at module level).
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "add_newdoc":
            for arg in node.args[2:]:
                parts = arg.elts if isinstance(arg, ast.Tuple) else [arg]
                out += [p.value.strip() for p in parts
                        if isinstance(p, ast.Constant) and isinstance(p.value, str) and "\n" in p.value]
    for node in tree.body:
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str) and node.value.value.count("\n") >= 3
                and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            out.append(f"{module}.{node.targets[0].id}\n{node.value.value.strip()}")
    return out


def module_docstrings(path: Path, module: str) -> str:
    """All docstrings of one Python file, parsed with ``ast`` (never imported); '' if unparsable."""
    try:
        tree = ast.parse(read_text_file(path, strict=False), filename=str(path))
    except (SyntaxError, ValueError):
        return ""
    return "\n\n".join(_docstrings(tree, module))


def _docstring_docs(path: Path, rel: str, module: str) -> Iterator[Document]:
    yield Document(rel, module_docstrings(path, module))


def docstring_units(root: Path, package: str, skip_dirs: frozenset[str]) -> list[Unit]:
    """One unit (and one document: all its docstrings) per ``.py`` file under ``root``."""
    units = []
    for rel, p, size in walk_files(root, (".py",), skip_dirs):
        mod = ".".join([package, *rel[:-3].split("/")]).removesuffix(".__init__")
        units.append(Unit(f"{package}/{rel}", size,
                          functools.partial(_docstring_docs, p, f"{package}/{rel}", mod)))
    return units


def file_units(root: Path, suffixes: tuple[str, ...], prefix: str = "",
               transform: Callable[[str], str] = lambda s: s,
               skip_dirs: frozenset[str] = frozenset(),
               skip: Callable[[str], bool] | None = None) -> list[Unit]:
    """One unit and one document per file under ``root``, text passed through ``transform``."""

    def read(p: Path, doc_id: str) -> Iterator[Document]:
        yield Document(doc_id, transform(read_text_file(p, strict=False)))

    return [Unit(prefix + rel, size, functools.partial(read, p, prefix + rel))
            for rel, p, size in walk_files(root, suffixes, skip_dirs, skip)]
