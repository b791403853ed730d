"""COCO-QA: open-ended questions answered with one word or phrase; types color, object, location.

The number type is excluded, as in the paper (Appendix G.2). Prompt: the family's Table-8 short-answer prompt
(with LLaVA's system line). Parse: `answers.normalize_short_answer`; scoring is exact match of normalised
prediction and gold answer. Metrics: accuracy per type, over all kept items (micro) and the mean of the types
(macro).
"""

from __future__ import annotations

from vseam.benchmarks.answers import normalize_short_answer
from vseam.benchmarks.task import Answer, Prompt, accuracy_block, by_category, mean_or_none

NAME = "cocoqa"
DATASET = "cocoqa"
TYPES = ("color", "object", "location")
#: spellings of the excluded type in the released files ("count_coco_qa.csv") and the original type ids
EXCLUDED_TYPES = ("number", "count")
ALL, MACRO = "all", "mean of types"
MAX_TOKENS = 16


def select(records):
    kept, excluded = [], {}
    for r in records:
        t = (r.subtype or "").lower()
        if t in TYPES:
            kept.append(r)
        else:
            reason = "number (excluded as in the paper)" if t in EXCLUDED_TYPES else f"type {t or 'missing'!r}"
            excluded[reason] = excluded.get(reason, 0) + 1
    return kept, excluded


def category(record) -> str:
    return (record.subtype or "").lower()


def prompt(family, record) -> Prompt:
    return Prompt(family.short_answer_text(record.question), getattr(family, "short_answer_system", None))


def choices(family) -> None:
    """Open-ended: `--constrain` does not apply."""
    return None


def parse(reply: str | None) -> str | None:
    return normalize_short_answer(reply)


def is_correct(record, prediction: str) -> bool:
    return prediction == normalize_short_answer(record.answer)


def metrics(answers: list[Answer]) -> dict:
    groups = by_category(answers)
    out = {t: accuracy_block(groups[t]) for t in TYPES if t in groups}
    out[ALL] = accuracy_block(answers)
    out[MACRO] = {"accuracy": mean_or_none(out[t]["accuracy"] for t in TYPES if t in out)}
    for k in list(out):
        if k != MACRO:
            src = groups.get(k, answers) if k != ALL else answers
            out[k]["failed"] = sum(a.failed for a in src)
    return out


def headline(m: dict) -> dict[str, float | None]:
    return {k: v["accuracy"] for k, v in m.items()}


def bootstrap_category(answer: Answer) -> str | None:
    """Significance is tested per reported category."""
    return answer.category
