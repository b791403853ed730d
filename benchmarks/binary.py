"""The yes/no part of the task interface (see `vseam.benchmarks.task`), shared by the binary tasks `gqa` and `pope`.

A binary task re-exports these four functions: the family's Table-8 yes/no prompt, its two answer words as the
`--constrain` choices, `answers.parse_yes_no` as the parser, and exact match with the gold yes/no.
"""

from __future__ import annotations

from vseam.benchmarks.answers import parse_yes_no
from vseam.benchmarks.task import Prompt


def prompt(family, record) -> Prompt:
    return Prompt(family.binary_text(record.question))


def choices(family) -> tuple[str, ...]:
    """The replies `--constrain` allows: the family's two answer words."""
    return (family.yes_word, family.no_word)


def parse(reply: str | None) -> str | None:
    return parse_yes_no(reply)


def is_correct(record, prediction: str) -> bool:
    return prediction == record.answer
