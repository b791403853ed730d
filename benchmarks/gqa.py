"""GQA subsets of V-SEAM: binary questions of seven subtypes in three semantic levels.

attribute: color, material · object: animal, vehicle, indoor · relation: spatial, action.

Prompt, parse, choices, scoring: the yes/no ones of `vseam.benchmarks.binary`. Metrics:

* per subtype: accuracy (an unparsed reply counts as wrong; see `task.accuracy_block`)
* per level: accuracy over the level's items (`accuracy`, micro) and the mean of its subtypes' accuracies
  (`accuracy_macro`) — the paper's Table 4 levels are the subtype means
* overall: accuracy over all items, and the mean of the three levels (`avg`, Table 3's "Avg")
"""

from __future__ import annotations

from vseam.core.vocab import SEMANTIC_LEVELS, SUBTYPE_LEVEL, SUBTYPES
from vseam.benchmarks.binary import choices, is_correct, parse, prompt  # noqa: F401  (the task interface)
from vseam.benchmarks.task import Answer, accuracy_block, by_category, mean_or_none

NAME = "gqa"
DATASET = "gqa"
#: datasets with the same seven binary subtypes: GQA itself and the synthetic `shapes` world (`--dataset shapes`)
DATASETS = ("gqa", "shapes")
ALL, AVG = "all", "avg"
MAX_TOKENS = 8


def select(records):
    kept, excluded = [], {}
    for r in records:
        if r.subtype not in SUBTYPES:
            reason = f"subtype {r.subtype!r}"
        elif r.answer not in ("yes", "no"):
            reason = "not yes/no"
        else:
            kept.append(r)
            continue
        excluded[reason] = excluded.get(reason, 0) + 1
    return kept, excluded


def category(record) -> str:
    return record.subtype


def metrics(answers: list[Answer]) -> dict:
    subtypes = by_category(answers)
    out: dict = {"subtypes": {}, "levels": {}}
    for st in SUBTYPES:
        if st in subtypes:
            out["subtypes"][st] = accuracy_block(subtypes[st]) | {"level": SUBTYPE_LEVEL[st]}
    levels = by_category(answers, key=lambda a: SUBTYPE_LEVEL.get(a.category))
    for lv in SEMANTIC_LEVELS:
        if lv in levels:
            out["levels"][lv] = accuracy_block(levels[lv]) | {
                "accuracy_macro": mean_or_none(
                    v["accuracy"] for st, v in out["subtypes"].items() if SUBTYPE_LEVEL[st] == lv),
                "subtypes": [st for st in SUBTYPES if SUBTYPE_LEVEL[st] == lv and st in out["subtypes"]],
            }
    out[ALL] = accuracy_block(answers) | {"failed": sum(a.failed for a in answers)}
    out[AVG] = mean_or_none(v["accuracy"] for v in out["levels"].values())
    return out


def headline(m: dict) -> dict[str, float | None]:
    row = {st: v["accuracy"] for st, v in m["subtypes"].items()}
    row |= {lv: v["accuracy"] for lv, v in m["levels"].items()}
    row[AVG] = m[AVG]
    return row


def bootstrap_category(answer: Answer) -> str | None:
    """Table 18 resamples per semantic level."""
    return SUBTYPE_LEVEL.get(answer.category)
