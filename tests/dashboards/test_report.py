"""Study plots (mixopt.dashboards.plots.study_plots) on in-memory studies: files, formats, robustness."""


import numpy as np
import pytest

import mixopt
from mixopt.dashboards.data import recommendation_or_none
from mixopt.dashboards.plots import study_plots

DOMAINS = ["code", "legal", "prose", "math"]
PNG = b"\x89PNG\r\n\x1a\n"


def _study(n: int, fail_every: int = 0, searcher: str = "regmix", enqueue: bool = True):
    s = mixopt.create_study("plots", domains=DOMAINS, searcher=searcher, n_init=min(n, 4), seed=1,
                            searcher_options={"surrogate": "linear"} if searcher == "regmix" else None)
    if enqueue:
        s.enqueue({d: 0.25 for d in DOMAINS}, label="uniform")
    rng = np.random.default_rng(0)
    for _ in range(n):
        [t] = s.ask()
        if fail_every and t.trial_id % fail_every == fail_every - 1:
            s.tell(t.trial_id, error="TrialError: diverged at step 3: loss=nan")
            continue
        x = t.mixture.as_array(DOMAINS)
        losses = {d: float(3.0 - 0.8 * x[j] + 0.3 * (x ** 2).sum() + 0.01 * rng.normal()) for j, d in enumerate(DOMAINS)}
        s.tell(t.trial_id, {"losses": losses, "tokens_per_s": 1000.0})
    return s


def _check(files: dict[str, str]) -> None:
    from pathlib import Path

    for key, path in files.items():
        p = Path(path)
        assert p.is_file() and p.stat().st_size > 0, key
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == PNG, key
        elif p.suffix == ".html":
            text = p.read_text()
            assert text.startswith("<!doctype html>") and "Plotly.newPlot" in text, key


def test_full_study_writes_every_plot(tmp_path):
    s = _study(12, fail_every=5)
    files = study_plots(s, s.recommend(), tmp_path / "plots")
    assert {"plot.weights", "plot.objective", "plot.surrogate", "plot.losses", "plot.mixture", "plot.html",
            "plot.notes"} <= set(files)
    _check(files)
    notes = (tmp_path / "plots" / "plots_notes.txt").read_text()
    assert "MoE routing: skipped" in notes and "scaling-law fit: skipped" in notes
    html = (tmp_path / "plots" / "report.html").read_text()
    assert "Study plots" in html and "Spearman" in html and "FAILED" in html and "baseline #0 uniform" in html


def test_one_trial_and_failed_only_studies_do_not_raise(tmp_path):
    one = _study(1, enqueue=False)
    files = study_plots(one, recommendation_or_none(one), tmp_path / "one")
    assert "plot.surrogate" not in files and {"plot.weights", "plot.objective", "plot.mixture"} <= set(files)
    _check(files)
    assert "surrogate vs actual: skipped, 1 completed" in (tmp_path / "one" / "plots_notes.txt").read_text()

    dead = _study(3, fail_every=1, enqueue=False)
    assert dead.best() is None
    files = study_plots(dead, recommendation_or_none(dead), tmp_path / "dead")
    _check(files)
    assert "plot.losses" not in files and "plot.weights" in files

    empty = mixopt.create_study("empty", domains=DOMAINS)
    _check(study_plots(empty, None, tmp_path / "empty"))


def test_unreadable_study_is_a_note_not_an_error(tmp_path):
    files = study_plots(object(), None, tmp_path / "bad")
    assert list(files) == ["plot.notes"] and "cannot read the study" in open(files["plot.notes"]).read()


@pytest.mark.slow
def test_hundred_trials_with_failures(tmp_path):
    """100 trials, every 10th FAILED: every plot is drawn. (How long it takes is a benchmark's
    business, not a test's: these machines are shared and noisy.)"""
    s = _study(100, fail_every=10)
    files = study_plots(s, s.recommend(), tmp_path / "plots")
    _check(files)


def _told(searcher: str = "regmix", options: dict | None = None, n: int = 7):
    """A study told ``n`` Dirichlet mixtures (enqueued: the searcher proposes nothing)."""
    s = mixopt.create_study("cv", domains=DOMAINS, searcher=searcher, searcher_options=options, seed=1)
    rng = np.random.default_rng(0)
    for x in rng.dirichlet(np.ones(len(DOMAINS)), n):
        s.enqueue(dict(zip(DOMAINS, x.tolist())))
    for _ in range(n):
        [t] = s.ask()
        x = t.mixture.as_array(DOMAINS)
        s.tell(t.trial_id, {"losses": {d: float(3.0 - 0.8 * x[j] + 0.3 * (x ** 2).sum() + 0.05 * rng.normal())
                                       for j, d in enumerate(DOMAINS)}})
    return s


@pytest.mark.parametrize("surrogate, title", [pytest.param("gp", "Surrogate GP predicted", marks=pytest.mark.slow),
                                              ("linear", "Surrogate linear predicted")])
def test_surrogate_plot_cross_validates_the_study_surrogate(tmp_path, surrogate, title):
    """The plot's model is the study's (a GP study: a GP, not the linear fallback), named in its title."""
    from mixopt.dashboards import figures
    from mixopt.dashboards.data import study_surrogate_cv, study_view
    from mixopt.search.surrogates import make_surrogate

    s = _told(options={"surrogate": surrogate}, n=6)
    v = study_view(s)
    cv = study_surrogate_cv(s, v)
    # leave-one-out with the study's own model (seeded by the study): the same predictions, refitted here
    X, y = v.W, v.value
    want = [make_surrogate(surrogate, seed=1).fit(np.delete(X, i, 0), np.delete(y, i)).predict(X[i:i + 1])[0]
            for i in range(len(y))]
    assert cv.method == "leave-one-out" and np.allclose(cv.predicted, want, rtol=1e-6)
    assert figures.fig_surrogate(cv).layout.title.text.startswith(title)
    if surrogate == "linear":  # the files (PNG and report.html) come from the same CV
        study_plots(s, None, tmp_path)
        assert title in (tmp_path / "report.html").read_text() and (tmp_path / "plot_surrogate.png").is_file()


@pytest.mark.parametrize("searcher, options, n, name, label", [
    ("regmix", None, 40, "gp", "GP (auto, 40 trials < 128)"),            # the default surrogate, resolved
    ("regmix", {"surrogate_options": {"switch_at": 32, "num_leaves": 7}}, 40, "lightgbm",
     "LightGBM (auto, 40 trials >= 32)"),
    ("regmix", {"surrogate": "lightgbm"}, 40, "lightgbm", "LightGBM"),
    ("bo", {"warp": "clr"}, 40, "gp", "GP"),
    ("bo", None, 40, "gp", "GP"),                                          # bo's default warp
    ("regmix", {"surrogate": "bo"}, 40, "gp", "GP"),                       # the bo surrogate: bo's GP
    ("mixing_law", None, 40, "mixing_law", "mixing law"),
    ("hybrid", {"main": "regmix", "main_options": {"surrogate": "linear"}}, 40, "linear", "linear"),
    ("random", None, 40, "linear", "linear (random fits no surrogate)"),
])
def test_searched_surrogate_is_the_searchers_model(searcher, options, n, name, label):
    from mixopt.dashboards.data import searched_surrogate

    s = mixopt.create_study("which", domains=DOMAINS, searcher=searcher, searcher_options=options)
    choice = searched_surrogate(s, n)
    assert (choice.name, choice.label) == (name, label)
    if searcher == "bo" or (options or {}).get("surrogate") == "bo":
        assert choice.options["warp"] == (options or {}).get("warp", "sqrt_median")
    if name == "lightgbm" and options.get("surrogate_options"):
        assert choice.options == {"num_leaves": 7}  # the GP's options and switch_at are auto's, not LightGBM's
    if searcher == "mixing_law":
        assert choice.per_domain == {d: 0.25 for d in DOMAINS}  # the objective: mean loss over the domains


def test_mixing_law_plot_fits_a_law_per_objective_domain():
    from mixopt.dashboards.data import study_surrogate_cv, study_view

    s = _told("mixing_law", n=6)
    cv = study_surrogate_cv(s, study_view(s))
    assert cv.surrogate == "mixing law (a law per objective domain)" and np.isfinite(cv.predicted).all()
