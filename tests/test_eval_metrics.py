"""Task metrics on fixed prediction sets, checked against values computed by hand (in the comments)."""

from __future__ import annotations

import json

import pytest

from vseam.benchmarks import cocoqa, gqa, pope
from vseam.benchmarks.report import write_report
from vseam.benchmarks.task import score
from vseam.calibrate.records import VQARecord


def rec(qid, answer, subtype, question="Is there a dog?"):
    return VQARecord(qid=str(qid), dataset="fixture", question=question, answer=answer, image="x.png", subtype=subtype)


def answers_for(mod, rows):
    """rows: (record, reply); reply None = the request failed."""
    return [score(r, reply, mod.parse, mod.is_correct, mod.category(r)) for r, reply in rows]


def test_pope_metrics_by_hand():
    rows = [
        # random: gold y y y n n n; parsed y n y n y ?  → TP 2, FN 1, TN 1, FP 1, 1 unparsed
        (rec(1, "yes", "random"), "Yes"),
        (rec(2, "yes", "random"), "No"),
        (rec(3, "yes", "random"), "Yes."),
        (rec(4, "no", "random"), "No"),
        (rec(5, "no", "random"), "Yes"),
        (rec(6, "no", "random"), "I cannot tell"),
        # popular: gold y n n y; parsed n n n, one request failed → FN 1, TN 2
        (rec(7, "yes", "popular"), "No"),
        (rec(8, "no", "popular"), "No"),
        (rec(9, "no", "popular"), "no, there is none"),
        (rec(10, "yes", "popular"), None),
        # adversarial: gold n y; parsed y y → FP 1, TP 1
        (rec(11, "no", "adversarial"), "Yes"),
        (rec(12, "yes", "adversarial"), "Yes"),
    ]
    m = pope.metrics(answers_for(pope, rows))
    assert list(m) == ["random", "popular", "adversarial", "all"]
    r = m["random"]
    assert (r["tp"], r["fp"], r["tn"], r["fn"], r["unparsed"], r["n"], r["failed"]) == (2, 1, 1, 1, 1, 6, 0)
    assert r["accuracy"] == pytest.approx(3 / 6)
    assert r["accuracy_answered"] == pytest.approx(3 / 5)
    assert r["precision"] == pytest.approx(2 / 3)
    assert r["recall"] == pytest.approx(2 / 3)
    assert r["f1"] == pytest.approx(2 / 3)
    assert r["yes_ratio"] == pytest.approx(3 / 5)
    p = m["popular"]
    assert (p["n"], p["failed"], p["tp"], p["fn"], p["tn"]) == (3, 1, 0, 1, 2)
    assert p["accuracy"] == pytest.approx(2 / 3)
    assert p["precision"] is None  # no predicted yes
    assert p["recall"] == 0.0 and p["f1"] == 0.0 and p["yes_ratio"] == 0.0
    a = m["adversarial"]
    assert a["accuracy"] == 0.5 and a["precision"] == 0.5 and a["recall"] == 1.0
    assert a["f1"] == pytest.approx(2 / 3) and a["yes_ratio"] == 1.0
    al = m["all"]
    assert (al["n"], al["answered"], al["unparsed"], al["failed"]) == (11, 10, 1, 1)
    assert (al["tp"], al["fp"], al["tn"], al["fn"]) == (3, 2, 3, 2)
    assert al["accuracy"] == pytest.approx(6 / 11)
    assert al["accuracy_answered"] == pytest.approx(6 / 10)
    assert al["precision"] == pytest.approx(0.6) and al["recall"] == pytest.approx(0.6)
    assert al["f1"] == pytest.approx(0.6) and al["yes_ratio"] == pytest.approx(0.5)


def test_cocoqa_metrics_by_hand():
    records = [
        rec(1, "brown", "color", "what is the color of the horses"),
        rec(2, "red", "color"),
        rec(3, "green", "color"),
        rec(4, "dog", "object"),
        rec(5, "cat", "object"),
        rec(6, "bird", "object"),
        rec(7, "kitchen", "location"),
        rec(8, "room", "location"),
        rec(9, "two", "number"),
    ]
    kept, excluded = cocoqa.select(records)
    assert [r.qid for r in kept] == [str(i) for i in range(1, 9)]
    assert excluded == {"number (excluded as in the paper)": 1}
    replies = ["Brown", "red.", "blue", "dogs", "a cat", "", "Kitchen", "the street"]
    m = cocoqa.metrics(answers_for(cocoqa, zip(kept, replies)))
    assert m["color"]["accuracy"] == pytest.approx(2 / 3)  # brown ✓ red ✓ blue ✗
    assert m["object"]["accuracy"] == pytest.approx(2 / 3)  # dogs ✓ a cat ✓ "" unparsed
    assert m["object"]["unparsed"] == 1
    assert m["location"]["accuracy"] == pytest.approx(1 / 2)  # kitchen ✓ street ✗
    assert m["all"]["accuracy"] == pytest.approx(5 / 8)
    assert m["mean of types"]["accuracy"] == pytest.approx((2 / 3 + 2 / 3 + 1 / 2) / 3)
    assert cocoqa.prompt(_Fam(), kept[0]).system == "SYS"


class _Fam:
    short_answer_system = "SYS"

    def short_answer_text(self, q):
        return f"Q: {q}"

    def binary_text(self, q):
        return f"B: {q}"


def test_gqa_metrics_by_hand():
    rows = [
        (rec(1, "yes", "color"), "Yes"),  # ✓
        (rec(2, "no", "color"), "No"),  # ✓      color 2/2
        (rec(3, "yes", "material"), "No"),  # ✗
        (rec(4, "no", "material"), "No"),  # ✓
        (rec(5, "yes", "material"), "no"),  # ✗
        (rec(6, "no", "material"), "Yes"),  # ✗   material 1/4
        (rec(7, "yes", "animal"), "Yes"),  # ✓    animal 1/1
        (rec(8, "yes", "spatial"), "Yes"),  # ✓
        (rec(9, "no", "spatial"), "There is no such thing"),  # ✓ (negation)
        (rec(10, "yes", "spatial"), "Maybe"),  # unparsed   spatial 2/3
        (rec(11, "no", "action"), "Yes"),  # ✗    action 0/1
    ]
    m = gqa.metrics(answers_for(gqa, rows))
    st = m["subtypes"]
    assert {k: v["accuracy"] for k, v in st.items()} == pytest.approx(
        {"color": 1.0, "material": 0.25, "animal": 1.0, "spatial": 2 / 3, "action": 0.0})
    assert st["spatial"]["unparsed"] == 1
    lv = m["levels"]
    assert lv["attribute"]["accuracy"] == pytest.approx(3 / 6)
    assert lv["attribute"]["accuracy_macro"] == pytest.approx((1.0 + 0.25) / 2)
    assert lv["object"]["accuracy"] == 1.0
    assert lv["relation"]["accuracy"] == pytest.approx(2 / 4)
    assert lv["relation"]["accuracy_macro"] == pytest.approx((2 / 3 + 0) / 2)
    assert m["all"]["accuracy"] == pytest.approx(6 / 11)
    assert m["avg"] == pytest.approx((0.5 + 1.0 + 0.5) / 3)
    head = gqa.headline(m)
    assert head["avg"] == pytest.approx(2 / 3) and head["material"] == 0.25
    kept, excluded = gqa.select([r for r, _ in rows] + [rec(99, "blue", "color"), rec(98, "yes", "weather")])
    assert len(kept) == 11 and excluded == {"not yes/no": 1, "subtype 'weather'": 1}


def test_report_files(tmp_path):
    rows = [(rec(i, "yes" if i % 2 else "no", "random"), "Yes") for i in range(10)]
    m = pope.metrics(answers_for(pope, rows))
    report = {
        "task": "pope", "model": "tiny", "base_url": "http://x/v1", "profile_via": "xargs", "family": "llava",
        "created": "now", "vseam_version": "0", "data": {"records": 10, "excluded": {}},
        "arms": [{"label": "none", "profile": "none"}],
        "requests": {"items": 10, "unique": 10, "from_cache": 0, "asked": 10, "failed": 0, "first_errors": []},
        "metrics": {"none": m}, "headline": {"none": pope.headline(m)}, "significance": None,
    }
    paths = write_report(report, tmp_path)
    doc = json.loads(paths["json"].read_text())
    assert doc["metrics"]["none"]["random"]["accuracy"] == 0.5
    md = paths["markdown"].read_text()
    assert "| none | 50.00 | 50.00 |" in md  # random and all
    assert "| random | none | 0.500 | 0.500 | 1.000 | 0.667 | 1.000 | 0 | 0 | 10 |" in md
    from PIL import Image

    with Image.open(paths["chart"]) as im:
        assert im.size[0] > 300 and im.size[1] > 200


def test_tasks_select_the_released_data(shared_data):
    """On the real released files: COCO-QA drops the number type, GQA keeps all seven binary subtypes."""
    from collections import Counter

    from vseam.benchmarks.run import load_records

    cq, excluded, _ = load_records("cocoqa", [str(shared_data / "vseam-cocoqa")], None)
    assert {r.subtype for r in cq} == {"color", "location"}  # the release has no object CSV
    assert excluded == {"number (excluded as in the paper)": 5711}
    g, excluded, _ = load_records("gqa", [str(shared_data / "vseam-gqa")], None)
    counts = Counter(r.subtype for r in g)
    assert set(counts) == {"color", "material", "animal", "vehicle", "indoor", "spatial", "action"}
    assert not excluded and all(r.answer in ("yes", "no") for r in g)
    small, _, _ = load_records("gqa", [str(shared_data / "vseam-gqa")], None, limit=70, seed=1)
    assert len(small) == 70 and Counter(r.subtype for r in small) == {s: 10 for s in counts}
    pope_recs, _, skipped = load_records("pope", [str(shared_data / "pope")], None)
    assert len(pope_recs) == 9000 and Counter(r.subtype for r in pope_recs) == {
        "random": 3000, "popular": 3000, "adversarial": 3000}
