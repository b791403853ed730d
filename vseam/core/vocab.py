"""The shared vocabulary: the paper's semantic levels and the seven V-SEAM subtypes (Table 9), in one place.

Every module that groups questions (calibration, profiles, routing, evaluation, the organism) reads them here.
"""

from __future__ import annotations

from typing import Literal

#: the three semantic levels of the paper, in its order
SEMANTIC_LEVELS: tuple[str, ...] = ("attribute", "object", "relation")
#: a profile's scope: one semantic level, or all of them
ALL = "all"
LEVELS: tuple[str, ...] = (*SEMANTIC_LEVELS, ALL)
Level = Literal["attribute", "object", "relation"]
ScopeLevel = Literal["attribute", "object", "relation", "all"]

#: the seven V-SEAM subtypes, in the paper's order, and the level each belongs to
SUBTYPE_LEVEL: dict[str, str] = {
    "color": "attribute",
    "material": "attribute",
    "animal": "object",
    "vehicle": "object",
    "indoor": "object",
    "spatial": "relation",
    "action": "relation",
}
SUBTYPES: tuple[str, ...] = tuple(SUBTYPE_LEVEL)

#: answers of the binary (yes/no) questions head attribution and Eq 4 work on
YES, NO = "yes", "no"
ANSWERS: tuple[str, ...] = (YES, NO)


def subtypes_of(level: str) -> list[str]:
    """The subtypes of a semantic level (all seven for `all`)."""
    return [s for s, lv in SUBTYPE_LEVEL.items() if level in (lv, ALL)]


__all__ = ["ALL", "ANSWERS", "LEVELS", "Level", "NO", "SEMANTIC_LEVELS", "SUBTYPES", "SUBTYPE_LEVEL", "ScopeLevel",
           "YES", "subtypes_of"]
