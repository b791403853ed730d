"""Which inputs Eq 7 splits decides which heads a profile damps (issue: calibration that improves the endpoint).

The planted model (`planted_heads.build_misleading`) answers "Is the object red?" with `POSITIVE` (reads redness,
says yes), `DISTRACTOR` (reads blueness, says no) and `MISLEADING` (reads greenness, says no so strongly that
yellow images - red enough to be red - are answered "No": a known subset of clean questions answered wrongly).

* The default split (`--attribute-on clean`, the authors' code) scores every clean question against its own
  answer: D_incorrect is exactly the yellow questions, `MISLEADING` is the first negative head, and rescaling
  with the profile fixes those questions without breaking the others.
* `eq4-pairs` (both images of each Eq-4 triple against the clean answer) finds the head that reads the edited
  region instead (`DISTRACTOR`: red -> blue edits), which is not what hurts accuracy.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from vseam.calibrate.cli import main
from vseam.calibrate.records import Box, VQARecord, read_jsonl, write_jsonl
from vseam.calibrate.strength import STRENGTHS, Candidate, best
from vseam.head_profiles import load_profile
from planted_heads import DISTRACTOR, MISLEADING, POSITIVE, build_misleading, clean_image, edited_image, yellow_image
from test_pipeline import make_triples, one_thread  # noqa: F401 (one_thread: a fixture)

KINDS = {"red": (clean_image, "yes"), "yellow": (yellow_image, "yes"), "blue": (edited_image, "no")}
SUBTYPES = ["color", "material", "animal", "vehicle", "spatial", "action"]


@pytest.fixture(scope="module")
def misleading_dir(tmp_path_factory):
    return build_misleading(tmp_path_factory.mktemp("misleading"))


@pytest.fixture(scope="module")
def engine(misleading_dir):
    from vseam.core.engine import HeadEngine

    return HeadEngine.from_pretrained(str(misleading_dir))


def write_questions(out, per_kind: int, kinds=tuple(KINDS)) -> tuple:
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(per_kind):
        for kind in kinds:
            draw, answer = KINDS[kind]
            path = out / f"{kind}_{i}.png"
            draw(i).save(path)
            records.append(VQARecord(qid=f"{kind}{i:03d}", dataset="gqa", question=f"Is the object number {i} red?",
                                     answer=answer, image=str(path), subtype=SUBTYPES[i % len(SUBTYPES)],
                                     boxes=[Box(8, 8, 40, 40)]))
    write_jsonl(out / "questions.jsonl", records)
    return out / "questions.jsonl", records


def argv(model, out, *extra):
    return ["--dataset", "gqa", "--model", str(model), "--out", str(out), "--patching", "0", *extra]


def accuracy(engine, records, scales=None) -> dict[str, float]:
    """Accuracy per kind of question (red / yellow / blue)."""
    from vseam.calibrate.strength import held_out_correct

    correct = held_out_correct(engine, records, scales)
    kinds = np.array([r.qid.rstrip("0123456789") for r in records])
    return {k: float(correct[kinds == k].mean()) for k in KINDS if (kinds == k).any()}


def test_default_split_damps_the_misleading_head_and_rescaling_fixes_its_questions(misleading_dir, engine, tmp_path):
    questions, records = write_questions(tmp_path / "q", per_kind=6)
    before = accuracy(engine, records)
    assert before == {"red": 1.0, "yellow": 0.0, "blue": 1.0}  # the misleading head's subset is answered wrongly

    out = tmp_path / "run"
    assert main(argv(misleading_dir, out, "--questions", str(questions), "-k", "3")) == 0
    prof = load_profile(out / "profiles" / "gqa-all.json")
    assert prof.negative[0].key == MISLEADING and prof.negative[0].lam == 1.0
    assert prof.positive[0].key == POSITIVE
    assert (prof.provenance.n_correct, prof.provenance.n_incorrect) == (12, 6)  # D_incorrect = the yellow questions
    assert prof.provenance.split == "clean" and prof.provenance.aggregate == "mean"
    assert prof.strength is None and prof.alpha == 1.0  # no --select-on: Eq 10 at full strength

    after = accuracy(engine, records, prof.scales())
    assert after == {"red": 1.0, "yellow": 1.0, "blue": 1.0}

    report = json.loads((out / "report.json").read_text())
    assert report["split"] == "clean" and report["triples"] == {} and report["patching"] == {}
    assert report["groups"]["all"] == {"n_correct": 12, "n_incorrect": 6, "subtypes": sorted(SUBTYPES),
                                       "thin_negative_evidence": True}
    assert "rest on fewer than 30 incorrectly answered inputs" in (out / "report.md").read_text()
    rows = [json.loads(l) for l in (out / "attribution-exact.jsonl").read_text().splitlines()]
    assert len(rows) == 18 and {r["role"] for r in rows} == {"clean"}
    assert {r["key"].split(":")[1] for r in rows if not r["correct"]} == {f"yellow{i:03d}" for i in range(6)}


def test_eq4_pairs_choose_the_head_that_reads_the_edited_region(misleading_dir, engine, tmp_path):
    """The previous default, now behind a flag: red clean images vs blue edits, both against "yes". The negative head
    is the blue reader; removing it breaks every blue question ("Is it red?" - "No"), which the model answered
    right. (The yellow questions come out right only because the positive reader is doubled.)"""
    triples = make_triples(tmp_path / "t", 6)
    out = tmp_path / "run"
    assert main(argv(misleading_dir, out, "--triples", str(triples), "--attribute-on", "eq4-pairs", "-k", "3")) == 0
    prof = load_profile(out / "profiles" / "gqa-all.json")
    assert prof.negative[0].key == DISTRACTOR and MISLEADING not in {h.key for h in prof.negative[:1]}
    assert (prof.provenance.n_correct, prof.provenance.n_incorrect) == (6, 6)
    assert prof.provenance.split == "eq4-pairs" and "edited region" in prof.provenance.notes
    _, records = write_questions(tmp_path / "q", per_kind=3)
    assert accuracy(engine, records, prof.scales()) == {"red": 1.0, "yellow": 1.0, "blue": 0.0}

    # the same triples under the default split: only their clean images, all answered right -> no negative head
    clean = tmp_path / "clean"
    assert main(argv(misleading_dir, clean, "--triples", str(triples), "-k", "3")) == 0
    prof = load_profile(clean / "profiles" / "gqa-all.json")
    assert prof.negative == [] and prof.positive[0].key == POSITIVE
    assert (prof.provenance.n_correct, prof.provenance.n_incorrect) == (6, 0)


def test_clean_plus_edited_scores_each_edited_image_against_its_own_answer(misleading_dir, tmp_path):
    triples = make_triples(tmp_path / "t", 4)  # clean red ("yes"), edited blue: its own answer is "no"
    out = tmp_path / "run"
    assert main(argv(misleading_dir, out, "--triples", str(triples), "--attribute-on", "clean+edited")) == 0
    rows = {json.loads(l)["key"]: json.loads(l) for l in (out / "attribution-exact.jsonl").read_text().splitlines()}
    assert len(rows) == 8
    edited = [r for k, r in rows.items() if k.endswith(":edited")]
    assert {r["answer"] for r in edited} == {"no"} and all(r["correct"] for r in edited)
    prof = load_profile(out / "profiles" / "gqa-all.json")
    assert (prof.provenance.n_correct, prof.provenance.n_incorrect) == (8, 0)
    assert prof.provenance.split == "clean+edited"


def test_gain_aggregation_is_recorded_and_finds_the_same_head(misleading_dir, tmp_path):
    questions, _ = write_questions(tmp_path / "q", per_kind=4)
    mean_out, gain_out = tmp_path / "mean", tmp_path / "gain"
    assert main(argv(misleading_dir, mean_out, "--questions", str(questions), "-k", "3")) == 0
    assert main(argv(misleading_dir, gain_out, "--questions", str(questions), "-k", "3", "--aggregate", "gain")) == 0
    mean_p = load_profile(mean_out / "profiles" / "gqa-all.json")
    gain_p = load_profile(gain_out / "profiles" / "gqa-all.json")
    assert gain_p.provenance.aggregate == "gain" and gain_p.negative[0].key == MISLEADING
    # only gains count on D_incorrect: a gain score is at least the signed mean (equal for a head that only helps)
    assert gain_p.negative[0].score == pytest.approx(mean_p.negative[0].score, rel=1e-9)
    for h in gain_p.negative:
        assert h.score > 0


def test_select_on_chooses_k_and_strength_on_held_out_questions(misleading_dir, engine, tmp_path):
    questions, _ = write_questions(tmp_path / "q", per_kind=12)  # 6 questions per subtype
    out = tmp_path / "run"
    assert main(argv(misleading_dir, out, "--questions", str(questions), "--select-on", "0.5", "-k", "3",
                     "--k-grid", "1,3", "--select-significance", "1")) == 0  # the plain argmax (no guard)
    held = read_jsonl(out / "held_out.jsonl", VQARecord)
    assert len(held) == 18 and not {r.qid for r in held} & {json.loads(l)["key"].split(":")[1]
                                                              for l in (out / "inputs.jsonl").read_text().splitlines()}
    for name in ("gqa-all", "gqa-attribute", "gqa-object", "gqa-relation"):
        prof = load_profile(out / "profiles" / f"{name}.json")
        sel = prof.provenance.selection
        assert sel is not None and sel.held_out_fraction == 0.5 and sel.k_grid == [1, 3]
        assert sel.strength_grid == list(STRENGTHS) and prof.k in (1, 3) and prof.strength in STRENGTHS
        assert sel.accuracy_chosen >= sel.accuracy_unedited
        # recomputed independently on the held-out questions of the profile's group
        mine = [r for r in held if prof.scope.level == "all" or r.level == prof.scope.level]
        from vseam.calibrate.strength import held_out_correct

        assert held_out_correct(engine, mine, prof.scales()).mean() == pytest.approx(sel.accuracy_chosen)
        assert held_out_correct(engine, mine, None).mean() == pytest.approx(sel.accuracy_unedited)
        paper = load_profile(out / "profiles" / "paper" / f"{name}.json")
        assert paper.name == f"{name}-paper" and paper.k == 3 and paper.strength is None
    allp = load_profile(out / "profiles" / "gqa-all.json")
    assert allp.provenance.selection.accuracy_chosen == 1.0 > allp.provenance.selection.accuracy_unedited
    assert allp.strength > 0 and allp.negative[0].key == MISLEADING
    assert (out / "selection.png").read_bytes()[:4] == b"\x89PNG"
    assert "K and strength α chosen on held-out calibration questions" in (out / "report.md").read_text()


def test_select_on_keeps_alpha_zero_when_the_best_gain_is_not_significant(misleading_dir, engine, tmp_path, capsys):
    """The same run with the default guard: the best candidate fixes 3 more of the 18 held-out questions and breaks
    none (one-sided McNemar p = 0.5^3 = 0.125), above 0.05 / 8 candidates, so α = 0 is kept and recorded."""
    questions, _ = write_questions(tmp_path / "q", per_kind=12)
    out = tmp_path / "run"
    assert main(argv(misleading_dir, out, "--questions", str(questions), "--select-on", "0.5", "-k", "3",
                     "--k-grid", "1,3")) == 0
    allp = load_profile(out / "profiles" / "gqa-all.json")
    sel = allp.provenance.selection
    assert sel.significance == 0.05 and sel.mcnemar_p == pytest.approx(0.125)
    assert allp.strength == 0.0 and sel.accuracy_chosen == sel.accuracy_unedited < 1.0
    assert np.array_equal(allp.scales(), np.ones_like(allp.scales()))
    rows = [json.loads(l) for l in (out / "selection.jsonl").read_text().splitlines()]
    mine = {r["key"]: r for r in rows if r["group"] == "all"}
    assert all(len(r["right"]) == 18 and r["right"].count("1") == r["correct"] for r in mine.values())

    # a logged row without its per-question results cannot feed the guard: the resumed run names the file and row
    for r in rows:
        if r["key"] == "all|unedited":
            del r["right"]
    (out / "selection.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "profiles" / "gqa-all.json").unlink()
    assert main(argv(misleading_dir, out, "--questions", str(questions), "--select-on", "0.5", "-k", "3",
                     "--k-grid", "1,3")) != 0
    err = capsys.readouterr().err
    assert "selection.jsonl" in err and "'all|unedited'" in err and "remove that line" in err, err


def test_gain_p_value_is_the_exact_one_sided_mcnemar():
    from vseam.calibrate.strength import gain_p_value

    base = np.array([True] * 10 + [False] * 10)
    edited = base.copy()
    edited[10:16] = True  # 6 fixed
    assert gain_p_value(edited, base) == pytest.approx(0.5 ** 6)
    edited[0] = False  # and 1 broken: P(X >= 6 | n = 7)
    assert gain_p_value(edited, base) == pytest.approx(8 / 128)
    assert gain_p_value(base, base) == 1.0
    assert gain_p_value(~base | base, base) < gain_p_value(edited, base)


def test_select_on_keeps_the_unedited_model_when_no_candidate_beats_it(misleading_dir, engine, tmp_path):
    """Only red and blue questions: the model answers all of them, no candidate can do better, so the choice is
    α = 0 (ties go to the unedited model) and the written profile changes nothing."""
    questions, _ = write_questions(tmp_path / "q", per_kind=6, kinds=("red", "blue"))
    out = tmp_path / "run"
    assert main(argv(misleading_dir, out, "--questions", str(questions), "--select-on", "0.5", "--k-grid", "1,2")) == 0
    prof = load_profile(out / "profiles" / "gqa-all.json")
    assert prof.strength == 0.0 and prof.provenance.selection.accuracy_unedited == 1.0
    assert np.array_equal(prof.scales(), np.ones_like(prof.scales()))
    assert prof.positive  # the heads are still recorded (at strength 0)


def test_best_never_prefers_a_candidate_below_the_unedited_model():
    rng = np.random.default_rng(0)
    for _ in range(500):
        base = Candidate(0, 0.0, float(rng.integers(0, 11)) / 10, 10)
        cands = [Candidate(int(k), float(a), float(rng.integers(0, 11)) / 10, 10)
                 for k in (1, 2, 4) for a in STRENGTHS[1:]]
        chosen = best(base, cands)
        assert chosen.accuracy >= base.accuracy
        assert chosen.accuracy == max(c.accuracy for c in [base, *cands])
    # ties: the unedited model first, then the smaller strength, then the smaller K
    assert best(Candidate(0, 0.0, 0.5, 4), [Candidate(1, 0.25, 0.5, 4)]).strength == 0.0
    assert best(Candidate(0, 0.0, 0.4, 4), [Candidate(4, 0.5, 0.5, 4), Candidate(1, 0.5, 0.5, 4),
                                           Candidate(1, 0.25, 0.5, 4)]) == Candidate(1, 0.25, 0.5, 4)


def test_max_correct_samples_d_correct_and_keeps_every_wrongly_answered_question(misleading_dir, tmp_path):
    """`--max-correct N` answers every question once, then attributes all the wrongly answered ones and N right ones
    per subtype: D_incorrect, and so the negative heads, are those of attributing everything."""
    questions, _ = write_questions(tmp_path / "q", per_kind=12)  # per subtype: 4 right (red, blue), 2 wrong (yellow)
    full, sampled = tmp_path / "full", tmp_path / "sampled"
    assert main(argv(misleading_dir, full, "--questions", str(questions), "-k", "3")) == 0
    assert main(argv(misleading_dir, sampled, "--questions", str(questions), "-k", "3", "--max-correct", "1")) == 0

    predictions = [json.loads(l) for l in (sampled / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 36 and sum(not r["correct"] for r in predictions) == 12
    rows = {json.loads(l)["key"]: json.loads(l) for l in (sampled / "attribution-exact.jsonl").read_text().splitlines()}
    wrong = {k for k, r in rows.items() if not r["correct"]}
    assert wrong == {f"gqa:yellow{i:03d}:clean" for i in range(12)}
    right_subtypes = [r["subtype"] for r in rows.values() if r["correct"]]
    assert sorted(right_subtypes) == sorted(SUBTYPES)  # one right question per subtype
    full_rows = {json.loads(l)["key"]: json.loads(l) for l in (full / "attribution-exact.jsonl").read_text().splitlines()}
    for key in wrong:  # the same Δp for every wrongly answered question
        np.testing.assert_allclose(rows[key]["delta"], full_rows[key]["delta"], atol=1e-6)

    prof, ref = (load_profile(d / "profiles" / "gqa-all.json") for d in (sampled, full))
    assert (prof.provenance.n_correct, prof.provenance.n_incorrect) == (6, 12)
    assert (ref.provenance.n_correct, ref.provenance.n_incorrect) == (24, 12)
    assert [h.key for h in prof.negative] == [h.key for h in ref.negative] and prof.negative[0].key == MISLEADING
    assert prof.positive[0].key == POSITIVE
    assert "at most 1 correctly answered questions per subtype" in prof.provenance.notes
    assert json.loads((sampled / "config.json").read_text())["max_correct"] == 1
    assert "max_correct" not in json.loads((full / "config.json").read_text())  # older run dirs resume unchanged
    assert len((sampled / "inputs.jsonl").read_text().splitlines()) == 18
    report = json.loads((sampled / "report.json").read_text())
    assert report["answered"] == {"questions": 36, "wrong": {s: 2 for s in sorted(SUBTYPES)}, "max_correct": 1}
    assert "the unedited model answered 36 questions and got 12 wrong" in (sampled / "report.md").read_text()
    assert "answered" not in json.loads((full / "report.json").read_text())


def test_sample_correct_keeps_order_every_wrong_unit_and_a_seeded_cap_per_subtype():
    from vseam.calibrate.inputs import Input, sample_correct
    from vseam.core.errors import UserError

    units = [[Input(f"q{i}:clean", f"q{i}", "clean", "img", "q?", "yes", "ab"[i % 2])] for i in range(20)]
    correct = {u[0].key: i % 5 != 0 for i, u in enumerate(units)}  # q0, q5, q10, q15 wrong
    picked = sample_correct(units, correct, 3, seed=0)
    keys = [u[0].key for u in picked]
    assert keys == sorted(keys, key=lambda k: int(k[1:].split(":")[0]))  # original order
    assert {"q0:clean", "q5:clean", "q10:clean", "q15:clean"} <= set(keys)
    for subtype in "ab":
        assert sum(1 for u in picked if u[0].subtype == subtype and correct[u[0].key]) == 3
    assert picked == sample_correct(units, correct, 3, seed=0)
    assert any(sample_correct(units, correct, 3, seed=s) != picked for s in range(1, 6))
    assert sample_correct(units, correct, 100, seed=0) == units  # a cap above the count keeps everything
    with pytest.raises(UserError, match="--max-correct must be >= 1"):
        sample_correct(units, correct, 0, seed=0)


def test_max_correct_is_refused_with_eq4_pairs():
    from vseam.calibrate.config import Stage2Config
    from vseam.core.errors import UserError

    with pytest.raises(UserError, match="--max-correct samples the questions the model answers right"):
        Stage2Config(attribute_on="eq4-pairs", max_correct=5)
    with pytest.raises(UserError, match="--max-correct must be >= 1, got 0"):
        Stage2Config(max_correct=0)


def test_select_only_chooses_k_and_strength_for_the_named_groups_only(misleading_dir, tmp_path, capsys):
    questions, _ = write_questions(tmp_path / "q", per_kind=12)
    out = tmp_path / "run"
    assert main(argv(misleading_dir, out, "--questions", str(questions), "--select-on", "0.5", "-k", "3",
                     "--k-grid", "1,3", "--select-significance", "1", "--select-only", "attribute,object")) == 0
    rows = [json.loads(l) for l in (out / "selection.jsonl").read_text().splitlines()]
    assert {r["group"] for r in rows} == {"attribute", "object"}
    for name in ("gqa-attribute", "gqa-object"):
        prof = load_profile(out / "profiles" / f"{name}.json")
        assert prof.provenance.selection is not None and prof.k in (1, 3) and prof.strength in STRENGTHS
    for name in ("gqa-relation", "gqa-all"):  # not selected for: the paper's K and α = 1
        prof = load_profile(out / "profiles" / f"{name}.json")
        assert prof.provenance.selection is None and prof.k == 3 and prof.strength is None
    assert "group relation is not selected for; it keeps K=3, α=1" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["select_only"] == ["attribute", "object"]


@pytest.mark.parametrize("extra, message", [
    (["--select-only", "object"], "--select-only names the groups --select-on chooses K and α for"),
    (["--select-on", "0.5", "--select-only", "objects"], "--select-only objects: not a profile group"),
    (["--select-on", "0.5", "--select-only", "object/color"], "--select-only object/color: not a profile group"),
])
def test_select_only_refuses_groups_it_cannot_select(misleading_dir, tmp_path, capsys, extra, message):
    questions, _ = write_questions(tmp_path / "q", per_kind=2)
    assert main(argv(misleading_dir, tmp_path / "run", "--questions", str(questions), *extra)) == 1
    assert message in capsys.readouterr().err


def test_max_correct_run_cut_short_resumes_to_the_same_profiles(misleading_dir, tmp_path, one_thread):
    """A run killed while answering the calibration questions (predictions.jsonl cut mid-line, nothing after it
    written) resumes to byte-identical profiles (on one thread: see `one_thread`)."""
    import shutil

    questions, _ = write_questions(tmp_path / "q", per_kind=12)
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    args = ("--questions", str(questions), "-k", "3", "--max-correct", "2")
    assert main(argv(misleading_dir, whole, *args)) == 0
    shutil.copytree(whole, cut)
    lines = (cut / "predictions.jsonl").read_text().splitlines(keepends=True)
    (cut / "predictions.jsonl").write_text("".join(lines[:10]) + lines[10][:25])  # a kill mid-append
    for name in ("attribution-exact.jsonl", "report.json", "report.md"):
        (cut / name).unlink()
    shutil.rmtree(cut / "profiles")
    assert main(argv(misleading_dir, cut, *args)) == 0
    assert (cut / "predictions.jsonl").read_text() == (whole / "predictions.jsonl").read_text()
    for path in sorted((whole / "profiles").rglob("*.json")):
        assert (cut / "profiles" / path.relative_to(whole / "profiles")).read_bytes() == path.read_bytes(), path.name
