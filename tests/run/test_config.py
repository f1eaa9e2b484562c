import pytest

from mixopt.core.errors import ConfigError
from mixopt.run.config import load_config, parse_overrides


def test_defaults_and_overrides(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("study: s1\nproxy: {preset: dense-1m, tokens: 200000}\nbudget: {trials: 5}\n")
    cfg = load_config(p, ["--budget.trials=7", "--search.options.top_k", "10", "--space.target_tokens=1e9"])
    assert cfg.study == "s1" and cfg.proxy.preset == "dense-1m" and cfg.proxy.tokens == 200000
    assert cfg.budget.trials == 7 and cfg.search.options == {"top_k": 10}
    assert cfg.space.target_tokens == 1e9


@pytest.mark.parametrize("text,overrides,needle", [
    ("proxy: {tokenz: 3}\n", [], "s.yaml: proxy.tokenz: unknown key; allowed: arch, preset"),
    ("budget: {trials: many}\n", [], "budget.trials: 'many' has the wrong type; allowed: int"),
    ("proxy: {preset: huge}\n", [], "proxy.preset: unknown preset 'huge'"),
    ("executor: {kind: k8s}\n", [], "executor.kind: 'k8s'; allowed: ray, local"),
    ("- a\n- b\n", [], "top level must be a mapping"),
    ("study: [\n", [], "not valid YAML"),
    ("", ["--budget.trials"], "missing value"),
    ("", ["--nope=1"], "nope: unknown key"),
    ("data: 3\n", [], "data: must be a mapping"),
    ("space: {max_epochs: 0}\n", [], "space.max_epochs"),
    ("merge: {scale: 0}\n", [], "merge.scale: 0.0 must be a number in (0, 10]"),
    ("merge: {power: 3}\n", [], "merge.power: 3.0 must be a number in (0, 2]"),
    ("merge: {branch: 2}\n", [], "merge.branch"),
    ("merge: {seed_fraction: late}\n", [], "merge.seed_fraction: 'late'; allowed: auto or a number in (0, 1)"),
    ("", ["--merge.seed_fraction=1"], "merge.seed_fraction: 1.0; allowed: auto or a number in (0, 1)"),
    ("merge: {branch: true}\nladder: [{preset: dense-1m}]\n", [], "merge.branch: not with a ladder"),
    ("merge: {branch: true}\nproxy: {online: aioli}\n", [], "merge.branch: not with proxy.online ('aioli')"),
])
def test_config_errors_name_file_and_key(tmp_path, text, overrides, needle):
    p = tmp_path / "s.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p, overrides)
    assert needle in str(e.value)
    # an error in the file names the file; one in an override names the override, not the file
    assert str(e.value).startswith("override --" if overrides else str(p)), str(e.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_parse_overrides_types():
    assert parse_overrides(["--a.b=1", "--a.c=x", "--d=[1, 2]"]) == {"a": {"b": 1, "c": "x"}, "d": [1, 2]}


def test_command_line_flags_are_typed_values_not_override_strings():
    """``--trials`` / ``--study`` arrive as values (a study name with '=' or spaces stays itself) and a
    bad one is blamed on the flag."""
    from mixopt.run.config import load_config

    cfg = load_config(None, ["--budget.trials=3"], {"study": ("a b=c", "--study"), "budget.trials": (5, "--trials")})
    assert cfg.study == "a b=c" and cfg.budget.trials == 5
    with pytest.raises(ConfigError, match=r"^--trials 0: budget.trials: 0 must be >= 1"):
        load_config(None, [], {"budget.trials": (0, "--trials")})
