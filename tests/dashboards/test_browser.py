"""The dashboard and the MLflow UI in a real headless Chromium (Debian's chromium + chromedriver).

A real `mlflow server` and the dashboard (`python -m mixopt.dashboards.cli dashboard`) on 127.0.0.1,
a tiny finished study run against the server; pages are checked for what a person sees.
Screenshots go to ``$MIXOPT_TEST_ARTIFACTS/screenshots`` (default: pytest's temp folder).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import free_port, study_yaml, wait_http, write_domains

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-quic", "--window-size=1280,2000"]


def _ensure_chromium() -> tuple[str, str]:
    """Debian's chromium and chromedriver: installed here (as root, bounded time) when missing."""
    found = shutil.which("chromium"), shutil.which("chromedriver")
    if all(found):
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium/chromedriver missing and not root: apt-get install -y chromium chromium-driver")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=300, check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"], env=env,
                       capture_output=True, timeout=600, check=True)
    except (subprocess.SubprocessError, OSError) as e:
        pytest.fail(f"could not install chromium/chromium-driver with apt-get: {e}")
    found = shutil.which("chromium"), shutil.which("chromedriver")
    assert all(found), "apt-get installed chromium but chromium/chromedriver are not on PATH"
    return found


def _start(cmd: list[str], url: str, log: Path, env: dict) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        wait_http(url, 120, proc)
    except Exception:
        _stop(proc)
        raise AssertionError(f"{cmd[:3]} did not serve {url}:\n{log.read_text()[-3000:]}") from None
    return proc


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(10)


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    d = Path(os.environ.get("MIXOPT_TEST_ARTIFACTS") or tmp_path_factory.mktemp("artifacts")) / "screenshots"
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """An MLflow server with the finished study 'tiny' (4 trials, a uniform baseline) and the
    dashboard on it; yields (mlflow URL, dashboard URL, recommendation.json)."""
    tmp = tmp_path_factory.mktemp("site")
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    mport, dport = free_port(), free_port()
    mlflow_url, dash_url = f"http://127.0.0.1:{mport}", f"http://127.0.0.1:{dport}"
    procs = [_start([str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mport), "--workers", "1",
                     "--backend-store-uri", f"sqlite:///{tmp / 'server.db'}",
                     "--artifacts-destination", str(tmp / "artifacts")], f"{mlflow_url}/health", tmp / "mlflow.log",
                    env)]
    try:
        from mixopt.cli import run_study as run
        from mixopt.run.config import load_config

        cfg = load_config(study_yaml(tmp / "s.yaml", write_domains(tmp / "domains"), tmp / "cache", mlflow_url,
                                     tmp / "out", budget={"trials": 4}, sweep={"baselines": ["uniform"]}))
        run(cfg)
        procs.append(_start([sys.executable, "-m", "mixopt.dashboards.cli", "dashboard", "--tracking-uri", mlflow_url,
                             "--port", str(dport), "--refresh", "2"], dash_url, tmp / "dashboard.log", env))
        yield mlflow_url, dash_url, json.loads((tmp / "out" / "tiny" / "recommendation.json").read_text())
    finally:
        for p in reversed(procs):
            _stop(p)


@pytest.fixture(scope="module")
def browser():
    chromium, driver_path = _ensure_chromium()
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not try to download a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    profile = tempfile.mkdtemp(prefix="mixopt-chromium-")
    for f in FLAGS + [f"--user-data-dir={profile}"]:
        opts.add_argument(f)
    drv = webdriver.Chrome(options=opts, service=Service(executable_path=driver_path))
    drv.set_page_load_timeout(60)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait(drv, css: str, text: str | None = None, seconds: float = 180):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    cond = EC.text_to_be_present_in_element((By.CSS_SELECTOR, css), text) if text else \
        EC.visibility_of_element_located((By.CSS_SELECTOR, css))
    WebDriverWait(drv, seconds).until(cond)
    return drv.find_element(By.CSS_SELECTOR, css)


def _shot(drv, shots: Path, name: str) -> None:
    height = drv.execute_script("return document.body.scrollHeight")
    drv.set_window_size(1280, min(max(int(height) + 40, 800), 6000))
    assert drv.save_screenshot(str(shots / name))


def test_study_list_and_study_page(site, browser, shots):
    from selenium.webdriver.common.by import By

    _, dash_url, rec = site
    browser.get(dash_url + "/")
    table = _wait(browser, "#studies", "tiny")
    row = [r.text for r in table.find_elements(By.CSS_SELECTOR, "tbody tr") if r.text.startswith("tiny")][0]
    assert row.split()[:4] == ["tiny", "4", "4", "0"] and "regmix" in row  # trials, complete, failed
    _shot(browser, shots, "study_list.png")

    table.find_element(By.LINK_TEXT, "tiny").click()
    assert _wait(browser, "#study-title").text == "Study tiny"
    summary = _wait(browser, "#study-summary", "4 trials").text
    assert "4 complete, 0 failed" in summary and "best objective" in summary
    _wait(browser, "#g-objective .main-svg")
    plots = browser.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .main-svg")
    assert len(plots) >= 4, "expected the mixture, objective, weights and loss plots to be drawn"
    assert browser.find_elements(By.CSS_SELECTOR, "#g-objective .scatterlayer .point"), "no trial points drawn"
    mix = _wait(browser, "#rec-mixture", "recommended").text
    for d, w in rec["mixture"].items():
        line = [ln for ln in mix.splitlines() if ln.startswith(d + " ")][0]
        assert line.split()[1] == f"{w:.4f}", (d, line)
    trials = browser.find_elements(By.CSS_SELECTOR, "#trials tbody tr")
    assert len(trials) == 4 and any("uniform" in r.text for r in trials)
    _shot(browser, shots, "study.png")


def test_trial_page_and_unknown_study(site, browser, shots):
    from selenium.webdriver.common.by import By

    _, dash_url, _ = site
    browser.get(dash_url + "/study/tiny/trial/0")
    assert _wait(browser, "h1", "trial 0").text == "Study tiny · trial 0"
    assert _wait(browser, "#trial-state").text == "COMPLETE"
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "0.3333" in body and "Validation loss per domain" in body and "run id " in body
    assert "open the run in MLflow" in body  # the store is a server: its UI is one click away
    _shot(browser, shots, "trial.png")

    browser.get(dash_url + "/study/nope")
    assert "No study named 'nope'" in _wait(browser, "#not-found").text
    assert browser.find_element(By.LINK_TEXT, "tiny")
    _shot(browser, shots, "unknown_study.png")


def test_mlflow_run_lists_plot_artifacts(site, browser, shots):
    from mlflow.tracking import MlflowClient

    mlflow_url, _, _ = site
    client = MlflowClient(mlflow_url)
    exp = client.get_experiment_by_name("tiny")
    parent = client.search_runs([exp.experiment_id], "tags.`mixopt.role` = 'study'")[0]
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"plot_weights.png", "plot_objective.png", "plot_mixture.png", "plot_losses.png", "report.html",
            "plots_notes.txt", "recommendation.json"} <= names, names
    # what a person sees on the study's run page in the MLflow UI
    browser.get(f"{mlflow_url}/#/experiments/{exp.experiment_id}/runs/{parent.info.run_id}/artifacts")
    _wait(browser, "body", "plot_objective.png", seconds=90)
    assert "report.html" in browser.find_element("css selector", "body").text
    _shot(browser, shots, "mlflow_run_artifacts.png")
