"""Turning a model's free-text reply into a prediction: yes/no for binary tasks, a normalised short answer otherwise.

Binary answers (`parse_yes_no`) — the rules, applied in this order to the lower-cased reply:

 0. Clean-up: surrounding whitespace/newlines, quotes and markdown emphasis are dropped, and a leading role or
    field label ("ASSISTANT:", "Answer:") is removed. Nothing left → unparsed. Affirming idioms that contain a
    negation word ("no doubt", "without a doubt", "undoubtedly") are read as "certainly".
 1. Both answers offered ("yes and no", "yes or no", "yes/no", "no or yes") → unparsed.
 2. A leading answer word decides: yes / yeah / yep / yup / yea / true / correct / affirmative → yes;
    no / nope / nah / false / incorrect / negative → no. Whatever follows does not change it ("No, there is not",
    "Yes, but it is partly hidden").
 3. Hedges anywhere → unparsed: "not sure", "cannot tell", "can't tell", "unclear", "don't know", "maybe",
    "possibly", "perhaps", "uncertain", "unknown", "it depends", "hard to say", "impossible to tell",
    "cannot be determined", "unanswerable", "n/a".
 4. Any negation → no: the words no / not / never / none / nothing / nobody / neither / nor / nope / false /
    incorrect / absent / without, or a contraction in "n't" ("There is no dog", "I don't think so",
    "Absolutely not", "The answer is no").
 5. An explicit affirmation → yes: the words yes / yeah / yep / true / correct / indeed / certainly / definitely /
    absolutely / affirmative, or "of course", "i think so", "i believe so" ("The answer is yes", "Of course").
 6. Anything else → unparsed. A bare statement ("There is a dog.", "The car is red.") does not say whether the
    asked-about thing holds without reading the question, so it is not guessed.

Unparsed replies are returned as None; the task metrics count them separately and never score them as correct.

Short answers (`normalize_short_answer`, COCO-QA) — first line only, a leading "answer:" label removed,
lower-cased, punctuation removed, the articles a/an/the dropped, each word reduced to a simple singular
("boxes" → "box", "glasses" → "glass", "puppies" → "puppy", "horses" → "horse", "cats" → "cat"; words
ending in ss/us/is are kept; irregular plurals are not handled), whitespace collapsed.
Prediction and gold answer go through the same normalisation and are scored by exact match.
"""

from __future__ import annotations

import re

YES, NO = "yes", "no"

_LABEL = re.compile(r"^(?:(?:assistant|answer|short answer|a)\s*:\s*)+")
_STRIP_CHARS = " \t\r\n\"'`*_>#"
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?|n/a")

_BOTH = re.compile(r"\b(yes|no)\s*(?:and|or|/|,)\s*(yes|no)\b")
_LEADING_YES = {"yes", "yeah", "yep", "yup", "yea", "true", "correct", "affirmative"}
_LEADING_NO = {"no", "nope", "nah", "false", "incorrect", "negative"}
_HEDGES = re.compile(
    r"\b(?:not sure|unsure|can ?not tell|can't tell|unclear|don't know|do not know|maybe|possibly|perhaps|"
    r"uncertain|unknown|it depends|hard to say|difficult to say|impossible to tell|can ?not be determined|"
    r"can't be determined|can ?not determine|can't determine|unanswerable|n/a)\b"
)
_NEGATION_WORDS = {"no", "not", "never", "none", "nothing", "nobody", "neither", "nor", "nope", "false", "incorrect",
                   "absent", "without"}
_AFFIRM_WORDS = {"yes", "yeah", "yep", "yup", "true", "correct", "indeed", "certainly", "definitely", "absolutely",
                 "affirmative"}
_AFFIRM_PHRASES = re.compile(r"\b(?:of course|i think so|i believe so)\b")
#: idioms that affirm although they contain a negation word
_CERTAINLY = re.compile(r"\b(?:no doubt|without (?:a |any )?doubt|undoubtedly|no question about it)\b")


def clean_reply(text: str | None) -> str:
    """Lower-case `text` and drop surrounding noise and a leading role/field label."""
    if not text:
        return ""
    t = text.strip(_STRIP_CHARS).lower()
    t = _LABEL.sub("", t).strip(_STRIP_CHARS)
    return re.sub(r"\s+", " ", t)


def parse_yes_no(text: str | None) -> str | None:
    """"yes", "no", or None when the reply does not commit to either (see the module docstring for the rules)."""
    t = _CERTAINLY.sub("certainly", clean_reply(text))
    if not t:
        return None
    both = _BOTH.search(t)
    if both and both.group(1) != both.group(2):
        return None
    words = _WORD.findall(t)
    if not words:
        return None
    first = words[0]
    if first in _LEADING_YES:
        return YES
    if first in _LEADING_NO:
        return NO
    if _HEDGES.search(t):
        return None
    if any(w in _NEGATION_WORDS or w.endswith("n't") for w in words):
        return NO
    if any(w in _AFFIRM_WORDS for w in words) or _AFFIRM_PHRASES.search(t):
        return YES
    return None


# ---- short answers -------------------------------------------------------------------------------------------------
_ARTICLES = {"a", "an", "the"}
_PUNCT = re.compile(r"[^\w\s]")


def singular(word: str) -> str:
    """A simple singular form: puppies → puppy, boxes → box, horses → horse, cats → cat; glass/bus/tennis stay."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and re.search(r"(?:ss|x|z|ch|sh)es$", word):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not re.search(r"(?:ss|us|is)$", word):
        return word[:-1]
    return word


def normalize_short_answer(text: str | None) -> str | None:
    """The comparable form of a short answer, or None when nothing is left (an unparsed reply)."""
    if not text:
        return None
    line = text.strip().splitlines()[0] if text.strip() else ""
    t = clean_reply(line)
    t = _PUNCT.sub(" ", t)
    words = [singular(w) for w in t.split() if w not in _ARTICLES]
    return " ".join(words) or None


def short_answer_correct(prediction: str | None, gold: str) -> bool:
    """Exact match of the normalised prediction and gold answer (an unparsed prediction is never correct)."""
    p = normalize_short_answer(prediction)
    return p is not None and p == normalize_short_answer(gold)
