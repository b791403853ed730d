"""The `shapes` world: deterministic records, balanced questions, answers that agree with the scene graph, exact
counterfactuals that flip the answer and change only the edited object's pixels."""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest
from PIL import Image

from vseam.calibrate.datasets import shapes as S
from vseam.calibrate.records import VQARecord
from vseam.core.vocab import SUBTYPES


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return S.load_shapes("calib", limit=140, images=tmp_path_factory.mktemp("shapes"))


def test_records_are_balanced_and_cover_all_subtypes(records):
    counts = collections.Counter((r.subtype, r.answer) for r in records)
    assert set(counts) == {(s, a) for s in SUBTYPES for a in ("yes", "no")}
    assert set(counts.values()) == {10}
    assert all(r.dataset == "shapes" and r.is_binary for r in records)
    assert len({r.qid for r in records}) == len(records)


def test_generation_is_deterministic_and_images_on_disk_equal_the_render(records, tmp_path):
    again = S.load_shapes("calib", limit=20, images=tmp_path)
    for a, b in zip(records[:20], again):
        assert a.question == b.question and a.answer == b.answer and a.scene == b.scene and a.meta == b.meta
        assert np.array_equal(np.asarray(Image.open(a.image)), np.asarray(Image.open(b.image)))
        assert np.array_equal(np.asarray(Image.open(a.image)), S.render(S.scene_of(a)))
    # different splits and seeds give different data
    other = S.load_shapes("test", limit=20, images=tmp_path)
    assert [r.question for r in other] != [r.question for r in again]
    assert [r.scene for r in S.load_shapes("calib", limit=5, seed=1, images=tmp_path)] != [r.scene for r in again[:5]]


def test_answers_follow_the_gqa_style_scene_graph(records):
    for r in records:
        g = r.scene
        assert set(g) == {"width", "height", "objects"}
        for obj in g["objects"].values():
            assert set(obj) == {"name", "x", "y", "w", "h", "attributes", "relations"}
            assert obj["name"] in S.SHAPES and obj["attributes"][0] in S.COLORS and obj["attributes"][1] in S.TEXTURES
        assert S.answer_from_graph(g, r.subtype, r.question) == r.answer
        names = [o["name"] for o in g["objects"].values()]
        assert len(names) == len(set(names)), "objects are referred to by name, so names must be unique"


def test_boxes_are_the_tight_boxes_of_the_asked_objects(records):
    for r in records:
        scene = S.scene_of(r)
        assert len(r.boxes) == (2 if r.subtype in ("spatial", "action") else 1)
        for box, oid in zip(r.boxes, r.meta["targets"]):
            m = S.object_mask(scene.get(oid))
            ys, xs = np.where(m)
            assert (box.x, box.y, box.w, box.h) == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
            g = r.scene["objects"][oid]
            assert (g["x"], g["y"], g["w"], g["h"]) == (box.x, box.y, box.w, box.h)
        if r.subtype in S.SHAPE_GROUPS:
            # the box of an object question is an object of the asked group (the asked one, or its sibling)
            assert S.GROUP_OF[r.scene["objects"][r.meta["targets"][0]]["name"]] == r.subtype


def test_exact_counterfactual_flips_the_answer_and_touches_only_the_edited_object(records):
    for r in records:
        cf = S.counterfactual(r)
        assert cf.answer == ("no" if r.answer == "yes" else "yes"), r.question
        scene = S.scene_of(r)
        oid = cf.edit["object"]
        allowed = S.object_mask(scene.get(oid))
        if not cf.edit.get("remove"):
            allowed |= S.object_mask(cf.scene.get(oid))
        assert cf.changed.any()
        assert not (cf.changed & ~allowed).any(), f"{r.qid}: pixels outside the edited object changed"
        # the counterfactual question swaps exactly one word-level unit of the original question
        assert cf.question != r.question and cf.question.split()[:2] == r.question.split()[:2]
        # the rest of the scene is untouched
        for o in scene.objects:
            if o.id != oid:
                assert cf.scene.get(o.id) == o


def test_counterfactual_edits_by_subtype(records):
    by = {r.subtype + "-" + r.answer: r for r in records}
    cf = S.counterfactual(by["color-yes"])
    assert set(cf.edit["set"]) == {"color"}
    assert S.counterfactual(by["material-no"]).edit["set"].keys() == {"texture"}
    assert S.counterfactual(by["animal-yes"]).edit.get("remove") is True
    assert S.counterfactual(by["vehicle-no"]).edit["set"]["shape"] in S.SHAPE_GROUPS["vehicle"]
    sp = by["spatial-yes"]
    cf = S.counterfactual(sp)
    a, b = S.scene_of(sp).get(sp.meta["targets"][0]), S.scene_of(sp).get(sp.meta["targets"][1])
    moved = cf.scene.get(a.id)
    # mirrored through the reference object's center, along the asked axis (within rounding)
    rel = next(rel for rel in S.SPATIAL if f" {rel} " in sp.question)
    axis = S.SPATIAL[rel][0]
    assert abs((moved.center[axis] - b.center[axis]) + (a.center[axis] - b.center[axis])) <= 1.0
    act = by["action-yes"]
    objs = S.scene_of(act)
    assert S.touching(objs.get(act.meta["targets"][0]), objs.get(act.meta["targets"][1]))
    cfa = S.counterfactual(act).scene
    assert not S.touching(cfa.get(act.meta["targets"][0]), cfa.get(act.meta["targets"][1]))


def test_exact_pair_and_compare_edit(records, tmp_path):
    r = next(r for r in records if r.subtype == "color")
    pair = S.exact_pair(r, tmp_path)
    assert pair.editor == "render" and pair.counterfactual == r.meta["counterfactual"]
    perfect = S.compare_edit(r, pair.edited_image)
    assert perfect == {"changed_iou": 1.0, "pixel_agreement": 1.0, "region_agreement": 1.0, "outside_changed": 0.0}
    untouched = S.compare_edit(r, r.image)
    assert untouched["changed_iou"] == 0.0 and untouched["region_agreement"] < 0.5
    # a box-filled recolor (what a box-only editor without a mask would do) overshoots the shape
    img = np.asarray(Image.open(r.image)).copy()
    b = r.boxes[0]
    new = S.COLORS[S.counterfactual(r).scene.get(r.meta["targets"][0]).color]
    img[int(b.y) : int(b.y + b.h), int(b.x) : int(b.x + b.w)] = new
    boxy = S.compare_edit(r, img)
    assert 0.3 < boxy["changed_iou"] < 1.0 and boxy["outside_changed"] > 0
    with pytest.raises(ValueError, match="edited image is"):
        S.compare_edit(r, np.zeros((10, 10, 3), np.uint8))


def test_loader_options_and_record_roundtrip(tmp_path):
    recs = S.load_shapes("test", limit=12, subtypes=["spatial", "action"], images=tmp_path)
    assert len(recs) == 12 and {r.subtype for r in recs} == {"spatial", "action"}
    half = S.load_shapes("test", limit=12, subtypes=["spatial", "action"], images=tmp_path, fraction=0.5)
    assert len(half) == 6 and {r.qid for r in half} <= {r.qid for r in recs}
    back = VQARecord.from_json(json.loads(json.dumps(recs[0].to_json())))
    assert back == recs[0] and back.level == "relation"
    with pytest.raises(ValueError, match="unknown subtype"):
        S.load_shapes("test", limit=2, subtypes=["colour"], images=tmp_path)
    with pytest.raises(ValueError, match="unknown shapes split"):
        S.load_shapes("dev", limit=2, images=tmp_path)


def test_all_questions_agree_with_the_scene_graph():
    for i in range(14):
        scene, q = S.generate("train", i)
        g = S.scene_graph(scene)
        qs = S.all_questions(scene)
        assert (q.subtype, q.text, q.answer) in qs or q.subtype == "spatial" and q.text in [t for _, t, _ in qs]
        for subtype, text, answer in qs:
            assert S.answer_from_graph(g, subtype, text) == answer
        assert {a for _, _, a in qs} == {"yes", "no"}


def test_every_word_of_the_world_is_one_token():
    """Shape, color, pattern and relation words are single tokens of the toy tokenizer (so answers and edits
    move one token), and the answer words stay single tokens."""
    from vseam.core.toy_checkpoints import build_llama_tokenizer

    tok = build_llama_tokenizer()
    words = list(S.SHAPES) + list(S.COLORS) + list(S.TEXTURES) + ["left", "right", "above", "below", S.CONTACT, "Yes", "No"]
    base = tok("Is the", add_special_tokens=False)["input_ids"]
    for w in words:
        ids = tok("Is the " + w, add_special_tokens=False)["input_ids"]
        assert len(ids) == len(base) + 1, w


def test_registered_as_dataset_shapes(tmp_path):
    """`--dataset shapes` goes through the shared registry: the split is `--data`, selection options apply."""
    from vseam.calibrate.datasets import available, load_dataset
    from vseam.core.errors import UserError

    assert "shapes" in available()
    res = load_dataset("shapes", path="test", images=str(tmp_path), size=28, limit=14, seed=3)
    assert len(res.records) == 14 and all(r.qid.startswith("shapes-test-") for r in res.records)
    assert collections.Counter(r.subtype for r in res.records) == {s: 2 for s in SUBTYPES}
    direct = {r.qid: r for r in S.load_shapes("test", limit=28, images=tmp_path)}
    assert all(direct[r.qid] == r for r in res.records)
    calib = load_dataset("shapes", images=str(tmp_path), size=7).records
    assert [r.meta["split"] for r in calib] == ["calib"] * 7
    with pytest.raises(UserError, match="must be one of"):
        load_dataset("shapes", path="holdout", images=str(tmp_path))
