"""Import mixopt from this checkout, installed or not (a bare GPU node has only the source tree).

The installed layout maps the top-level folders ``proxies/``, ``search/`` and ``dashboards/`` to
``mixopt.proxies``, ``mixopt.search`` and ``mixopt.dashboards`` (``package-dir`` in
pyproject.toml). :func:`use_checkout` puts a meta-path finder in front that does the same from
this checkout, so ``import mixopt`` works without ``pip install`` and always runs the code
next to this file (an editable install of this checkout resolves to the same files).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: package -> its folder in the checkout (as pyproject.toml's [tool.setuptools] package-dir)
FOLDERS = {"mixopt": "mixopt", "mixopt.proxies": "proxies", "mixopt.search": "search",
           "mixopt.dashboards": "dashboards"}


class CheckoutFinder(importlib.abc.MetaPathFinder):
    """Finds the packages of :data:`FOLDERS` in :data:`ROOT`; their submodules follow their ``__path__``."""

    def find_spec(self, name: str, path=None, target=None) -> importlib.machinery.ModuleSpec | None:
        folder = FOLDERS.get(name)
        if folder is None:
            return None
        return importlib.util.spec_from_file_location(name, ROOT / folder / "__init__.py",
                                                      submodule_search_locations=[str(ROOT / folder)])


def use_checkout() -> Path:
    """Make ``mixopt`` (and its mapped sub-packages) import from this checkout -> its folder.

    Raises:
        ImportError: mixopt was imported from elsewhere before this was called.
    """
    if not any(isinstance(f, CheckoutFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, CheckoutFinder())
    import mixopt

    where = Path(mixopt.__file__).resolve().parent
    if where != ROOT / "mixopt":
        raise ImportError(f"mixopt was already imported from {where}, not from this checkout ({ROOT})")
    return where
