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


@pytest.mark.parametrize("where", ["proxy", "ladder"])
def test_resuming_a_mup_study_stored_before_the_read_out_multiplier_asks_for_alpha_1(tmp_path, tiny_domains, where):
    """Its muP proxies (the base, or a rung over a standard base) trained with alpha 1: resuming with today's
    default would mix alphas in one study, so only a config that says alpha 1 resumes it."""
    from mixopt.core.errors import UserError
    from mixopt.core.meta import StudyMeta

    def config(alpha):
        mup = {"parametrization": "mup", **({"mup_output_mult": alpha} if alpha else {})}
        kw = {"proxy": mup} if where == "proxy" else {"ladder": [{"preset": "dense-w64", **mup}]}
        return load_config(study_yaml(tmp_path / "s.yaml", tiny_domains, tmp_path / "cache", "sqlite:///unused.db",
                                      tmp_path / "out", **kw))

    stored = config(1.0).to_dict()  # as a study created before the key stored it: no mup_output_mult anywhere
    stored["proxy"].pop("mup_output_mult")
    for r in stored.get("ladder", []):
        r.pop("mup_output_mult")
    meta = StudyMeta.from_dict({**StudyPlan.build(config(1.0), storage=InMemoryStorage()).bounds.to_dict(),
                                "name": "tiny", "objective": {"weights": {"code": 1.0}}, "config": stored})
    StudyPlan.build(config(1.0), storage=InMemoryStorage())._check_resume(meta)  # alpha 1 said: resumes
    with pytest.raises(UserError, match=f"was created with other {where} settings.*trained with alpha 1: set "
                                        "mup_output_mult: 1 where parametrization: mup is"):
        StudyPlan.build(config(None), storage=InMemoryStorage())._check_resume(meta)  # today's default: refused


def test_resuming_a_study_stored_before_seed_fraction_auto(tmp_path, tiny_domains):
    """Stored with the old default (merge.seed_fraction 0.5): a study that neither screens nor branches resumes
    (its merge settings are unused), one that merges resumes where `auto` hands off at 0.5 too, and where it
    would not, the refusal names the seed_fraction that continues it."""
    from mixopt.core.errors import UserError
    from mixopt.core.meta import StudyMeta

    def config(**kw):
        return load_config(study_yaml(tmp_path / "s.yaml", tiny_domains, tmp_path / "cache", "sqlite:///unused.db",
                                      tmp_path / "out", **kw))

    def resume(cfg, stored_cfg=None):
        stored = stored_cfg if isinstance(stored_cfg, dict) else (stored_cfg or cfg).to_dict()
        stored["merge"]["seed_fraction"] = 0.5
        plan = StudyPlan.build(cfg, storage=InMemoryStorage())
        meta = StudyMeta.from_dict({**plan.bounds.to_dict(), "name": "tiny", "objective": {"weights": {"code": 1.0}},
                                    "config": stored})
        plan._check_resume(meta)

    resume(config())                                  # no merging: resumes
    resume(config(merge={"scale": 2.0}), config())    # unused merge settings may change
    resume(config(merge={"candidates": 8}))           # 32 steps: auto hands off at 0.5 too
    long = {"tokens": 8 * 64 * 1600}                  # 1,600 steps: auto hands off at 0.9
    with pytest.raises(UserError, match=r"other merge settings.*came from other merge settings: set "
                                        r"merge.seed_fraction: 0.5 to continue it$"):
        resume(config(merge={"branch": True}, proxy=long))
    resume(config(merge={"branch": True, "seed_fraction": 0.5}, proxy=long))
    with pytest.raises(UserError, match="other merge settings"):  # merging added on resume: refused
        resume(config(merge={"candidates": 8}), config())
    # screened with the old defaults, stored before merge.power existed (no key: merged with w itself): told
    # both settings, and resumes with them; a study that only branches never used them and resumes as it is
    old = config(merge={"candidates": 8, "scale": 1.25}).to_dict()
    old["merge"].pop("power")
    with pytest.raises(UserError, match=r"set merge.scale: 1.25, merge.power: 1.0 to continue it$"):
        resume(config(merge={"candidates": 8}), old)
    resume(config(merge={"candidates": 8, "scale": 1.25, "power": 1.0}), old)
    old["merge"] |= {"candidates": 0, "branch": True}
    resume(config(merge={"branch": True}), old)
