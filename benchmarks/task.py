"""The shape every benchmark module shares (`pope`, `cocoqa`, `gqa`), like one lmms-eval task folder each.

A task module defines:

* ``NAME`` and ``DATASET`` (the `vseam.calibrate.datasets` loader it reads),
* ``select(records) -> (kept, excluded_counts)`` — which loaded records the task evaluates,
* ``category(record) -> str`` — the group a record is reported (and bootstrapped) under,
* ``prompt(family, record) -> Prompt`` — the Table-8 prompt for the model family,
* ``choices(family) -> tuple[str, ...] | None`` — the only replies allowed under `--constrain` (None: open-ended),
* ``parse(reply) -> str | None`` — the prediction, None when the reply is unparsed,
* ``is_correct(record, prediction) -> bool``,
* ``metrics(answers) -> dict`` — every figure of the task for one profile's answers,
* ``headline(metrics) -> dict[category, accuracy]`` — the figures the markdown table and bar chart show,
* ``MAX_TOKENS`` — the default generation budget.

An `Answer` is one evaluated item of one profile; `score` builds it from a record and the server's reply.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable


@dataclasses.dataclass(frozen=True)
class Prompt:
    """One chat turn: optional system text, then an image followed by `text` (Table 8)."""

    text: str
    system: str | None = None


@dataclasses.dataclass
class Answer:
    """One item as answered under one profile.

    reply:      the model's text (None when the request failed after all retries — then the item is left out of
                the metrics and reported under `failed`)
    prediction: the parsed answer (None when the reply is unparsed: counted as such, never correct)
    """

    qid: str
    category: str
    gold: str
    reply: str | None
    prediction: str | None
    correct: bool
    level: str | None = None
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.reply is None

    @property
    def unparsed(self) -> bool:
        return self.reply is not None and self.prediction is None

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def score(record, reply: str | None, parse: Callable, is_correct: Callable, category: str,
          error: str | None = None) -> Answer:
    pred = parse(reply) if reply is not None else None
    return Answer(
        qid=record.qid,
        category=category,
        gold=record.answer,
        reply=reply,
        prediction=pred,
        correct=bool(pred is not None and is_correct(record, pred)),
        level=record.level,
        error=error,
    )


def accuracy_block(answers: Iterable[Answer]) -> dict:
    """n, answered, unparsed, correct and accuracy over the completed (non-failed) answers.

    accuracy = correct / n, where an unparsed reply counts as wrong; accuracy_answered = correct / answered.
    """
    done = [a for a in answers if not a.failed]
    n = len(done)
    unparsed = sum(a.unparsed for a in done)
    correct = sum(a.correct for a in done)
    answered = n - unparsed
    return {
        "n": n,
        "answered": answered,
        "unparsed": unparsed,
        "correct": correct,
        "accuracy": correct / n if n else None,
        "accuracy_answered": correct / answered if answered else None,
    }


def by_category(answers: Iterable[Answer], key: Callable[[Answer], str | None] = lambda a: a.category) -> dict[str, list[Answer]]:
    groups: dict[str, list[Answer]] = {}
    for a in answers:
        k = key(a)
        if k is not None:
            groups.setdefault(k, []).append(a)
    return groups


def mean_or_none(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None
