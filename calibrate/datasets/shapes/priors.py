"""The flaws planted in the `shapes` world's *training* distribution (the held-out splits stay balanced).

Real VLMs learn shortcuts from their training data: objects that usually appear together (POPE's adversarial
split probes exactly this), typical colours of a class, classes seen more often than others. The organism is
trained on scenes drawn with such biases so that its errors concentrate where a prior misleads it — a testbed on
which a head-rescaling method has something real to fix.

Only split "train" uses `TRAIN_PRIORS`; "val", "calib" and "test" are drawn exactly as before (uniform colours and
shapes, no co-occurrence), so every held-out question is balanced.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vseam.calibrate.datasets.shapes.world import SHAPE_GROUPS


@dataclasses.dataclass(frozen=True)
class Priors:
    #: shape -> its usual colour, used with probability `color_strength` for objects whose colour is not forced
    typical_color: dict[str, str]
    color_strength: float
    #: shape -> the shape it usually appears with: when a scene holds one, its partner is added (if it fits) with
    #: probability `partner_strength`
    partners: dict[str, str]
    partner_strength: float
    #: relative frequency of each shape among the distractors a scene is filled with (POPE's "popular" objects)
    shape_weights: dict[str, float]
    #: probability that a "no" colour question about an object *not* in its typical colour names the typical colour
    #: ("Is the circle red?" of a blue circle). Without it, "yes" questions name the actual colour (usually the
    #: typical one) and "no" questions almost never can, so the question text alone gives the answer (P(yes | the
    #: typical colour is asked) ~ 0.9). At 1.0 the question says no more than the scenes do (P = the colour prior).
    counter_prior_questions: float = 1.0
    #: a preferred side: shapes in the order the prior places them, left to right and top to bottom. It is in the
    #: training *annotations* only (`prior_labels`, recipe field `prior_sides`), not in the scenes: "Is the circle
    #: to the left of the star?" is what the prior answers "yes" when the circle comes first. Empty: no side prior
    side_order: tuple[str, ...] = ()

    def color(self, rng: np.random.Generator, shape: str) -> str | None:
        """The prior's colour for a new `shape` object, or None to draw one uniformly."""
        if shape in self.typical_color and rng.random() < self.color_strength:
            return self.typical_color[shape]
        return None

    def fill_order(self, rng: np.random.Generator, candidates: list[str], present: set[str]) -> list[str]:
        """The order in which distractor shapes are tried: partners of present shapes first (each with
        probability `partner_strength`), then the rest drawn by `shape_weights`."""
        first = [self.partners[s] for s in sorted(present) if self.partners.get(s) in candidates
                 and rng.random() < self.partner_strength]
        first = list(dict.fromkeys(first))
        rest = [s for s in candidates if s not in first]
        if rest:
            w = np.asarray([self.shape_weights.get(s, 1.0) for s in rest], float)
            rest = [rest[i] for i in rng.choice(len(rest), size=len(rest), replace=False, p=w / w.sum())]
        return first + rest

    def asked_color(self, rng: np.random.Generator, shape: str, actual: str) -> str | None:
        """The colour a "no" question about a `shape` object of colour `actual` names to offset the prior, or None
        to let the generator choose as it does without priors."""
        typical = self.typical_color.get(shape)
        if typical is None or typical == actual or rng.random() >= self.counter_prior_questions:
            return None
        return typical

    def says_yes(self, subtype: str, question: str, present: set[str]) -> bool | None:
        """What the priors alone answer, for a scene holding the shapes `present`: a colour question "yes" when it
        names the shape's typical colour ("Is the circle red?"), a presence question "yes" when the asked shape's
        usual partner is present (co-occurrence, POPE's adversarial case); None for the subtypes they say nothing
        about. True on a question whose answer is "no" is the flaw: a model that over-uses the prior says "yes"."""
        from vseam.calibrate.datasets.shapes.oracle import parse_question

        if subtype == "spatial" and self.side_order:
            _, a, relation, b = parse_question(question)
            if a not in self.side_order or b not in self.side_order:
                return None
            first = self.side_order.index(a) < self.side_order.index(b)
            return first == (relation in ("to the left of", "above"))
        if subtype != "color" and subtype not in SHAPE_GROUPS:
            return None
        parts = parse_question(question)
        if parts[0] == "attr":
            return self.typical_color.get(parts[1]) == parts[2]
        return self.partners.get(parts[1]) in present

    def describe(self) -> dict:
        out = dataclasses.asdict(self)
        if not self.side_order:  # absent when unset: the training pool's cache key predates the field
            out.pop("side_order")
        return out


#: the training world's biases (documented in the organism's model card). Partners cross the presence groups so a
#: presence question's same-group distractor never carries the prior.
TRAIN_PRIORS = Priors(
    typical_color={"circle": "red", "ring": "blue", "square": "green", "diamond": "purple", "triangle": "orange",
                   "star": "yellow"},
    color_strength=0.6,
    partners={"circle": "square", "square": "circle", "ring": "star", "star": "ring", "triangle": "diamond",
              "diamond": "triangle"},
    partner_strength=0.8,
    shape_weights={"circle": 3.0, "square": 2.0, "star": 2.0, "ring": 1.0, "diamond": 1.0, "triangle": 1.0},
)


#: the side prior of recipe field `prior_sides`: partners sit apart, so a partner pair is asked both ways
SIDE_ORDER = ("circle", "ring", "triangle", "square", "star", "diamond")


def training_priors(sides: bool = False) -> Priors:
    """The training priors the annotations follow: TRAIN_PRIORS, with the side prior when `sides`."""
    return dataclasses.replace(TRAIN_PRIORS, side_order=SIDE_ORDER) if sides else TRAIN_PRIORS


def priors_for(split: str) -> Priors | None:
    """The biases a split is drawn with: TRAIN_PRIORS for "train", none for the held-out splits."""
    return TRAIN_PRIORS if split == "train" else None
