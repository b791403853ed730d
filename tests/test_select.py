"""Eq-4 triple selection with the HF reference engine on the tiny LLaVA: batched scoring agrees with one-at-a-time
scoring, the kept set is exactly "right on clean, wrong on edited", and cached scores are not recomputed."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image

from vseam.calibrate.records import EditedPair, VQARecord
from vseam.calibrate.rundir import DoneLog
from vseam.calibrate.select import eq4, predicted, select_triples, selection_run

QUESTIONS = ["Is the cup red?", "Is there a dog in this picture?", "Is the man to the left of the small wooden table?"]


@pytest.fixture(scope="module")
def engine(tiny_llava_dir):
    from vseam.core.engine import HeadEngine

    return HeadEngine.from_pretrained(str(tiny_llava_dir))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("eq4-images")
    out = []
    rng = np.random.RandomState(0)
    arrays = [(rng.rand(80, 96, 3) * 255).astype("uint8") for _ in range(3)]
    arrays += [np.full((80, 96, 3), c, np.uint8) for c in ((255, 0, 0), (0, 0, 255), (0, 0, 0), (255, 255, 255))]
    for i, a in enumerate(arrays):
        p = d / f"img{i}.png"
        Image.fromarray(a).save(p)
        out.append(str(p))
    return out


def oracle(engine, image_path: str, question: str) -> tuple[str, float, float]:
    """Prediction and P(yes), P(no) for one (image, question), scored alone."""
    p = engine.binary([Image.open(image_path).convert("RGB")], [question])
    y, n = float(p["yes"][0]), float(p["no"][0])
    return predicted(y, n), y, n


def test_eq4_definition():
    assert eq4("yes", "yes", "no") and eq4("no", "no", "yes")
    assert not eq4("yes", "no", "no") and not eq4("yes", "yes", "yes") and not eq4("no", "yes", "no")


def test_selection_matches_per_pair_oracle_and_caches(engine, images, tmp_path):
    truth = {(im, q): oracle(engine, im, q) for im, q in itertools.product(images, QUESTIONS)}
    pairs, expected = [], set()
    subtypes = ["color", "animal", "spatial"]
    for k, (q, sub) in enumerate(zip(QUESTIONS, subtypes)):
        for i, (clean, edited) in enumerate(itertools.permutations(images[:5], 2)):
            answer = truth[(clean, q)][0] if i % 3 else ("no" if truth[(clean, q)][0] == "yes" else "yes")
            qid = f"{sub}-{i}"
            rec = VQARecord(qid=qid, dataset="t", question=q, answer=answer, image=clean, subtype=sub)
            pairs.append(EditedPair(record=rec, counterfactual=q, clean_image=clean, edited_image=edited, editor="t"))
            if eq4(answer, truth[(clean, q)][0], truth[(edited, q)][0]):
                expected.add(qid)
    assert 0 < len(expected) < len(pairs)  # the tiny model's answers vary enough for both outcomes

    log = DoneLog(tmp_path / "scores.jsonl")
    triples, summary = select_triples(engine, pairs, cache=log, batch_size=7, progress=False)
    assert {t.record.qid for t in triples} == expected
    assert summary.kept == len(expected) and summary.scored_this_run == len(pairs)
    for t in triples:
        y = t.record.answer
        _, py, pn = truth[(t.pair.clean_image, t.record.question)]
        assert t.p_clean == pytest.approx(py if y == "yes" else pn, rel=1e-5, abs=1e-7)
        assert t.pred_clean == y != t.pred_edited
    by_sub = summary.per_subtype
    assert set(by_sub) == set(subtypes) and all(c["pairs"] == 20 for c in by_sub.values())
    assert sum(c["kept"] for c in by_sub.values()) == len(expected)
    assert all(c["kept"] <= c["clean_correct"] <= c["pairs"] for c in by_sub.values())

    # a re-run scores nothing: every pair is in the cache
    calls = []
    real = engine.binary
    engine.binary = lambda *a, **kw: calls.append(len(a[0])) or real(*a, **kw)
    try:
        again, s2 = select_triples(engine, pairs, cache=DoneLog(tmp_path / "scores.jsonl"), progress=False)
        assert calls == [] and s2.scored_this_run == 0
        assert [t.to_json() for t in again] == [t.to_json() for t in triples]
        # changing one edited image re-scores exactly that pair
        changed = pairs[0]
        new_img = tmp_path / "changed.png"
        Image.new("RGB", (96, 80), (10, 200, 30)).save(new_img)
        changed.edited_image = str(new_img)
        _, s3 = select_triples(engine, pairs, cache=DoneLog(tmp_path / "scores.jsonl"), progress=False)
        assert s3.scored_this_run == 1 and calls == [2]
    finally:
        engine.binary = real


def test_non_binary_pairs_are_skipped_and_run_dir_pins_the_model(engine, images, tmp_path, tiny_llava_dir, tiny_instructblip_dir):
    rec = VQARecord(qid="open", dataset="t", question="What colour?", answer="red", image=images[0])
    pair = EditedPair(record=rec, counterfactual="x", clean_image=images[0], edited_image=images[1])
    triples, summary = select_triples(engine, [pair], progress=False)
    assert triples == [] and summary.skipped == {"not a yes/no question": 1}
    selection_run(tmp_path / "sel", tiny_llava_dir)
    from vseam.core.errors import UserError

    with pytest.raises(UserError, match="existing run was made with model="):
        selection_run(tmp_path / "sel", tiny_instructblip_dir)
