"""Head-profile format: Eq 10 scales, validation errors that name the field, fingerprint refusal, CLI."""

from __future__ import annotations

import copy
import json
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from vseam.head_profiles import HeadProfile, ProfileError, load_profile, parse_profile
from vseam.head_profiles.model import SCHEMA_PATH, json_schema

FP = {
    "architecture": "LlavaForConditionalGeneration",
    "model_id": "vseam/test",
    "num_layers": 4,
    "num_heads": 8,
    "head_dim": 32,
}


def make(**over) -> dict:
    doc = {
        "schema_version": 1,
        "name": "attr",
        "fingerprint": dict(FP),
        "scope": {"level": "attribute", "subtypes": ["color"]},
        "k": 2,
        "positive": [{"layer": 1, "head": 2, "lambda": 1.0, "score": -0.3}, {"layer": 3, "head": 0, "lambda": 0.0}],
        "negative": [{"layer": 0, "head": 7, "lambda": 0.25, "score": 0.1}],
        "provenance": {"method": "test", "tool_version": "0", "created": "2026-01-01T00:00:00+00:00"},
    }
    doc.update(over)
    return doc


def test_scales_follow_eq10():
    p = parse_profile(make())
    s = p.scales()
    assert s.shape == (4, 8)
    assert s[1, 2] == 2.0 and s[3, 0] == 1.0 and s[0, 7] == 0.75
    assert np.count_nonzero(s != 1.0) == 2
    assert p.scale_entries() == [(0, 7, 0.75), (1, 2, 2.0)]


def test_strength_scales_every_lambda():
    p = parse_profile(make(strength=0.5))
    s = p.scales()
    assert s[1, 2] == 1.5 and s[3, 0] == 1.0 and s[0, 7] == 1.0 - 0.5 * 0.25
    assert parse_profile(make(strength=0.0)).scales().tolist() == np.ones((4, 8)).tolist()
    assert parse_profile(make(strength=1.0)).scales().tolist() == parse_profile(make()).scales().tolist()
    # absent = 1 and is not written, so profiles without a strength keep their bytes
    assert "strength" not in parse_profile(make()).to_json() and '"strength": 0.5' in p.to_json()
    for bad in (-0.1, 1.5):
        with pytest.raises(ProfileError, match="field 'strength'"):
            parse_profile(make(strength=bad))


def test_roundtrip_keeps_lambda_alias(tmp_path):
    p = parse_profile(make())
    path = p.save(tmp_path / "p.json")
    raw = json.loads(path.read_text())
    assert "lambda" in raw["positive"][0] and "lam" not in raw["positive"][0]
    assert load_profile(path) == p


def _bad(mutator):
    doc = make()
    mutator(doc)
    return doc


BAD_CASES = {
    "lambda NaN": (lambda d: d["positive"][0].update({"lambda": float("nan")}), "positive.0.lambda", "finite"),
    "lambda > 1": (lambda d: d["negative"][0].update({"lambda": 1.5}), "negative.0.lambda", "[0, 1]"),
    "lambda < 0": (lambda d: d["negative"][0].update({"lambda": -0.1}), "negative.0.lambda", "[0, 1]"),
    "lambda inf": (lambda d: d["positive"][1].update({"lambda": math.inf}), "positive.1.lambda", "finite"),
    "head in both sets": (
        lambda d: d["negative"].append({"layer": 1, "head": 2, "lambda": 0.5}),
        "positive/negative",
        "L1.H2 is in both sets",
    ),
    "duplicate head": (
        lambda d: d["positive"].append({"layer": 1, "head": 2, "lambda": 0.5}),
        "positive[2]",
        "duplicate",
    ),
    "layer out of range": (
        lambda d: d["positive"].append({"layer": 4, "head": 0, "lambda": 0.5}),
        "layer 4 out of range",
        "4 layers",
    ),
    "head out of range": (
        lambda d: d["negative"].append({"layer": 0, "head": 8, "lambda": 0.5}),
        "head 8 out of range",
        "8 heads",
    ),
    "negative layer": (lambda d: d["positive"][0].update({"layer": -1}), "positive.0.layer", "greater than or equal"),
    "missing fingerprint": (lambda d: d.pop("fingerprint"), "fingerprint", "Field required"),
    "unknown level": (lambda d: d["scope"].update({"level": "colour"}), "scope.level", "attribute"),
    "unknown field": (lambda d: d.update({"lambdas": []}), "lambdas", "Extra inputs"),
    "reserved name": (lambda d: d.update({"name": "none"}), "name", "reserved"),
    "bad name": (lambda d: d.update({"name": "has space"}), "name", "pattern"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_malformed_profiles_are_rejected_naming_the_field(case):
    mutate, where, why = BAD_CASES[case]
    with pytest.raises(ProfileError) as err:
        parse_profile(_bad(mutate), source="bad.json")
    msg = str(err.value)
    assert msg.startswith("bad.json: "), msg
    assert where in msg and why in msg, msg


def test_not_json_and_not_object(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("{ not json")
    with pytest.raises(ProfileError, match=r"x.json: not valid JSON .*line 1"):
        load_profile(path)
    with pytest.raises(ProfileError, match="must be a JSON object"):
        parse_profile("[1, 2]", source="y.json")
    with pytest.raises(ProfileError, match="cannot read profile"):
        load_profile(tmp_path / "missing.json")


def test_fingerprint_mismatch_is_refused():
    p = parse_profile(make())
    same = p.fingerprint.model_copy()
    p.check_fits(same)
    other = p.fingerprint.model_copy(update={"num_heads": 32, "model_id": "other"})
    with pytest.raises(ProfileError, match=r"fingerprint.num_heads: profile has 8, model has 32"):
        p.check_fits(other, source="a.json")
    arch = p.fingerprint.model_copy(update={"architecture": "InstructBlipForConditionalGeneration"})
    with pytest.raises(ProfileError, match="fingerprint.architecture"):
        p.check_fits(arch)


def test_schema_file_is_current():
    assert json.loads(SCHEMA_PATH.read_text()) == json.loads(json.dumps(json_schema(), sort_keys=True))


def vseam(*args, check=True):
    res = subprocess.run([sys.executable, "-m", "vseam.cli", *args], capture_output=True, text=True)
    if check and res.returncode != 0:
        raise AssertionError(f"vseam {' '.join(args)} failed: {res.stderr}")
    return res


def test_cli_from_heads_validate_scales_show(tmp_path, tiny_llava_dir, tiny_instructblip_dir):
    out = tmp_path / "hand.json"
    vseam(
        "profile", "from-heads", "--model", str(tiny_llava_dir), "--name", "hand",
        "--positive", "L1.H2=0.8,L0.H1=0.5", "--negative", "L0.H3", "--out", str(out),
    )
    p = load_profile(out)
    assert [(h.layer, h.head, h.lam) for h in p.positive] == [(1, 2, 0.8), (0, 1, 0.5)]
    assert [(h.layer, h.head, h.lam) for h in p.negative] == [(0, 3, 1.0)]  # removal = negative with λ = 1
    assert p.fingerprint.num_layers == 2 and p.fingerprint.num_heads == 4 and p.fingerprint.head_dim == 32

    res = vseam("profile", "validate", str(out), "--model", str(tiny_llava_dir))
    assert "valid profile 'hand'" in res.stdout

    res = vseam("profile", "validate", str(out), "--model", str(tiny_instructblip_dir), check=False)
    assert res.returncode == 1 and "fingerprint.architecture" in res.stderr and str(out) in res.stderr

    scales = json.loads(vseam("profile", "scales", str(out)).stdout)
    assert scales == {"num_layers": 2, "num_heads": 4, "strength": 1.0,
                      "scales": [[0, 1, 1.5], [0, 3, 0.0], [1, 2, 1.8]]}

    show = vseam("profile", "show", str(out)).stdout
    assert "L1.H2" in show and "1.800" in show and "0.000" in show


def test_cli_rejects_bad_head_lists(tmp_path, tiny_llava_dir):
    base = ["profile", "from-heads", "--model", str(tiny_llava_dir), "--name", "x", "--out", str(tmp_path / "x.json")]
    res = vseam(*base, "--positive", "L1.H2=1.8", check=False)
    assert res.returncode == 1 and "--positive" in res.stderr and "[0, 1]" in res.stderr
    res = vseam(*base, "--positive", "layer1-head2", check=False)
    assert res.returncode == 1 and "cannot read 'layer1-head2'" in res.stderr
    res = vseam(*base, "--positive", "L9.H0", check=False)
    assert res.returncode == 1 and "layer 9 out of range" in res.stderr
    assert not (tmp_path / "x.json").exists()


def test_cli_validate_reports_malformed_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_bad(BAD_CASES["lambda > 1"][0])))
    res = vseam("profile", "validate", str(bad), check=False)
    assert res.returncode == 1
    assert f"{bad}: field 'negative.0.lambda'" in res.stderr
