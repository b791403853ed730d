"""Table-3 strategies written as profiles: which heads each removes, seeded random draw, files and manifest."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vseam.benchmarks.strategies import (
    ORIGINAL, RANDOM_REMOVE, RESCALING, WO_NEGATIVE, WO_POSITIVE, random_heads, read_manifest, strategy_profiles,
    write_strategies)
from vseam.head_profiles import Fingerprint, Head, HeadProfile, Provenance, Scope, load_profile, now_iso

POS = [(1, 2, 0.5), (3, 0, 0.8), (2, 7, 0.3)]
NEG = [(3, 5, 0.9), (0, 1, 0.4)]


def calibrated(name="cal") -> HeadProfile:
    return HeadProfile(
        name=name,
        fingerprint=Fingerprint(architecture="LlavaForConditionalGeneration", model_id="toy", num_layers=4,
                                num_heads=8, head_dim=32),
        scope=Scope(level="attribute", subtypes=["color"]),
        k=3,
        positive=[Head(layer=l, head=h, lam=lam) for l, h, lam in POS],
        negative=[Head(layer=l, head=h, lam=lam) for l, h, lam in NEG],
        provenance=Provenance(method="test", tool_version="0", created=now_iso(), seed=5),
    )


def zeros(p: HeadProfile) -> set[tuple[int, int]]:
    s = p.scales()
    assert set(np.unique(s)) <= {0.0, 1.0}, "a removal strategy must only remove heads"
    return {(int(l), int(h)) for l, h in zip(*np.nonzero(s == 0))}


def test_strategy_heads():
    cal = calibrated()
    st = strategy_profiles(cal, seed=0)
    assert list(st) == [ORIGINAL, WO_NEGATIVE, WO_POSITIVE, RANDOM_REMOVE, RESCALING]
    assert st[ORIGINAL] is None
    assert zeros(st[WO_NEGATIVE]) == {(3, 5), (0, 1)}
    assert zeros(st[WO_POSITIVE]) == {(1, 2), (3, 0), (2, 7)}
    rand = zeros(st[RANDOM_REMOVE])
    assert len(rand) == 3  # max(|P+|, |P-|)
    assert not rand & ({(l, h) for l, h, _ in POS} | {(l, h) for l, h, _ in NEG})
    assert st[RESCALING] is cal and np.array_equal(st[RESCALING].scales(), cal.scales())
    for prof in st.values():
        if prof is not None:
            prof.check_fits(cal.fingerprint)  # same model
            assert prof.scope == cal.scope
    assert {p.name for p in st.values() if p} == {"cal", "cal-wo-negative", "cal-wo-positive", "cal-random-remove"}


def test_random_remove_is_seeded():
    cal = calibrated()
    a = random_heads(cal, 5, seed=11)
    assert a == random_heads(cal, 5, seed=11)
    assert a != random_heads(cal, 5, seed=12)
    assert len(set(a)) == 5
    assert len(zeros(strategy_profiles(cal, seed=1, random_count=7)[RANDOM_REMOVE])) == 7
    with pytest.raises(ValueError, match="cannot draw 28 heads from the 27"):
        random_heads(cal, 28, seed=0)


def test_write_and_read_manifest(tmp_path):
    src = calibrated().save(tmp_path / "cal.json")
    path = write_strategies(src, tmp_path / "st", seed=3)
    manifest = read_manifest(tmp_path / "st")
    assert manifest == {ORIGINAL: "none", WO_NEGATIVE: "cal-wo-negative", WO_POSITIVE: "cal-wo-positive",
                        RANDOM_REMOVE: "cal-random-remove", RESCALING: "cal"}
    for strategy, name in manifest.items():
        if name != "none":
            assert load_profile(tmp_path / "st" / f"{name}.json").name == name
    doc = json.loads(path.read_text())
    assert doc["seed"] == 3 and doc["reference"] == RESCALING
    rand = load_profile(tmp_path / "st" / "cal-random-remove.json")
    assert "seed 3" in rand.provenance.notes


def test_manifest_errors(tmp_path):
    from vseam.core.errors import UserError

    bad = tmp_path / "strategies.json"
    bad.write_text('{"profiles": {"w/o everything": "x"}}')
    with pytest.raises(UserError, match="unknown strategies"):
        read_manifest(bad)
    bad.write_text("{")
    with pytest.raises(UserError, match="not valid JSON"):
        read_manifest(bad)
    with pytest.raises(UserError, match="cannot read"):
        read_manifest(tmp_path / "missing.json")


def test_cli_writes_strategies(tmp_path, capsys):
    from vseam.cli import main

    src = calibrated("colorheads").save(tmp_path / "cal.json")
    assert main(["eval", "strategies", str(src), "--out", str(tmp_path / "out"), "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert "random remove: colorheads-random-remove" in out
    assert "--head-profile" in out
    assert sorted(p.name for p in (tmp_path / "out").glob("*.json")) == [
        "colorheads-random-remove.json", "colorheads-wo-negative.json", "colorheads-wo-positive.json",
        "colorheads.json", "strategies.json"]
    assert main(["eval", "strategies", str(src), "--out", str(tmp_path / "o2"), "--random-count", "99"]) == 1
    assert "cannot draw 99 heads" in capsys.readouterr().err
