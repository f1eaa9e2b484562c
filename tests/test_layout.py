"""The package layout: one namespace in site-packages, layers enforced by import-linter, ruff clean.

These run in the default test run (so ``.ci/run``, which runs exactly the README's test command,
enforces them): a wheel of this checkout is installed into a temporary folder and checked there.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory) -> Path:
    """This checkout installed from a wheel into an empty folder (no dependencies)."""
    site = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                          "-w", str(build), str(ROOT)], capture_output=True, text=True, timeout=300,
                         cwd=build)
    assert res.returncode == 0, res.stderr[-2000:]
    [wheel] = build.glob("mixopt-*.whl")
    res = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return site


@pytest.mark.slow
def test_wheel_installs_one_namespace(wheel_site):
    top = sorted(p.name for p in wheel_site.iterdir() if not p.name.endswith(".dist-info") and p.name != "bin")
    assert top == ["mixopt"], top
    subs = {p.name for p in (wheel_site / "mixopt").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert {"core", "data", "search", "proxies", "study", "run", "serve", "analysis", "dashboards"} <= subs
    code = ("import mixopt.search, mixopt.proxies.gpt, mixopt.dashboards.plots, mixopt.cli; "
            "print(mixopt.search.__file__)")
    env = {**os.environ, "PYTHONPATH": str(wheel_site)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=wheel_site,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().startswith(str(wheel_site)), res.stdout


def test_editable_install_maps_the_top_level_folders():
    import mixopt.dashboards
    import mixopt.proxies
    import mixopt.search

    assert Path(mixopt.search.__file__).parent == ROOT / "search"
    assert Path(mixopt.proxies.__file__).parent == ROOT / "proxies"
    assert Path(mixopt.dashboards.__file__).parent == ROOT / "dashboards"


@pytest.mark.slow
def test_import_linter_contracts_hold(wheel_site):
    """Layers (each imports only those below), heavy dependencies in place, no import circles."""
    env = {**os.environ, "PYTHONPATH": str(wheel_site)}
    res = subprocess.run([str(BIN / "lint-imports"), str(ROOT / "pyproject.toml")], capture_output=True, text=True,
                         env=env, cwd=wheel_site, timeout=300)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "0 broken" in res.stdout


def test_ruff_passes():
    res = subprocess.run([str(BIN / "ruff"), "check", "--no-cache", "."], capture_output=True, text=True, cwd=ROOT,
                         timeout=300)
    assert res.returncode == 0, res.stdout[-4000:]
