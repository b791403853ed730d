"""Compare the head sets of two profiles: `vseam profile compare A B [--json]`.

A and B are profile files, or `paper:<model>-<target>` for the heads the paper publishes (Table 2 levels, Table 13
tasks, see `vseam.head_profiles.paper_heads`), so a user who calibrates the real model can say how far they reproduce the
paper. For each of the positive and negative sets the comparison gives the sizes, the shared heads, the union,
the Jaccard index |A∩B| / |A∪B| (null when both sets are empty), the fraction of each side found in the other, and
the heads only in A / only in B. Heads that are positive on one side and negative on the other are listed as
"crossed". λ and scores are not compared: the paper publishes neither.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import BaseModel

from vseam.head_profiles.model import Fingerprint, HeadProfile, load_profile

Pair = tuple[int, int]
PAPER_PREFIX = "paper:"


@dataclass(frozen=True)
class HeadSets:
    """The positive and negative head sets of one side of a comparison."""

    source: str
    name: str
    fingerprint: Fingerprint
    positive: frozenset[Pair]
    negative: frozenset[Pair]


def head_sets_of(profile: HeadProfile, source: str) -> HeadSets:
    return HeadSets(
        source=source,
        name=profile.name,
        fingerprint=profile.fingerprint,
        positive=frozenset(h.key for h in profile.positive),
        negative=frozenset(h.key for h in profile.negative),
    )


def load_head_sets(ref: str) -> HeadSets:
    """A profile file, or `paper:<model>-<target>` for the paper's published sets (e.g. paper:llava-color)."""
    if ref.startswith(PAPER_PREFIX):
        from vseam.head_profiles.paper_heads import FINGERPRINTS, paper_ref

        row = paper_ref(ref)
        return HeadSets(
            source=ref,
            name=f"paper table {row.table}: {row.ref}",
            fingerprint=FINGERPRINTS[row.model],
            positive=frozenset(row.positive),
            negative=frozenset(row.negative),
        )
    return head_sets_of(load_profile(ref), ref)


def _labels(pairs) -> list[str]:
    return [f"L{l}.H{h}" for l, h in sorted(pairs)]


class SetOverlap(BaseModel):
    """Overlap of one head set (positive or negative) between A and B."""

    count_a: int
    count_b: int
    shared: int
    union: int
    jaccard: float | None
    fraction_of_a_in_b: float | None
    fraction_of_b_in_a: float | None
    shared_heads: list[str]
    only_in_a: list[str]
    only_in_b: list[str]


class Side(BaseModel):
    source: str
    name: str
    model_id: str
    positive: int
    negative: int


class Comparison(BaseModel):
    a: Side
    b: Side
    positive: SetOverlap
    negative: SetOverlap
    crossed_a_positive_b_negative: list[str]
    crossed_a_negative_b_positive: list[str]
    fingerprint_mismatches: list[str]


def overlap(a: frozenset[Pair], b: frozenset[Pair]) -> SetOverlap:
    shared, union = a & b, a | b
    return SetOverlap(
        count_a=len(a),
        count_b=len(b),
        shared=len(shared),
        union=len(union),
        jaccard=len(shared) / len(union) if union else None,
        fraction_of_a_in_b=len(shared) / len(a) if a else None,
        fraction_of_b_in_a=len(shared) / len(b) if b else None,
        shared_heads=_labels(shared),
        only_in_a=_labels(a - b),
        only_in_b=_labels(b - a),
    )


def compare(a: HeadSets, b: HeadSets) -> Comparison:
    def side(s: HeadSets) -> Side:
        return Side(
            source=s.source,
            name=s.name,
            model_id=s.fingerprint.model_id,
            positive=len(s.positive),
            negative=len(s.negative),
        )

    return Comparison(
        a=side(a),
        b=side(b),
        positive=overlap(a.positive, b.positive),
        negative=overlap(a.negative, b.negative),
        crossed_a_positive_b_negative=_labels(a.positive & b.negative),
        crossed_a_negative_b_positive=_labels(a.negative & b.positive),
        fingerprint_mismatches=a.fingerprint.mismatches(b.fingerprint),
    )


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def render_text(c: Comparison) -> str:
    lines = []
    for tag, s in (("A", c.a), ("B", c.b)):
        lines.append(f"{tag}: {s.source} ('{s.name}', {s.model_id}): {s.positive} positive, {s.negative} negative")
    if c.fingerprint_mismatches:
        lines.append("warning: A and B were made for different models, head indices do not correspond: "
                     + "; ".join(c.fingerprint_mismatches))
    for set_name in ("positive", "negative"):
        o: SetOverlap = getattr(c, set_name)
        lines.append(
            f"{set_name}: A {o.count_a}, B {o.count_b}, shared {o.shared}, union {o.union}, "
            f"Jaccard {_num(o.jaccard)}, A found in B {_num(o.fraction_of_a_in_b)}, "
            f"B found in A {_num(o.fraction_of_b_in_a)}"
        )
        for what, heads in (("shared", o.shared_heads), ("only in A", o.only_in_a), ("only in B", o.only_in_b)):
            lines.append(f"  {what + ':':<10} {' '.join(heads) if heads else '-'}")
    crossed = [f"{h} (A positive, B negative)" for h in c.crossed_a_positive_b_negative]
    crossed += [f"{h} (A negative, B positive)" for h in c.crossed_a_negative_b_positive]
    lines.append(f"crossed: {', '.join(crossed) if crossed else '-'}")
    return "\n".join(lines)


def render_json(c: Comparison) -> str:
    return json.dumps(c.model_dump(mode="json"), indent=2)
