"""`head_profile: "auto"`: the documented semantic-level rule and the level -> profile fallback."""

from __future__ import annotations

import pytest

from vseam.serve.routing import request_text, route, semantic_level
from vseam.core.families import FAMILIES

CASES = [
    # attribute: asked outright, or a colour / material named without a relation
    ("Is the cat red?", "attribute"),
    ("Is the chair made of wood?", "attribute"),
    ("What color is the car on the left?", "attribute"),  # rule 1 beats the spatial word
    ("Which colour is the bus?", "attribute"),
    ("Is the shirt striped?", "attribute"),
    ("Is the table wooden?", "attribute"),
    # relation: spatial words and actions, even with a colour around
    ("Is the cat to the left of the sofa?", "relation"),
    ("Is the man to the left of the red car?", "relation"),
    ("Is the ball under the table?", "relation"),
    ("Is the person riding the horse?", "relation"),
    ("Is the person holding a tennis racket?", "relation"),
    ("Where is the dog?", "relation"),
    ("Is the cup on top of the book?", "relation"),
    # object: everything else
    ("Is there a sandwich in this picture?", "object"),
    ("Are there any dogs?", "object"),
    ("What animal is this?", "object"),
]


@pytest.mark.parametrize("question,level", CASES)
def test_semantic_level_rule(question, level):
    assert semantic_level(question) == level


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("question,level", CASES[:3] + CASES[6:9] + CASES[13:15])
def test_prompt_templates_do_not_change_the_level(family, question, level):
    fam = FAMILIES[family]
    assert semantic_level(fam.binary_text(question)) == level
    assert semantic_level(fam.short_answer_text(question)) == level


def test_request_text_reads_the_last_user_turn():
    fam = FAMILIES["llava"]
    body = {
        "messages": [
            {"role": "user", "content": "Is the sky blue?"},
            {"role": "assistant", "content": "Yes"},
            *fam.chat_messages(fam.binary_text("Is there a dog?"), "data:image/png;base64,xx"),
        ]
    }
    text = request_text(body)
    assert "Is there a dog?" in text and "sky" not in text and "base64" not in text
    assert semantic_level(text) == "object"
    assert request_text({"prompt": "USER: Is the cat red? ASSISTANT:"}).startswith("USER: Is the cat red?")
    assert request_text({"prompt": ["Where is the cat?", "x"]}) == "Where is the cat?"
    assert request_text({"input": [{"role": "user", "content": [{"type": "input_text", "text": "Is it red?"}]}]}) == (
        "Is it red?"
    )
    assert request_text({}) == ""
    batch = {"messages": [[{"role": "user", "content": "Where is the cat?"}], [{"role": "user", "content": "x"}]]}
    assert request_text(batch) == "Where is the cat?"


def test_route_prefers_exact_level_then_all_then_none():
    loaded = [("colors", "attribute"), ("everything", "all"), ("where", "relation")]
    assert route("attribute", loaded) == "colors"
    assert route("relation", loaded) == "where"
    assert route("object", loaded) == "everything"
    assert route("object", [("colors", "attribute")]) == "none"
    assert route("attribute", []) == "none"
