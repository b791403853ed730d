"""The world's v2 parts: training priors (held-out splits untouched), open-ended questions, shapes-POPE and
shapes-COCO-QA in the public benchmarks' own formats."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json

import numpy as np
import pytest

from vseam.calibrate.datasets import load_dataset
from vseam.calibrate.datasets import shapes as S
from vseam.calibrate.datasets.shapes import benchmarks as B
from vseam.calibrate.datasets.shapes.open_questions import LOCATIONS, location_word, open_questions
from vseam.calibrate.datasets.shapes.oracle import parse_question
from vseam.calibrate.datasets.shapes.priors import TRAIN_PRIORS, priors_for
from vseam.core.vocab import SUBTYPES


def test_held_out_splits_are_drawn_exactly_as_before_the_priors():
    """val/calib/test records hash to the value they had before the training priors existed (computed on the
    previous generator), so calibration and evaluation data did not move."""
    h = hashlib.sha256()
    for split in ("val", "calib", "test"):
        for i in range(70):
            scene, q = S.generate(split, i)
            h.update(json.dumps([scene.to_json(), q.text, q.answer]).encode())
    assert h.hexdigest() == "b390bec09739bbfa5119ab949107e98ede85bf8204719f1c52b69f5c977a47d7"
    assert priors_for("test") is None and priors_for("train") is TRAIN_PRIORS


def _prior_rates(split: str, n: int) -> tuple[float, float]:
    typical = partner = 0
    objects = pairs = 0
    for i in range(n):
        scene, _ = S.generate(split, i)
        shapes = {o.shape for o in scene.objects}
        for o in scene.objects:
            objects += 1
            typical += o.color == TRAIN_PRIORS.typical_color[o.shape]
            pairs += 1
            partner += TRAIN_PRIORS.partners[o.shape] in shapes
    return typical / objects, partner / pairs


def test_training_scenes_carry_the_priors_and_held_out_scenes_do_not():
    train_color, train_partner = _prior_rates("train", 420)
    test_color, test_partner = _prior_rates("test", 420)
    # uniform colours: 1/6 typical; with the prior ~0.6 + 0.4/6
    assert train_color > 0.5 and test_color < 0.25, (train_color, test_color)
    assert train_partner > test_partner + 0.2, (train_partner, test_partner)


def test_the_second_held_out_split_is_drawn_like_test_from_its_own_seed(tmp_path):
    """`test2` (the demo's held-out split since the third look) has no priors, cycles the subtypes with balanced
    answers like `test`, shares no scene with it, and loads through `--dataset shapes --data test2`."""
    assert priors_for("test2") is None
    color, partner = _prior_rates("test2", 420)
    test_color, test_partner = _prior_rates("test", 420)
    assert color < 0.25 and abs(partner - test_partner) < 0.1, (color, partner, test_partner)
    ys, scenes = collections.Counter(), set()
    for i in range(140):
        scene, q = S.generate("test2", i)
        assert q.subtype == SUBTYPES[i % len(SUBTYPES)]
        assert S.answer_from_graph(S.scene_graph(scene), q.subtype, q.text) == q.answer
        ys[q.answer] += 1
        scenes.add(json.dumps(scene.to_json(), sort_keys=True))
    assert ys["yes"] == ys["no"] == 70
    assert not scenes & {json.dumps(S.generate("test", i)[0].to_json(), sort_keys=True) for i in range(140)}
    recs = load_dataset("shapes", path="test2", images=str(tmp_path), size=14).records
    assert len(recs) == 14 and recs[0].qid == "shapes-test2-s0-000000" and recs[0].subtype == SUBTYPES[0]


def test_training_questions_stay_balanced_and_true():
    ys = collections.Counter()
    for i in range(140):
        scene, q = S.generate("train", i)
        ys[q.answer] += 1
        assert S.answer_from_graph(S.scene_graph(scene), q.subtype, q.text) == q.answer
    assert ys["yes"] == ys["no"] == 70


def test_open_questions_have_unique_true_answers():
    seen = collections.Counter()
    for i in range(60):
        scene, _ = S.generate("test", i)
        by_shape = {o.shape: o for o in scene.objects}
        for kind, text, answer in open_questions(scene):
            seen[kind] += 1
            if kind == "color":
                assert by_shape[text.split()[-1].rstrip("?")].color == answer
            elif kind == "location":
                assert answer in LOCATIONS and location_word(by_shape[text.split()[-1].rstrip("?")]) == answer
            else:
                words = text[len("What is the "):-len(" object?")].split()
                match = [o for o in scene.objects if o.color == words[-1] and (len(words) == 1 or o.texture == words[0])]
                assert [o.shape for o in match] == [answer]
    assert set(seen) == {"color", "location", "object"}


def test_location_words():
    o = S.Obj("o0", "circle", "red", "plain", 2, 20, 16)  # centre (10, 28): far left
    assert location_word(o) == "left"
    assert location_word(o.moved(24, 24)) == "middle"
    assert location_word(o.moved(24, 44)) == "bottom"


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes-bench")
    return out, B.write_all(out, n_images=30)


def test_shapes_pope_is_pope_jsonl_read_by_the_pope_loader(bench):
    out, summary = bench
    files = sorted(p.name for p in (out / "pope").glob("*.json"))
    assert files == ["shapes_pope_adversarial.json", "shapes_pope_popular.json", "shapes_pope_random.json"]
    first = json.loads((out / "pope" / "shapes_pope_random.json").read_text().splitlines()[0])
    assert set(first) == {"question_id", "image", "text", "label"} and first["question_id"] == 1
    res = load_dataset("pope", path=str(out / "pope"), images=str(out / "pope" / "images"))
    assert len(res.records) == 3 * 30 * 4 and not res.skipped
    by_split = collections.defaultdict(list)
    for r in res.records:
        by_split[r.subtype].append(r)
    for split, recs in by_split.items():
        assert collections.Counter(r.answer for r in recs) == {"yes": 60, "no": 60}, split
    # labels are the truth: the image holds the shape exactly when the label is yes
    scenes = {f"shapes_pope_{i:05d}.png": B.bench_scene("pope", i, 0, 2) for i in range(30)}
    for r in res.records:
        shape = r.question[len("Is there a "):-len(" in the image?")]
        present = shape in {o.shape for o in scenes[r.image.split("/")[-1]].objects}
        assert present == (r.answer == "yes")
    # adversarial negatives are the present objects' training partners far more often than random negatives are
    co = summary["pope"]["train_statistics"]["cooccurrence"]
    top_partner = {a: max((k.split("|")[1] for k in co if k.startswith(a + "|")), key=lambda b: co[f"{a}|{b}"])
                   for a in S.SHAPES}
    assert top_partner == TRAIN_PRIORS.partners  # the counted training statistics recover the planted prior

    def partner_share(split):
        hits = []
        for r in by_split[split]:
            if r.answer == "no":
                img = scenes[r.image.split("/")[-1]]
                shape = r.question[len("Is there a "):-len(" in the image?")]
                hits.append(any(TRAIN_PRIORS.partners[o.shape] == shape for o in img.objects))
        return np.mean(hits)

    assert partner_share("adversarial") > partner_share("random") + 0.3, (partner_share("adversarial"),
                                                                           partner_share("random"))
    freq = summary["pope"]["train_statistics"]["frequency"]
    pop = [r.question.split()[3] for r in by_split["popular"] if r.answer == "no"]
    rnd = [r.question.split()[3] for r in by_split["random"] if r.answer == "no"]
    assert np.mean([freq[s] for s in pop]) > np.mean([freq[s] for s in rnd])


def test_shapes_cocoqa_is_read_by_the_cocoqa_loader_and_task(bench):
    from vseam.benchmarks import cocoqa

    out, summary = bench
    res = load_dataset("cocoqa", path=str(out / "cocoqa"), images=str(out / "cocoqa" / "images"))
    kept, excluded = cocoqa.select(res.records)
    assert len(kept) == len(res.records) == sum(summary["cocoqa"]["questions"].values()) and not excluded
    assert {r.subtype for r in kept} == {"color", "object", "location"}
    for r in kept:
        assert len(r.answer.split()) == 1 and cocoqa.is_correct(r, cocoqa.parse(r.answer.capitalize() + "."))
    # written once: a second call with the same settings reuses the files
    assert B.write_all(out, n_images=30) == json.loads((out / "manifest.json").read_text())


def _yes_rate_when_typical_colour_asked(priors, n: int) -> float:
    asked_typical = collections.Counter()
    for i in range(0, n * 7, 7):  # colour records only (subtype cycles with period 7)
        _, q = S.generate("train", i, priors=priors)
        _, shape, colour = parse_question(q.text)
        if colour == TRAIN_PRIORS.typical_color[shape]:
            asked_typical[q.answer] += 1
    return asked_typical["yes"] / sum(asked_typical.values())


def test_colour_question_text_carries_no_more_prior_than_the_scenes():
    """Naming the typical colour must not give the answer away: with counter-prior "no" questions, P(yes | the
    typical colour is asked) is the scene prior (~2/3), not the ~0.9 the generator gave without them."""
    leaky = dataclasses.replace(TRAIN_PRIORS, counter_prior_questions=0.0)
    with_fix = _yes_rate_when_typical_colour_asked(TRAIN_PRIORS, 300)
    without = _yes_rate_when_typical_colour_asked(leaky, 300)
    print(f"P(yes | typical colour asked): {with_fix:.2f} with counter-prior questions, {without:.2f} without")
    assert without > 0.85
    assert 0.55 < with_fix < 0.78
