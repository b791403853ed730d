"""`head_profile: "auto"` — route a request by the semantic level of its question.

The paper finds positive heads shared within a semantic level (attribute / object / relation) but not across
levels, so a server with one profile per level can pick the profile from the question itself. The rule, applied
to the lower-cased text of the request's last user turn (whole words / phrases):

1. **attribute** if the question asks for an attribute outright: "what color/colour", "which color",
   "what material", "made of", "what shape", "what size".
2. **relation** if it names a spatial relation ("left", "right", "above", "below", "under", "behind",
   "in front of", "next to", "beside", "near", "on top of", "between", "inside", "outside", "where", ...) or an
   action between things ("riding", "holding", "wearing", "carrying", "eating", ... — see `ACTION_WORDS`).
3. **attribute** if it names a colour or material ("red", "wooden", "metal", "striped", ...).
4. **object** otherwise ("Is there a dog?", "What animal is this?").

Relation comes before colour words so that "Is the man to the left of the red car?" counts as a relation
question, while "What color is the car on the left?" is caught by rule 1. The chosen level is served by the
first loaded profile whose `scope.level` is that level, else the first profile with level `all`, else `none`.
"""

from __future__ import annotations

import re
from vseam.core.vocab import Level
from typing import Iterable


ATTRIBUTE_QUESTIONS = ("what color", "what colour", "which color", "which colour", "what material", "made of",
                       "what shape", "what size", "what kind of material")
SPATIAL_WORDS = ("left", "right", "above", "below", "under", "underneath", "beneath", "behind", "in front of",
                 "next to", "beside", "near", "on top of", "top of", "between", "inside", "outside", "across from",
                 "where", "over", "against", "surrounding", "around")
ACTION_WORDS = ("riding", "holding", "wearing", "carrying", "eating", "feeding", "throwing", "catching", "hitting",
                "sitting on", "standing on", "lying on", "walking on", "hanging on", "hanging from", "leaning on",
                "playing with", "looking at", "watching", "driving", "pulling", "pushing", "touching",
                "covering", "drinking", "cutting", "chasing", "kicking", "flying", "swinging", "grazing",
                "parked", "mounted on", "attached to")
COLOR_WORDS = ("red", "green", "blue", "yellow", "orange", "purple", "pink", "brown", "black", "white", "gray",
               "grey", "silver", "gold", "golden", "tan", "beige", "maroon", "navy", "teal", "colorful")
MATERIAL_WORDS = ("wood", "wooden", "metal", "metallic", "plastic", "glass", "brick", "stone", "concrete", "cloth",
                  "leather", "paper", "fabric", "ceramic", "steel", "cotton", "wicker", "marble", "striped",
                  "dotted", "checkered", "plaid")


def _phrases(words: Iterable[str]) -> re.Pattern:
    return re.compile(r"\b(?:" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + r")\b")


_ATTRIBUTE_Q = _phrases(ATTRIBUTE_QUESTIONS)
_RELATION = _phrases(SPATIAL_WORDS + ACTION_WORDS)
_ATTRIBUTE_W = _phrases(COLOR_WORDS + MATERIAL_WORDS)
#: the paper's prompt templates (Table 8) around the question; their words must not drive routing
_TEMPLATE = re.compile(
    r"please answer the question using (?:yes|no) or (?:yes|no)\.?|answer the question using a single word or "
    r"phrase\.?|context:\s*n/a|short answer:|question:",
    re.IGNORECASE,
)


def semantic_level(question: str) -> Level:
    """The semantic level a question asks about (the documented rule above)."""
    text = _TEMPLATE.sub(" ", question).lower()
    if _ATTRIBUTE_Q.search(text):
        return "attribute"
    if _RELATION.search(text):
        return "relation"
    if _ATTRIBUTE_W.search(text):
        return "attribute"
    return "object"


def request_text(body: dict) -> str:
    """The text the user asked: the last user turn of a chat request (its text parts), or a completion prompt.

    A batch chat request (`messages` = list of conversations) is served by one profile; `auto` reads the first.
    """
    messages = body.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[0], list):  # batch: one profile for all
        messages = messages[0]
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return _content_text(message.get("content"))
        return ""
    for key in ("prompt", "input"):
        value = body.get(key)
        if isinstance(value, str):
            return value
        if isinstance(value, list) and value:
            if all(isinstance(v, str) for v in value):
                return value[0]
            if isinstance(value[-1], dict):  # responses API: list of messages
                return request_text({"messages": value})
    return ""


def _content_text(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") in ("text", "input_text")]
        return " ".join(p for p in parts if isinstance(p, str))
    return ""


def route(level: Level, profiles: Iterable[tuple[str, str]]) -> str:
    """Profile name for `level` from (name, scope level) pairs: exact level, else an `all` profile, else none."""
    profiles = list(profiles)
    for name, scope in profiles:
        if scope == level:
            return name
    for name, scope in profiles:
        if scope == "all":
            return name
    return "none"
