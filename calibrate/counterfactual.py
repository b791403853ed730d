"""Counterfactual questions: swap the one semantic unit a binary question is about (an attribute value, an object,
a relation) to say what a local edit of the image should change.

Two rewriters with the same interface, `rewriter(record) -> Counterfactual`:

* `RuleRewriter` (offline default): finds the unit in the question with the GQA vocabularies of
  `vseam.calibrate.datasets.vocab` and swaps it (color -> another color, material -> another material, object -> another
  object of the same category, left <-> right, above <-> below, an action -> another action ...).
* `LLMRewriter`: any OpenAI-compatible chat endpoint, prompted with few-shot examples per semantic level in the
  style of the paper's Table 7 (instruction, worked examples with question / answer / full answer, then the item).
  Replies are cached on disk, so a re-run never asks twice.

What the edit does, for both answers of the original question x (answer y):

* y = yes ("Is the sofa red?"):  the region shows `source` (red); the edit makes it `target` (green), the
  counterfactual question asks about the target ("Is the sofa green?"), and x's answer on the edited image is "no".
* y = no ("Is the shirt blue?", full answer "The shirt is black."): the counterfactual question names what is
  really there ("Is the shirt black?", as in the paper's examples); the edit makes the region show the value x
  asked about (target = blue, source = black), so x's answer on the edited image is "yes".

Either way `Counterfactual.prompt` describes the edited region ("a green sofa") for generative editors, and the
edit flips the model's answer to x exactly when the model sees the change (Eq 4).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import pathlib
import re
from typing import Protocol

from vseam.calibrate.datasets.vocab import (
    ACTION_SUBSTITUTES,
    CATEGORIES,
    COLORS,
    MATERIAL_ADJECTIVES,
    MATERIALS,
    SPATIAL_OPPOSITES,
    TARGET_COLORS,
    TARGET_MATERIALS,
    category_of,
    find_word,
    singular,
)
from vseam.calibrate.records import VQARecord
from vseam.core.vocab import SUBTYPE_LEVEL


class CounterfactualError(ValueError):
    """The record cannot be rewritten (the reason is the message; the edit job counts it as a skip reason)."""


@dataclasses.dataclass
class Counterfactual:
    question: str  # the rewritten question (one semantic unit swapped)
    level: str  # attribute / object / relation
    source: str | None  # what the edited region shows now ("black", "bird", "to the left of")
    target: str | None  # what it should show after the edit ("blue", "cat", "to the right of")
    prompt: str  # description of the edited region for generative editors ("a blue shirt")
    method: str = "rules"  # "rules" or "llm:<model>"
    subject: str | None = None  # the object the question is about ("shirt")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_json(d: dict) -> "Counterfactual":
        return Counterfactual(**d)


class Rewriter(Protocol):
    name: str

    def __call__(self, record: VQARecord) -> Counterfactual: ...


# ---- small text helpers ---------------------------------------------------------------------------------------


def _stable_index(key: str, n: int) -> int:
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % n


def _replace_word(text: str, old: str, new: str) -> str:
    pat = re.compile(r"(?<![A-Za-z])" + re.escape(old) + r"(?![A-Za-z])", re.IGNORECASE)
    out, n = pat.subn(lambda m: _match_case(m.group(0), new), text, count=1)
    if n == 0:
        raise CounterfactualError(f"cannot find {old!r} in {text!r}")
    return out


def _match_case(original: str, new: str) -> str:
    return new[:1].upper() + new[1:] if original[:1].isupper() else new


def _fix_articles(text: str) -> str:
    """a/an before the following word ("a elephant" -> "an elephant")."""

    def fix(m):
        art, word = m.group(1), m.group(2)
        want = "an" if word[:1].lower() in "aeiou" else "a"
        return _match_case(art, want) + " " + word

    return re.sub(r"\b([Aa]n?)\s+([A-Za-z]+)", fix, text)


def _subject(question: str) -> str | None:
    """The object a GQA yes/no question is about: "Is the red shirt blue?" -> "red shirt" (best effort)."""
    m = re.match(r"^\s*(?:is|are|was|were|does|do)\s+(?:the|a|an|this|that)\s+(.+?)\s+"
                 r"(?:made|to|in|on|above|below|under|behind|near|next|beside|holding|wearing|\w+ing\b|\w+\?)",
                 question, re.IGNORECASE)  # fmt: skip
    return m.group(1).strip() if m else None


def _other(value: str, choices, key: str) -> str:
    options = [c for c in choices if c != value]
    return options[_stable_index(key, len(options))]


# ---- rule-based rewriting -------------------------------------------------------------------------------------


class RuleRewriter:
    """Offline rewriting from the question, its full answer and the GQA vocabularies."""

    name = "rules"

    def __call__(self, record: VQARecord) -> Counterfactual:
        if record.answer not in ("yes", "no"):
            raise CounterfactualError("not a yes/no question")
        level = SUBTYPE_LEVEL.get(record.subtype or "")
        if record.subtype in ("color", "material"):
            return self._attribute(record)
        if level == "object":
            return self._object(record)
        if record.subtype == "spatial":
            return self._relation(record, spatial=True)
        if record.subtype == "action":
            return self._relation(record, spatial=False)
        raise CounterfactualError(f"no rewriting rule for subtype {record.subtype!r}")

    def _attribute(self, r: VQARecord) -> Counterfactual:
        if r.subtype == "color":
            vocab, targets = list(COLORS), TARGET_COLORS
        else:
            vocab, targets = list(MATERIALS) + list(MATERIAL_ADJECTIVES), TARGET_MATERIALS
        asked_word = find_word(r.question, vocab)
        if asked_word is None:
            raise CounterfactualError(f"no {r.subtype} word in the question")
        asked = MATERIAL_ADJECTIVES.get(asked_word, asked_word) if r.subtype == "material" else asked_word
        subject = _subject(r.question)
        if r.answer == "yes":
            source, target = asked, _other(asked, targets, r.qid)
            new_word = target
        else:
            seen = find_word((r.full_answer or "").replace(asked_word, ""), [w for w in vocab if w != asked_word])
            source = MATERIAL_ADJECTIVES.get(seen, seen) if seen else None
            target = asked
            new_word = source or _other(asked, targets, r.qid)
        if r.subtype == "material" and asked_word in MATERIAL_ADJECTIVES and asked_word != "metal":
            adjective = {v: k for k, v in MATERIAL_ADJECTIVES.items() if k not in ("hardwood", "metal")}
            new_word = adjective.get(new_word, f"made of {new_word}")
        question = _replace_word(r.question, asked_word, new_word)
        thing = subject or "object"
        prompt = f"a {target} {thing}" if r.subtype == "color" else f"a {thing} made of {target}"
        return Counterfactual(question, "attribute", source, target, _fix_articles(prompt), self.name, subject)

    def _object(self, r: VQARecord) -> Counterfactual:
        names = list(CATEGORIES[r.subtype]) if r.subtype in CATEGORIES else []
        m = re.search(r"\bthere\s+(?:(?:a|an|any|some)\s+)?(.+?)\s+(?:in|on)\s+(?:this|the)\s+(?:picture|image|photo)",
                      r.question, re.IGNORECASE)  # fmt: skip
        asked = m.group(1).strip().lower() if m else find_word(r.question, names)
        if not asked:
            raise CounterfactualError("cannot find the object the question asks about")
        base = singular(asked)
        category = category_of(asked) or r.subtype
        pool = [n for n in CATEGORIES.get(category, names) if n != base]
        if not pool:
            raise CounterfactualError(f"no other {category} to swap {asked!r} with")
        if r.answer == "yes":
            source, target = base, pool[_stable_index(r.qid, len(pool))]
            new = target
        else:
            seen = find_word((r.full_answer or "").replace(asked, ""), pool)
            source, target = seen, base
            new = seen or pool[_stable_index(r.qid, len(pool))]
        question = _fix_articles(_replace_word(r.question, asked, new))
        return Counterfactual(question, "object", source, target, _fix_articles(f"a {target}"), self.name, base)

    def _relation(self, r: VQARecord, spatial: bool) -> Counterfactual:
        # GQA's relation subsets mix the two kinds ("Is the man riding the elephant?" among spatial questions):
        # look for the subtype's own kind first, then the other one
        vocabs = [SPATIAL_OPPOSITES, ACTION_SUBSTITUTES] if spatial else [ACTION_SUBSTITUTES, SPATIAL_OPPOSITES]
        asked, swap = None, vocabs[0]
        for swap in vocabs:
            asked = find_word(r.question, list(swap))
            if asked is not None:
                break
        if asked is None:
            verbs = re.findall(r"\b([a-z]+ing)\b", r.question.lower())
            asked, swap = (verbs[0], ACTION_SUBSTITUTES) if verbs else (None, swap)
        if asked is None:
            raise CounterfactualError("no spatial relation or action found in the question")
        vocab = list(swap)
        other = swap.get(asked) or _other(asked, list(ACTION_SUBSTITUTES), r.qid)
        if r.answer == "yes":
            source, target = asked, other
            new = other
        else:
            seen = find_word((r.full_answer or "").replace(asked, ""), [v for v in vocab if v != asked])
            source, target = seen or other, asked
            new = source
        question = _replace_word(r.question, asked, new)
        subject = _subject(r.question)
        prompt = _relation_prompt(r.question, asked, target, subject)
        return Counterfactual(question, "relation", source, target, prompt, self.name, subject)


def _relation_prompt(question: str, asked: str, target: str, subject: str | None) -> str:
    """"Is the man holding the skis?" + target "throwing" -> "the man throwing the skis"."""
    body = re.sub(r"^\s*(?:is|are)\s+", "", question.strip().rstrip("?"), flags=re.IGNORECASE)
    try:
        return _replace_word(body, asked, target)
    except CounterfactualError:
        return f"the {subject or 'object'} {target}"


# ---- LLM rewriting --------------------------------------------------------------------------------------------

#: bump when the prompts below change: cached replies are keyed by it
PROMPT_VERSION = "v1"

_INSTRUCTIONS = {
    "attribute": (
        "Below is a yes/no question about a property of one object in a photo (its color or what it is made of), "
        "together with the dataset's answer and a one-sentence explanation. Write a new question that is identical "
        "except that the property is replaced by a different, concrete value that can be seen in a photo."
    ),
    "object": (
        "Below is a yes/no question asking whether some object appears in a photo, together with the dataset's "
        "answer and a one-sentence explanation. Write a new question that is identical except that it asks about a "
        "different object of the same general kind (another animal, another vehicle, another household item)."
    ),
    "relation": (
        "Below is a yes/no question about how two objects in a photo relate, either by position (left/right, "
        "above/below, in front/behind) or by an action (holding, riding, eating...), together with the dataset's "
        "answer and a one-sentence explanation. Write a new question that is identical except that the relation "
        "is replaced by a different one (a position by its opposite, an action by another plausible action)."
    ),
}

#: our own worked examples, (question, answer, full answer, counterfactual) per level
_EXAMPLES = {
    "attribute": [
        ("Is the umbrella green?", "Yes", "The umbrella is green.", "Is the umbrella purple?"),
        ("Is the bench made of stone?", "No", "The bench is made of wood.", "Is the bench made of wood?"),
        ("Are the towels white?", "Yes", "The towels are white.", "Are the towels orange?"),
    ],
    "object": [
        ("Is there a giraffe in this picture?", "Yes", "Yes, there is a giraffe.", "Is there a zebra in this picture?"),
        ("Is there a laptop in this picture?", "No", "There is a keyboard in the image.",
         "Is there a keyboard in this picture?"),
        ("Is there a train in this picture?", "Yes", "Yes, there is a train.", "Is there a bus in this picture?"),
    ],  # fmt: skip
    "relation": [
        ("Is the boy kicking the ball?", "Yes", "The boy is kicking the ball.", "Is the boy holding the ball?"),
        ("Is the lamp to the right of the bed?", "Yes", "The lamp is to the right of the bed.",
         "Is the lamp to the left of the bed?"),
        ("Is the cat below the shelf?", "No", "The cat is above the shelf.", "Is the cat above the shelf?"),
        ("Is the woman eating the apple?", "Yes", "The woman is eating the apple.", "Is the woman throwing the apple?"),
    ],  # fmt: skip
}

_CLOSING = "Reply with the new question only, on one line, without any explanation."


def _item(q: str, a: str, full: str, cf: str | None) -> str:
    return f"Question: {q}\nAnswer: {a}\nExplanation: {full}\nNew question:" + (f" {cf}" if cf is not None else "")


def build_prompt(level: str, question: str, answer: str, full_answer: str | None) -> str:
    """The few-shot prompt for one record (instruction, worked examples, then the item to rewrite)."""
    if level not in _INSTRUCTIONS:
        raise CounterfactualError(f"no prompt for semantic level {level!r}")
    parts = [_INSTRUCTIONS[level]]
    for i, ex in enumerate(_EXAMPLES[level], 1):
        parts.append(f"Example {i}:\n" + _item(*ex))
    parts.append(_CLOSING)
    parts.append(_item(question, answer.capitalize(), full_answer or "(none)", None))
    return "\n\n".join(parts)


def clean_reply(text: str) -> str:
    """The question in an LLM reply: first non-empty line, without labels or quotes, ending in "?"."""
    for line in (text or "").splitlines():
        line = line.strip().strip('"').strip("'").strip()
        line = re.sub(r"^(?:new question|counterfactual question|question)\s*:\s*", "", line, flags=re.IGNORECASE)
        if line:
            return line if line.endswith("?") else line.rstrip(".") + "?"
    raise CounterfactualError("the language model returned an empty reply")


def changed_span(old: str, new: str) -> tuple[str, str]:
    """The one contiguous word span that differs between two questions: (old words, new words)."""
    a = re.findall(r"[\w'-]+", old.lower())
    b = re.findall(r"[\w'-]+", new.lower())
    ops = [op for op in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes() if op[0] != "equal"]
    if not ops:
        raise CounterfactualError(f"the rewrite {new!r} is the same question")
    i1, i2, j1, j2 = ops[0][1], ops[-1][2], ops[0][3], ops[-1][4]
    old_span, new_span = " ".join(a[i1:i2]), " ".join(b[j1:j2])
    if not new_span or len(new_span.split()) > 5 or len(old_span.split()) > 5:
        raise CounterfactualError(f"the rewrite {new!r} changes more than one semantic unit of {old!r}")
    for article in ("a ", "an "):  # "a dog" -> "an elephant": the unit is the noun
        if old_span.startswith(article) and new_span.split()[0] in ("a", "an"):
            old_span, new_span = old_span.split(" ", 1)[-1], new_span.split(" ", 1)[-1]
    return old_span, new_span


class LLMRewriter:
    """Rewrites with an OpenAI-compatible chat endpoint; replies cached in `cache_dir/counterfactuals.jsonl`.

    base_url:    e.g. http://localhost:8000/v1
    model:       the served model name
    api_key_env: environment variable holding the key (a placeholder is sent when it is unset: local servers)
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        cache_dir: str | os.PathLike,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_retries: int = 2,
    ):
        from openai import OpenAI

        from vseam.calibrate.rundir import DoneLog

        self.model = model
        self.name = f"llm:{model}"
        self.client = OpenAI(
            base_url=base_url,
            api_key=os.environ.get(api_key_env) or "not-needed",
            timeout=timeout,
            max_retries=max_retries,
        )
        self.cache = DoneLog(pathlib.Path(cache_dir) / "counterfactuals.jsonl", key="key")
        self.requests = 0  # replies fetched from the endpoint (not from the cache)

    def cache_key(self, level: str, r: VQARecord) -> str:
        blob = json.dumps([r.question, r.answer, r.full_answer, level, self.model, PROMPT_VERSION])
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def ask(self, level: str, r: VQARecord) -> str:
        key = self.cache_key(level, r)
        hit = self.cache.get(key)
        if hit is not None:
            return hit["reply"]
        from openai import OpenAIError

        prompt = build_prompt(level, r.question, r.answer, r.full_answer)
        try:
            resp = self.client.chat.completions.create(
                model=self.model,
                messages=[{"role": "user", "content": prompt}],
                temperature=0.0,
                max_tokens=64,
            )
        except OpenAIError as e:  # not cached: a re-run asks again
            raise LLMUnavailable(f"language model request failed: {type(e).__name__}: {e}") from None
        self.requests += 1
        reply = resp.choices[0].message.content or ""
        self.cache.append({"key": key, "model": self.model, "prompt_version": PROMPT_VERSION,
                           "question": r.question, "reply": reply})  # fmt: skip
        return reply

    def __call__(self, record: VQARecord) -> Counterfactual:
        if record.answer not in ("yes", "no"):
            raise CounterfactualError("not a yes/no question")
        level = SUBTYPE_LEVEL.get(record.subtype or "")
        if level is None:
            raise CounterfactualError(f"no semantic level for subtype {record.subtype!r}")
        question = clean_reply(self.ask(level, record))
        old, new = changed_span(record.question, question)
        source, target = (old, new) if record.answer == "yes" else (new, old)
        subject = _subject(record.question)
        if level == "attribute":
            thing = subject or "object"
            prompt = f"a {target} {thing}" if record.subtype == "color" else f"a {thing} made of {target}"
        elif level == "object":
            prompt = f"a {target}"
        else:
            prompt = _relation_prompt(record.question, old, target, subject)
        return Counterfactual(question, level, source, target, _fix_articles(prompt), self.name, subject)


class LLMUnavailable(RuntimeError):
    """The endpoint could not be reached or failed; the item is left for a later run (nothing is cached)."""


__all__ = [
    "Counterfactual",
    "CounterfactualError",
    "LLMRewriter",
    "LLMUnavailable",
    "PROMPT_VERSION",
    "RuleRewriter",
    "build_prompt",
    "changed_span",
    "clean_reply",
]
