"""`calibrate --dataset gqa --model DIR` end to end on CPU: a V-SEAM-format fixture, stage 1 (SAM masks, editors,
quality gate, Eq 4) and stage 2, on a random tiny LLaVA."""

from __future__ import annotations

import json
import shutil

import pytest

from vseam.calibrate.cli import main as calibrate_main
from gqa_fixture import write_vseam_gqa
from vseam.head_profiles import load_profile

pytestmark = pytest.mark.timeout(1200)
SUBTYPES = "color,animal,vehicle,spatial"  # the subtypes the offline editors handle (no diffusion model here)


@pytest.fixture(scope="module")
def fixture_dataset(tmp_path_factory):
    return write_vseam_gqa(tmp_path_factory.mktemp("vseam-gqa"), per_subtype=1)


def argv(questions, images, model, out, *extra):
    return ["--dataset", "gqa", "--data", str(questions), "--images", str(images), "--subtypes", SUBTYPES,
            "--model", str(model), "--out", str(out), "--patching", "1", *extra]


def test_gqa_end_to_end_writes_valid_profiles(fixture_dataset, tiny_llava_dir, tmp_path, capsys):
    questions, images = fixture_dataset
    out = tmp_path / "debug"
    # a random model rarely satisfies Eq 4, so this run keeps every edited pair (the debugging flag)
    assert calibrate_main(argv(questions, images, tiny_llava_dir, out, "--no-eq4-filter")) == 0
    manifest = (out / "stage1" / "edits" / "edits.jsonl").read_text().splitlines()
    assert len(manifest) == 4
    assert {json.loads(l)["editor"] for l in manifest} == {"recolor", "remove", "mirror"}
    profiles = sorted(p.name for p in (out / "profiles").iterdir())
    assert profiles == ["gqa-all.json", "gqa-attribute.json", "gqa-object.json", "gqa-relation.json"]

    from vseam.cli import main as vseam_main

    capsys.readouterr()
    for name in profiles:
        assert vseam_main(["profile", "validate", str(out / "profiles" / name), "--model", str(tiny_llava_dir)]) == 0
    assert capsys.readouterr().out.count("fits") == len(profiles)
    report = json.loads((out / "report.json").read_text())
    assert report["stage1"]["records"] == 4 and report["stage1"]["edits_accepted"] == 4
    assert report["triples"] == {"animal": 1, "color": 1, "spatial": 1, "vehicle": 1}
    assert report["questions"] == {"animal": 1, "color": 1, "spatial": 1, "vehicle": 1}
    assert report["overlap"]["available"]
    assert (out / "stage1" / "edits" / "contact_sheet.png").exists()

    # resuming a finished run redoes nothing and rewrites the same profiles
    before = {n: (out / "profiles" / n).read_bytes() for n in profiles}
    edits_before = (out / "stage1" / "edits" / "edits.jsonl").read_bytes()
    assert calibrate_main(argv(questions, images, tiny_llava_dir, out, "--no-eq4-filter")) == 0
    assert (out / "stage1" / "edits" / "edits.jsonl").read_bytes() == edits_before
    assert {n: (out / "profiles" / n).read_bytes() for n in profiles} == before

    # with the Eq-4 filter (stage 1's edits reused): this random model answers no edited pair as Eq 4 asks (right on
    # the clean image, wrong on the edit), so there is no triple; the default split attributes every question on its
    # clean image all the same, and eq4-pairs refuses with a clear message
    eq4 = tmp_path / "eq4"
    (eq4 / "stage1").mkdir(parents=True)
    shutil.copytree(out / "stage1" / "edits", eq4 / "stage1" / "edits")
    capsys.readouterr()
    code = calibrate_main(argv(questions, images, tiny_llava_dir, eq4))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    table = {line.split()[0]: [int(x) for x in line.split()[1:]] for line in captured.out.splitlines()
             if line.split()[:1] and line.split()[0] in SUBTYPES.split(",")}
    # subtype: [edited pairs, clean answered right, Eq-4 triples]
    assert table == {"animal": [1, 1, 0], "color": [1, 0, 0], "spatial": [1, 0, 0], "vehicle": [1, 1, 0]}
    report = json.loads((eq4 / "report.json").read_text())
    assert report["triples"] == {} and report["patching"] == {}
    assert {g: (v["n_correct"], v["n_incorrect"]) for g, v in report["groups"].items()} == {
        "attribute": (0, 1), "object": (2, 0), "relation": (0, 1), "all": (2, 2)}  # = the "clean ok" column
    assert sorted(p.name for p in (eq4 / "profiles").iterdir()) == profiles
    pv = load_profile(eq4 / "profiles" / "gqa-all.json").provenance
    assert (pv.n_correct, pv.n_incorrect, pv.split) == (2, 2, "clean")

    pairs = tmp_path / "eq4-pairs"
    (pairs / "stage1").mkdir(parents=True)
    shutil.copytree(out / "stage1" / "edits", pairs / "stage1" / "edits")
    assert calibrate_main(argv(questions, images, tiny_llava_dir, pairs, "--attribute-on", "eq4-pairs")) == 1
    assert "no Eq-4 triples to attribute" in capsys.readouterr().err
    assert not (pairs / "profiles").exists()
