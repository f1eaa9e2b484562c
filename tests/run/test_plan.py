"""StudyPlan builds each piece once: the searcher, the training domains, the bounds, the sweep's mixtures."""

import pytest

from mixopt.core.errors import MixtureError
from mixopt.run.config import load_config
from mixopt.run.plan import StudyPlan
from mixopt.study import InMemoryStorage
from tests.conftest import study_yaml


def test_plan_builds_searcher_domains_and_sweep_files_once(tmp_path, tiny_domains):
    (tmp_path / "inferred.yaml").write_text("mixture: {code: 0.5, legal: 0.3, prose: 0.2}\n")
    cfg = load_config(study_yaml(tmp_path / "s.yaml", tiny_domains, tmp_path / "cache", "sqlite:///unused.db",
                                 tmp_path / "out", objective={"target": "prose"},
                                 sweep={"custom": [str(tmp_path / "inferred.yaml"), {"code": 1.0}]}))
    plan = StudyPlan.build(cfg, storage=InMemoryStorage())
    assert plan.train_domains == ["code", "legal"] and plan.bounds.domains == ("code", "legal")
    assert plan.searcher.name == "regmix"
    (label, m), (label2, m2) = plan.custom
    assert label == "inferred" and m["code"] == pytest.approx(0.625)  # prose, held out, dropped; renormalized
    assert label2 == "custom1" and m2 == {"code": 1.0, "legal": 0.0}
    bad = load_config(study_yaml(tmp_path / "b.yaml", tiny_domains, tmp_path / "cache", "sqlite:///unused.db",
                                 tmp_path / "out", sweep={"custom": [str(tmp_path / "missing.yaml")]}))
    with pytest.raises(MixtureError, match=r"sweep.custom\[0\].*file not found"):
        StudyPlan.build(bad, storage=InMemoryStorage())
