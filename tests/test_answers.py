"""Answer parsing: a table of real-world replies (yes/no and short answers) and the rule each one exercises."""

from __future__ import annotations

import pytest

from vseam.benchmarks.answers import normalize_short_answer, parse_yes_no, short_answer_correct, singular

# (reply, expected, rule it exercises)
YES_NO_TABLE = [
    ("Yes", "yes", "plain"),
    ("No", "no", "plain"),
    ("Yes.", "yes", "trailing period"),
    ("no.", "no", "lower case"),
    ("YES", "yes", "upper case"),
    ("NO!", "no", "upper case, exclamation"),
    ("  yes", "yes", "leading whitespace"),
    ("\n\nYes\n", "yes", "leading newlines"),
    ("Yes, there is a dog in the image.", "yes", "leading word decides"),
    ("No, there is not.", "no", "leading word decides"),
    ("No, it's blue.", "no", "leading word decides"),
    ("Yes, but it is partly hidden behind the tree.", "yes", "leading word decides despite 'but'"),
    ("Yes\n\nThe man is holding an umbrella.", "yes", "answer then explanation on new lines"),
    ("**Yes**", "yes", "markdown emphasis"),
    ('"No"', "no", "quoted"),
    ("Answer: Yes", "yes", "field label"),
    ("ASSISTANT: No", "no", "role label"),
    ("Yeah", "yes", "colloquial yes"),
    ("Yep!", "yes", "colloquial yes"),
    ("nope", "no", "colloquial no"),
    ("Nah, there's no cat.", "no", "colloquial no"),
    ("Correct.", "yes", "leading affirmation"),
    ("False", "no", "leading negation"),
    ("No doubt, it is a dog.", "yes", "idiom 'no doubt' means yes"),
    ("Without a doubt.", "yes", "idiom 'without a doubt' means yes"),
    ("No doubt it is not a dog.", "no", "idiom, then a negation"),
    ("No, no.", "no", "repeated answer is not ambiguous"),
    ("Yes and no.", None, "both answers"),
    ("Yes or no?", None, "both answers"),
    ("yes/no", None, "both answers"),
    ("I cannot tell from the image.", None, "hedge"),
    ("Not sure.", None, "hedge beats the negation word"),
    ("I'm not sure, the image is blurry.", None, "hedge"),
    ("It is unclear from this picture.", None, "hedge"),
    ("Maybe.", None, "hedge"),
    ("I don't know", None, "hedge"),
    ("It's impossible to tell.", None, "hedge"),
    ("N/A", None, "hedge"),
    ("There is no dog in the image.", "no", "negation"),
    ("There isn't a dog.", "no", "negated contraction"),
    ("I don't think so.", "no", "negated opinion"),
    ("Absolutely not.", "no", "negation after an affirmative adverb"),
    ("The cat is not red.", "no", "negated statement"),
    ("Nothing like that appears in the picture.", "no", "negation word"),
    ("None", "no", "negation word"),
    ("The answer is no.", "no", "explicit answer word inside a sentence"),
    ("The answer is yes.", "yes", "explicit answer word inside a sentence"),
    ("Absolutely.", "yes", "affirmation"),
    ("Of course", "yes", "affirmation phrase"),
    ("I think so.", "yes", "affirmation phrase"),
    ("Certainly, the dog is sitting there.", "yes", "affirmation"),
    ("There is a dog in the image.", None, "bare statement: not guessed"),
    ("The car is red.", None, "bare statement: not guessed"),
    ("The dog's eyes are brown.", None, "'yes' inside another word does not count"),
    ("I know the answer", None, "'no' inside another word does not count"),
    ("Yess", None, "misspelling is not guessed"),
    ("", None, "empty"),
    ("   \n ", None, "whitespace only"),
    (None, None, "no content"),
]


def test_table_is_large_enough():
    assert len(YES_NO_TABLE) >= 30
    assert {e for _, e, _ in YES_NO_TABLE} == {"yes", "no", None}


@pytest.mark.parametrize("reply,expected,rule", YES_NO_TABLE, ids=[f"{i}-{r}" for i, (_, _, r) in enumerate(YES_NO_TABLE)])
def test_parse_yes_no(reply, expected, rule):
    assert parse_yes_no(reply) == expected, (reply, rule)


SHORT_TABLE = [
    # (reply, gold, correct?)
    ("Brown", "brown", True),
    ("brown.", "brown", True),
    ("  Brown\n", "brown", True),
    ("The kitchen", "kitchen", True),
    ("a kitchen", "kitchen", True),
    ("Answer: red", "red", True),
    ("dogs", "dog", True),
    ("puppies", "puppy", True),
    ("boxes", "box", True),
    ("glasses", "glass", True),
    ("horses", "horse", True),
    ("Living room", "living room", True),
    ("living-room", "living room", True),
    ("bus", "bus", True),
    ("tennis", "tennis", True),
    ("red\nThe bus is red because it is painted.", "red", True),
    ("dark brown", "brown", False),
    ("blue", "red", False),
    ("", "red", False),
    ("The", "red", False),
]


@pytest.mark.parametrize("reply,gold,correct", SHORT_TABLE)
def test_short_answer_match(reply, gold, correct):
    assert short_answer_correct(reply, gold) is correct


def test_short_answer_normalisation_details():
    assert normalize_short_answer("The Red, white & blue flags!") == "red white blue flag"
    assert normalize_short_answer("") is None
    assert normalize_short_answer("a the an") is None
    assert [singular(w) for w in ("cats", "glass", "skis", "dishes", "cities")] == ["cat", "glass", "skis", "dish", "city"]
