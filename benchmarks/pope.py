"""POPE: binary object-presence questions in three splits (random / popular / adversarial).

Prompt, parse, choices, scoring: the yes/no ones of `vseam.benchmarks.binary`. Metrics per split and over all splits,
with "yes" as the positive class:

* accuracy = (TP + TN) / n — an unparsed reply counts as wrong (also reported: `unparsed`, `accuracy_answered`)
* precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2PR / (P + R) — over the parsed replies
* yes_ratio = predicted yes / parsed replies
"""

from __future__ import annotations

from vseam.benchmarks.answers import YES
from vseam.benchmarks.binary import choices, is_correct, parse, prompt  # noqa: F401  (the task interface)
from vseam.benchmarks.task import Answer, accuracy_block, by_category

NAME = "pope"
DATASET = "pope"
SPLITS = ("random", "popular", "adversarial")
ALL = "all"
MAX_TOKENS = 8


def select(records):
    kept = [r for r in records if r.answer in ("yes", "no")]
    excluded = len(records) - len(kept)
    return kept, ({"not yes/no": excluded} if excluded else {})


def category(record) -> str:
    return record.subtype or "unknown"


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def confusion(answers: list[Answer]) -> dict:
    """Counts and rates of one group of answers (failed requests left out)."""
    done = [a for a in answers if not a.failed]
    parsed = [a for a in done if not a.unparsed]
    tp = sum(a.prediction == YES and a.gold == YES for a in parsed)
    fp = sum(a.prediction == YES and a.gold != YES for a in parsed)
    tn = sum(a.prediction != YES and a.gold != YES for a in parsed)
    fn = sum(a.prediction != YES and a.gold == YES for a in parsed)
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = (2 * precision * recall / (precision + recall)) if precision and recall else (0.0 if parsed else None)
    return accuracy_block(done) | {
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": _ratio(tp + fp, len(parsed)),
        "failed": len(answers) - len(done),
    }


def metrics(answers: list[Answer]) -> dict:
    groups = by_category(answers)
    order = [s for s in SPLITS if s in groups] + sorted(set(groups) - set(SPLITS))
    out = {split: confusion(groups[split]) for split in order}
    out[ALL] = confusion(answers)
    return out


def headline(m: dict) -> dict[str, float | None]:
    return {k: v["accuracy"] for k, v in m.items()}


def bootstrap_category(answer: Answer) -> str | None:
    """Significance is tested per reported category."""
    return answer.category
