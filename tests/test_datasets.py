"""Dataset loaders: the real files in ../shared/data (skipped when absent) and our own small fixtures."""

from __future__ import annotations

import collections
import json
import pathlib

import pytest
from PIL import Image

from vseam.calibrate.datasets import DATASETS, LoadResult, available, load_dataset, select_records
from vseam.calibrate.records import Box, VQARecord
from vseam.core.vocab import SUBTYPES
from vseam.core.errors import UserError

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


# ---- real files -------------------------------------------------------------------------------------------------


def test_vseam_gqa_subsets_real_files(shared_data):
    res = load_dataset("gqa", path=shared_data / "vseam-gqa")
    by_sub = collections.Counter(r.subtype for r in res.records)
    assert set(by_sub) == set(SUBTYPES)
    # every subset file is parsed whole (sizes of the released files)
    for name in ("Action", "Animal", "Indoor", "Spatial", "Vehicle"):
        assert by_sub[name.lower()] == len(json.loads((shared_data / "vseam-gqa" / f"{name}.json").read_text()))
    color = json.loads((shared_data / "vseam-gqa" / "Color.json").read_text())
    assert isinstance(color, dict) and by_sub["color"] == len(color)  # the dict-keyed subset
    assert res.total_skipped == 0
    assert all(r.answer in ("yes", "no") and r.boxes and r.dataset == "gqa" for r in res.records)
    rec = next(r for r in res.records if r.qid == next(iter(color)))
    entry = color[rec.qid]
    assert rec.question == entry["question"] and rec.answer == entry["answer"].lower()
    assert rec.boxes == [Box.from_dict(b) for b in entry["object_positions"]]
    assert rec.full_answer == entry["fullAnswer"] and rec.image == f"{entry['imageId']}.jpg"
    assert rec.level == "attribute"
    # the colour subset is balanced; the object/relation subsets are all "yes" and survive balancing whole
    bal = load_dataset("gqa", path=shared_data / "vseam-gqa", balance=True, subtypes=["color", "animal"])
    counts = collections.Counter((r.subtype, r.answer) for r in bal.records)
    assert counts[("color", "yes")] == counts[("color", "no")] > 0
    assert counts[("animal", "yes")] == by_sub["animal"]


def test_pope_real_files(shared_data):
    res = load_dataset("pope", path=shared_data / "pope")
    assert len(res.records) == 9000 and res.total_skipped == 0
    assert collections.Counter(r.subtype for r in res.records) == {"random": 3000, "popular": 3000, "adversarial": 3000}
    first = json.loads((shared_data / "pope" / "coco_pope_random.json").open().readline())
    rec = next(r for r in res.records if r.qid == f"random-{first['question_id']}")
    assert (rec.question, rec.answer, rec.image) == (first["text"], first["label"], first["image"])


def test_cocoqa_vseam_csv_real_files(shared_data):
    res = load_dataset("cocoqa", path=shared_data / "vseam-cocoqa")
    subs = collections.Counter(r.subtype for r in res.records)
    assert set(subs) == {"color", "number", "location"}
    lines = {p.stem: len(p.read_text().splitlines()) - 1 for p in (shared_data / "vseam-cocoqa").glob("*.csv")}
    assert sum(subs.values()) + res.total_skipped == sum(lines.values())
    rec = next(r for r in res.records if r.subtype == "color")
    assert rec.image.endswith(".jpg") and rec.meta["image_id"].isdigit() and rec.answer == rec.answer.lower()


def test_gqa_scene_graph_example_enriches_subsets(shared_data, tmp_path):
    example = json.loads((shared_data / "vseam-gqa" / "scene_graph_example.json").read_text())
    image_id, graph = next(iter(example.items()))
    man_id = next(i for i, o in graph["objects"].items() if o["name"] == "man")
    entry = {"question": "Is the man to the left of the shorts?", "answer": "Yes", "fullAnswer": "Yes.",
             "imageId": image_id, "semanticStr": f"select: man ({man_id})",
             "semantic": [{"operation": "select", "dependencies": [], "argument": f"man ({man_id})"}],
             "object_positions": [{k: graph["objects"][man_id][k] for k in "xywh"}], "question_id": "q1"}  # fmt: skip
    (tmp_path / "Spatial.json").write_text(json.dumps([entry]))
    res = load_dataset("gqa", path=tmp_path, scene_graphs=shared_data / "vseam-gqa" / "scene_graph_example.json")
    (rec,) = res.records
    assert rec.scene["objects"][man_id]["name"] == "man" and rec.scene["width"] == graph["width"]


# ---- own fixtures -----------------------------------------------------------------------------------------------


def test_official_gqa_selects_binary_subtype_questions_with_scene_graph_boxes():
    d = FIXTURES / "gqa_official"
    res = load_dataset("gqa", path=d / "val_balanced_questions.json", scene_graphs=d / "val_sceneGraphs.json")
    got = {r.qid: r for r in res.records}
    assert {q: r.subtype for q, r in got.items()} == {
        "g-color": "color", "g-material": "material", "g-animal": "animal", "g-spatial": "spatial", "g-action": "action"
    }  # fmt: skip
    assert got["g-color"].boxes == [Box(4, 6, 20, 18)] and got["g-color"].answer == "no"
    assert got["g-spatial"].boxes == [Box(5, 20, 16, 12), Box(40, 2, 18, 40)]  # subject, then related object
    assert got["g-action"].boxes == [Box(12, 4, 14, 36), Box(5, 20, 16, 12)]
    assert got["g-spatial"].scene["objects"]["202"]["name"] == "tree"
    assert res.skipped == {
        "not one of the V-SEAM subtypes": 1,  # "Is there a tree" (no object category)
        "not a yes/no question": 1,
        "image has no scene graph": 1,
        "object id not in scene graph": 1,
        "malformed entry": 1,
    }
    assert res.skipped_ids["image has no scene graph"] == ["g-nograph"]
    assert "g-malformed" in res.summary() and "5 records" in res.summary()


def test_gqa_missing_images_are_counted_with_ids(tmp_path):
    d = FIXTURES / "gqa_official"
    Image.new("RGB", (64, 48)).save(tmp_path / "img2.jpg")
    res = load_dataset("gqa", path=d, scene_graphs=d / "val_sceneGraphs.json", images=tmp_path)
    assert {r.qid for r in res.records} == {"g-animal", "g-spatial", "g-action"}
    assert all(pathlib.Path(r.image).is_file() for r in res.records)
    assert res.skipped["missing image"] == 2 and set(res.skipped_ids["missing image"]) == {"g-color", "g-material"}


def test_vseam_fixture_subsets_and_format_flag():
    res = load_dataset("gqa", path=FIXTURES / "photos_vseam")
    assert collections.Counter(r.subtype for r in res.records) == {"color": 5, "material": 1, "indoor": 1, "spatial": 1}
    with pytest.raises(UserError, match="subtype"):
        load_dataset("gqa", path=FIXTURES / "photos_vseam" / "Color.json", format="vseam", subtype="colour")


def test_malformed_vseam_entries_never_crash(tmp_path):
    good = {"question": "Is the cup red?", "answer": "Yes", "imageId": "1", "object_positions": [{"x": 1, "y": 2, "w": 3, "h": 4}]}
    bad_box = dict(good, object_positions=[{"x": 1, "y": 2}])
    (tmp_path / "Color.json").write_text(json.dumps({"a": good, "b": bad_box, "c": {"question": "?"}, "d": []}))
    res = load_dataset("gqa", path=tmp_path)
    assert [r.qid for r in res.records] == ["a"]
    assert res.skipped == {"malformed box": 1, "malformed entry": 2}
    (tmp_path / "Color.json").write_text("{not json")
    with pytest.raises(UserError, match="Color.json: not valid JSON"):
        load_dataset("gqa", path=tmp_path)


def test_pope_fixture_skips_malformed_lines_and_missing_images(tmp_path):
    res = load_dataset("pope", path=FIXTURES / "pope" / "coco_pope_random.json")
    assert [r.qid for r in res.records] == ["random-1", "random-2", "random-5"]
    assert res.skipped == {"malformed entry": 1, "label is not yes/no": 1}
    assert res.skipped_ids["malformed entry"] == ["coco_pope_random.json:3"]
    Image.new("RGB", (8, 8)).save(tmp_path / "COCO_val2014_000000000042.jpg")
    res = load_dataset("pope", path=FIXTURES / "pope", images=tmp_path)
    assert [r.qid for r in res.records] == ["random-1", "random-2"]
    assert res.skipped_ids["missing image"] == ["random-5"]


def test_cocoqa_original_release_format(tmp_path):
    res = load_dataset("cocoqa", path=FIXTURES / "cocoqa_release")
    assert [(r.subtype, r.answer) for r in res.records] == [
        ("color", "red"), ("number", "two"), ("object", "vase"), ("location", "bed")
    ]  # fmt: skip
    assert res.skipped == {"unknown question type": 1}
    Image.new("RGB", (8, 8)).save(tmp_path / "COCO_train2014_000000000042.jpg")
    res = load_dataset("cocoqa", path=FIXTURES / "cocoqa_release", images=tmp_path)
    assert [r.meta["image_id"] for r in res.records] == ["42", "42"]
    assert res.skipped["missing image"] == 2
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("questions.txt", "answers.txt", "img_ids.txt", "types.txt"):
        (broken / name).write_text("a\n" if name != "types.txt" else "0\n1\n")
    with pytest.raises(UserError, match="different line counts"):
        load_dataset("cocoqa", path=broken)


# ---- registry and selection -------------------------------------------------------------------------------------


def test_registry_names_and_errors():
    names = available()
    assert set(names) == {"gqa", "pope", "cocoqa", "shapes"}
    with pytest.raises(UserError, match="unknown dataset 'nope'"):
        load_dataset("nope")
    with pytest.raises(UserError, match="not found"):
        load_dataset("pope", path="/nonexistent/pope")
    assert DATASETS["gqa"].__module__ == "vseam.calibrate.datasets.gqa"


def _records(n_per: int) -> LoadResult:
    recs = [
        VQARecord(qid=f"{s}-{i}", dataset="t", question="Is it?", answer="yes" if i % 3 else "no", image="x",
                  subtype=s, boxes=[Box(0, 0, 1, 1)] if i % 5 else [])  # fmt: skip
        for s in ("color", "spatial")
        for i in range(n_per)
    ]
    return LoadResult(records=recs)


def test_selection_is_seeded_stratified_and_counted():
    a = select_records(_records(30), limit=10, seed=3)
    b = select_records(_records(30), limit=10, seed=3)
    c = select_records(_records(30), limit=10, seed=4)
    assert [r.qid for r in a] == [r.qid for r in b] != [r.qid for r in c]
    assert collections.Counter(r.subtype for r in a) == {"color": 5, "spatial": 5}
    order = [r.qid for r in _records(30).records]
    assert [order.index(r.qid) for r in a if r.subtype == "color"] == sorted(order.index(r.qid) for r in a if r.subtype == "color")
    res = _records(30)
    kept = select_records(res, require_boxes=True, balance=True)
    assert res.skipped["no boxes"] == 12
    for s in ("color", "spatial"):
        answers = collections.Counter(r.answer for r in kept if r.subtype == s)
        assert answers["yes"] == answers["no"] > 0
    half = select_records(_records(30), fraction=0.5, seed=1)
    assert collections.Counter(r.subtype for r in half) == {"color": 15, "spatial": 15}
    assert {r.subtype for r in select_records(_records(4), subtypes=["spatial"])} == {"spatial"}
    with pytest.raises(UserError, match="fraction"):
        select_records(_records(2), fraction=1.5)
