import math

import numpy as np
import pytest

from mixopt.core.errors import MixtureError, SpaceError
from mixopt.core.mixture import Mixture, MixtureSpace


def test_mixture_valid_and_aligned():
    m = Mixture({"b": 0.75, "a": 0.25}, ["a", "b", "c"])
    assert list(m) == ["a", "b", "c"] and m["c"] == 0.0
    assert m.as_array(["b", "a"]).tolist() == [0.75, 0.25]
    assert m == Mixture({"a": 0.25, "b": 0.75, "c": 0.0})
    assert hash(m) == hash(Mixture({"a": 0.25, "b": 0.75, "c": 0.0}, ["a", "b", "c"]))


@pytest.mark.parametrize("weights,needle", [
    ({"a": -0.1, "b": 1.1}, "negative"),
    ({"a": math.nan, "b": 1.0}, "not finite"),
    ({"a": math.inf, "b": 0.0}, "not finite"),
    ({"a": 0.5, "b": 0.4}, "sum to 0.9"),
    ({"a": 0.5, "zzz": 0.5}, "unknown domain"),
    ({"a": "x", "b": 1.0}, "not a number"),
    ({}, "non-empty"),
])
def test_mixture_rejects(weights, needle):
    with pytest.raises(MixtureError, match=needle):
        Mixture(weights, ["a", "b"])


def test_space_repetition_cap_and_projection():
    s = MixtureSpace.build(["a", "b", "c"], {"a": 100, "b": 10, "c": 1000}, target_tokens=100, max_epochs=0.5)
    assert s.upper == (0.5, 0.05, 1.0)
    p = s.project(np.array([0.9, 0.3, -0.2]))
    assert s.contains(p) and abs(p.sum() - 1) < 1e-9
    with pytest.raises(MixtureError, match="outside"):
        s.validate(Mixture({"a": 0.1, "b": 0.5, "c": 0.4}))


def test_space_infeasible_caps_and_floors():
    with pytest.raises(SpaceError, match="caps sum to 0.6"):
        MixtureSpace.build(["a", "b"], caps={"a": 0.3, "b": 0.3})
    with pytest.raises(SpaceError, match="floors sum"):
        MixtureSpace.build(["a", "b"], floors={"a": 0.7, "b": 0.7})
    with pytest.raises(SpaceError, match="unknown domain"):
        MixtureSpace.build(["a", "b"], caps={"q": 0.3})
    with pytest.raises(SpaceError, match=r"floor .* > cap"):
        MixtureSpace.build(["a", "b"], floors={"a": 0.6}, caps={"a": 0.5})


def test_mixture_files_plain_recommendation_or_inferred(tmp_path):
    """A mixture file: a mapping, or a document with one under ``mixture`` (recommendation.yaml,
    ``mixopt infer-mixture --out``); weight on held-out domains is dropped and the rest renormalized."""
    from mixopt.core.errors import MixtureError

    (tmp_path / "plain.yaml").write_text("a: 0.25\nb: 0.75\n")
    (tmp_path / "rec.json").write_text('{"study": "s", "mixture": {"a": 0.5, "b": 0.3, "t": 0.2}}')
    assert Mixture.from_file(tmp_path / "plain.yaml", ["a", "b"]) == {"a": 0.25, "b": 0.75}
    m = Mixture.from_file(tmp_path / "rec.json", ["a", "b"], held_out=["t"])
    assert m["a"] == pytest.approx(0.625) and m["b"] == pytest.approx(0.375)
    with pytest.raises(MixtureError, match="rec.json.t: unknown domain"):
        Mixture.from_file(tmp_path / "rec.json", ["a", "b"])
    with pytest.raises(MixtureError, match="nope.yaml: file not found"):
        Mixture.from_file(tmp_path / "nope.yaml", ["a", "b"])
    (tmp_path / "bad.yaml").write_text("[1, 2]")
    with pytest.raises(MixtureError, match="expected a mapping"):
        Mixture.from_file(tmp_path / "bad.yaml", ["a", "b"])
