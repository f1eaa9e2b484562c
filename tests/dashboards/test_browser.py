"""The dashboard and the MLflow UI in a real headless Chromium (Debian's chromium + chromedriver).

A real `mlflow server` and the dashboard (`python -m mixopt.dashboards.cli dashboard`) on 127.0.0.1,
a tiny finished study run against the server; `mixopt ui` on a SQLite store holding a study made
through the API; pages are checked for what a person sees. Skipped where chromium is not installed.
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
    """Debian's chromium and chromedriver on PATH; skipped without them (a test installs nothing:
    ``apt-get install -y chromium chromium-driver`` on the test machine)."""
    found = shutil.which("chromium"), shutil.which("chromedriver")
    if not all(found):
        pytest.skip("chromium/chromedriver not on PATH: apt-get install -y chromium chromium-driver")
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


@pytest.fixture(scope="module")
def ui_study(tmp_path_factory):
    """`mixopt ui` (it serves `mlflow ui`) on a SQLite store holding the study 'ui-demo', made through
    the API: a uniform baseline and 5 random mixtures of code/legal, told losses on code, legal and the
    held-out target prose. Yields (the URL `mixopt ui` printed, {run id: trial})."""
    import mixopt

    tmp = tmp_path_factory.mktemp("ui")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    study = mixopt.create_study("ui-demo", domains=["code", "legal", "prose"], objective={"target": "prose"},
                                seed=3, storage=uri)
    study.enqueue({"code": 0.5, "legal": 0.5}, label="uniform")
    for _ in range(6):
        [t] = study.ask()
        x = t.mixture.as_array(["code", "legal"])
        study.tell(t.trial_id, {"losses": {"code": 3.0 - x[0], "legal": 3.1 - x[1], "prose": 2.9 - 0.4 * x[0] ** 2}})
    trials = {t.run_id: t for t in mixopt.load_study("ui-demo", uri).trials}
    port = free_port()
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    log = tmp / "ui.log"
    proc = _start([sys.executable, "-m", "mixopt.dashboards.cli", "ui", "--study", "ui-demo", "--tracking-uri", uri,
                   "--port", str(port)], f"http://127.0.0.1:{port}/health", log, env)
    try:
        url = [ln.split()[2] for ln in log.read_text().splitlines() if ln.startswith("MLflow UI: ")][0]
        yield url, trials
    finally:
        _stop(proc)


def test_mixopt_ui_opens_the_trials_with_their_columns(ui_study, browser, shots):
    """The link `mixopt ui` prints opens MLflow's model-training runs table (not the GenAI overview),
    every trial a row of its own (not folded under the study's run), best objective first, with
    its w.* params and loss.* / objective metrics shown."""
    from selenium.webdriver.common.by import By

    url, trials = ui_study
    assert "workflowType=machine_learning" in url and "/runs?" in url, url
    browser.set_window_size(3000, 1200)  # every column rendered (the grid draws only what is in view)
    browser.get(url)
    best = min((t for t in trials.values() if t.ok), key=lambda t: t.value)
    _wait(browser, f'.ag-row[row-id="{best.run_id}"] .ag-cell[col-id="metrics.`objective`"]', seconds=120)
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "Model training" in body and "Token Usage" not in body
    rows = browser.find_elements(By.CSS_SELECTOR, ".ag-center-cols-container .ag-row")
    assert {r.get_attribute("row-id") for r in rows} >= set(trials), "a trial run is missing (folded?)"
    first = [r for r in rows if r.get_attribute("row-index") == "0"][0]
    assert first.get_attribute("row-id") == best.run_id, "runs are not ordered by objective"
    for run_id, t in trials.items():
        cells = {c.get_attribute("col-id"): c.text for c in
                 browser.find_elements(By.CSS_SELECTOR, f'.ag-center-cols-container .ag-row[row-id="{run_id}"] .ag-cell')}
        shown = {k: cells.get(f"params.`w.{k}`") for k in ("code", "legal")}
        assert shown == {d: repr(float(w)) for d, w in t.mixture.items()}, (t.trial_id, cells)
        for d, v in {**t.losses, "objective": t.value}.items():
            col = "metrics.`objective`" if d == "objective" else f"metrics.`loss.{d}`"
            assert float(cells[col]) == v, (t.trial_id, col, cells)
    _shot(browser, shots, "mlflow_ui_trials.png")
