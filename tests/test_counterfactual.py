"""Counterfactual questions: the offline rules (the LLM path is in `test_counterfactual_llm.py`)."""

from __future__ import annotations

import re

import pytest

from vseam.calibrate.counterfactual import CounterfactualError, RuleRewriter, build_prompt, changed_span
from vseam.calibrate.datasets.vocab import COLORS, CATEGORIES
from vseam.calibrate.records import VQARecord


def rec(question, answer="yes", subtype="color", full=None, qid="q1"):
    return VQARecord(qid=qid, dataset="t", question=question, answer=answer, image="x", subtype=subtype, full_answer=full)


@pytest.mark.parametrize(
    "question,answer,subtype,full,expect_q,source,target",
    [
        ("Is the shirt blue?", "no", "color", "The shirt is black.", "Is the shirt black?", "black", "blue"),
        ("Is the chair made of wood?", "no", "material", "The chair is made of metal.", "Is the chair made of metal?", "metal", "wood"),
        ("Is the fence wooden?", "no", "material", "The fence is metallic.", "Is the fence metallic?", "metal", "wood"),
        ("Is the cat to the left of the sofa?", "yes", "spatial", None, "Is the cat to the right of the sofa?", "to the left of", "to the right of"),
        ("Is the lamp above the table?", "yes", "spatial", None, "Is the lamp below the table?", "above", "below"),
        ("Is the person riding the horse?", "yes", "action", None, "Is the person feeding the horse?", "riding", "feeding"),
        ("Is the man to the left of the plate?", "yes", "action", None, "Is the man to the right of the plate?", "to the left of", "to the right of"),
        ("Is there a dog in this picture?", "no", "animal", "There is a cat in the image.", "Is there a cat in this picture?", "cat", "dog"),
    ],
)  # fmt: skip
def test_rules_swap_one_unit(question, answer, subtype, full, expect_q, source, target):
    cf = RuleRewriter()(rec(question, answer, subtype, full))
    assert (cf.question, cf.source, cf.target) == (expect_q, source, target)
    assert cf.method == "rules" and cf.level in ("attribute", "object", "relation")


def test_rules_pick_another_value_of_the_same_kind_deterministically():
    r = rec("Is the sofa red?", qid="sofa-1")
    cf = RuleRewriter()(r)
    assert cf.source == "red" and cf.target in COLORS and cf.target != "red"
    assert cf.question == f"Is the sofa {cf.target}?" and cf.prompt.endswith(f"{cf.target} sofa")
    assert RuleRewriter()(r) == cf
    obj = RuleRewriter()(rec("Is there an elephant in this picture?", subtype="animal", qid="e1"))
    assert obj.source == "elephant" and obj.target in CATEGORIES["animal"] and obj.target != "elephant"
    assert re.fullmatch(r"Is there an? [a-z ]+ in this picture\?", obj.question)
    article = "an" if obj.target[0] in "aeiou" else "a"
    assert obj.question.startswith(f"Is there {article} ")


def test_rules_refuse_what_they_cannot_rewrite():
    with pytest.raises(CounterfactualError, match="no color word"):
        RuleRewriter()(rec("Is the shirt shiny?"))
    with pytest.raises(CounterfactualError, match="yes/no"):
        RuleRewriter()(rec("What color is it?", answer="red"))
    with pytest.raises(CounterfactualError, match="no spatial relation or action"):
        RuleRewriter()(rec("Is the giraffe in the zoo?", subtype="spatial"))


def test_real_subsets_rewrite_almost_everything(shared_data):
    from vseam.calibrate.datasets import load_dataset

    records = load_dataset("gqa", path=shared_data / "vseam-gqa").records
    failures = 0
    for r in records:
        try:
            cf = RuleRewriter()(r)
        except CounterfactualError:
            failures += 1
            continue
        assert cf.question != r.question and cf.target and cf.target != cf.source
    assert failures / len(records) < 0.01


def test_prompt_follows_table7_layout():
    p = build_prompt("attribute", "Is the sofa red?", "yes", "The sofa is red.")
    assert p.count("Example ") == 3 and "Reply with the new question only" in p
    assert p.rstrip().endswith("Question: Is the sofa red?\nAnswer: Yes\nExplanation: The sofa is red.\nNew question:")
    assert changed_span("Is there a dog in this picture?", "Is there an elephant in this picture?") == ("dog", "elephant")
    with pytest.raises(CounterfactualError, match="more than one"):
        changed_span("Is the sofa red?", "Would a large green couch fit in the living room?")
