"""Questions about `shapes` scenes: the generator of the seven V-SEAM subtypes (with the edit that flips each
answer), seeded per split.

Every record is generated from (split, seed, index) alone; `_check` makes sure the scene graph answers it and that
its edit flips the answer.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import numpy as np

from vseam.calibrate.datasets.shapes.oracle import answer_from_graph
from vseam.calibrate.datasets.shapes.world import (APART_GAP, CONTACT, COLORS, MIN_GAP, OPPOSITE, SHAPE_GROUPS,
                                                   SHAPES, SIZE, SIZE_RANGE, SPATIAL, SPATIAL_MIN_OFFSET, TEXTURES,
                                                   Obj, Scene, gap_at_least, in_bounds, scene_graph, spatial_holds,
                                                   touching)
from vseam.calibrate.datasets.shapes.priors import Priors, priors_for
from vseam.core.vocab import SUBTYPES

#: test2: a second held-out split drawn like test, for the demo's claim after test had been looked at twice
#: (docs/claim-third-look.md)
SPLIT_SEEDS = {"train": 11, "val": 17, "calib": 23, "test": 37, "test2": 41}
DEFAULT_SPLIT_SIZE = {"val": 700, "calib": 700, "test": 700, "test2": 700}
#: the splits that only ever score (never train, select or calibrate)
EVAL_SPLITS = ("test", "test2")

class _Retry(Exception):
    """The sampled layout cannot host the question or its counterfactual; draw again."""


def _rand_obj(rng: np.random.Generator, oid: str, shape: str, color: str | None = None, texture: str | None = None,
              s: int | None = None, priors: Priors | None = None) -> Obj:
    s = int(s if s is not None else rng.integers(SIZE_RANGE[0], SIZE_RANGE[1] + 1))
    if color is None and priors is not None:
        color = priors.color(rng, shape)
    return Obj(
        id=oid,
        shape=shape,
        color=color or str(rng.choice(list(COLORS))),
        texture=texture or str(rng.choice(TEXTURES)),
        x=int(rng.integers(1, SIZE - s)),
        y=int(rng.integers(1, SIZE - s)),
        s=s,
    )


def _fits(obj: Obj, others: Iterable[Obj], gap: int = MIN_GAP) -> bool:
    return in_bounds(obj) and all(gap_at_least(obj, o, gap) for o in others)


def _place(rng: np.random.Generator, obj: Obj, others: Sequence[Obj], reserved: Sequence[Obj] = (), tries: int = 40) -> Obj:
    """`obj` at a random free position (clear of `others` and of `reserved` layouts such as a counterfactual)."""
    for _ in range(tries):
        cand = obj.moved(rng.integers(1, SIZE - obj.s), rng.integers(1, SIZE - obj.s))
        if _fits(cand, list(others) + list(reserved)):
            return cand
    raise _Retry


def _fill(rng: np.random.Generator, placed: list[Obj], reserved: Sequence[Obj], exclude_shapes: set[str], n_total: int,
          priors: Priors | None = None) -> list[Obj]:
    """Add distractor objects (unused shape classes) until the scene holds n_total objects (with `priors`: the
    present shapes' partners first, then shapes by their training frequency)."""
    used = {o.shape for o in placed} | exclude_shapes
    pool = [s for s in SHAPES if s not in used]
    if priors is None:
        rng.shuffle(pool)
    else:
        pool = priors.fill_order(rng, pool, {o.shape for o in placed})
    out = list(placed)
    for shape in pool[: max(0, n_total - len(out))]:
        try:
            out.append(_place(rng, _rand_obj(rng, f"o{len(out)}", shape, priors=priors), out, reserved))
        except _Retry:
            break
    return out


@dataclasses.dataclass(frozen=True)
class Question:
    """A generated question with everything needed to rebuild its counterfactual."""

    subtype: str
    text: str
    answer: str  # yes / no
    full_answer: str
    targets: tuple[str, ...]  # object ids whose boxes the record carries (edited object first)
    edit: dict  # how to change the scene so the answer flips
    counterfactual: str  # the rewritten question (the paper's Table 6 convention)


def apply_edit(scene: Scene, edit: dict) -> Scene:
    """The scene with one change: {"object", "set": {field: value}} or {"object", "remove": true}."""
    if edit.get("remove"):
        return scene.without(edit["object"])
    obj = dataclasses.replace(scene.get(edit["object"]), **edit["set"])
    return scene.replace(obj)


def _attr_question(rng, subtype: str, yes: bool, n_total: int, priors: Priors | None = None) -> tuple[Scene, Question]:
    field, values = ("color", list(COLORS)) if subtype == "color" else ("texture", list(TEXTURES))
    target = _rand_obj(rng, "o0", str(rng.choice(SHAPES)), priors=priors)
    target = _place(rng, target, [])
    objs = _fill(rng, [target], [], set(), n_total, priors)
    actual = getattr(target, field)
    others = [getattr(o, field) for o in objs[1:] if getattr(o, field) != actual]
    if yes:
        asked = actual
        new = str(rng.choice([v for v in values if v != actual]))
        edit = {"object": target.id, "set": {field: new}}
        cf_word = new
    else:
        # in the training world, "no" colour questions name the typical colour as often as the scenes make it
        # wrong, so the question text carries no more of the prior than the scenes do
        asked = priors.asked_color(rng, target.shape, actual) if priors is not None and field == "color" else None
        # half of the other "no" questions name a value another object has, so the answer needs the right object
        if asked is None:
            asked = str(rng.choice(others)) if others and rng.random() < 0.5 else str(rng.choice([v for v in values if v != actual]))
        edit = {"object": target.id, "set": {field: asked}}
        cf_word = actual
    text = f"Is the {target.shape} {asked}?"
    full = f"The {target.shape} is {actual}." if yes else f"No, the {target.shape} is {actual}."
    q = Question(subtype, text, "yes" if yes else "no", full, (target.id,), edit, f"Is the {target.shape} {cf_word}?")
    return Scene(tuple(objs), int(rng.integers(2**31))), q


def _presence_question(rng, subtype: str, yes: bool, n_total: int, priors: Priors | None = None) -> tuple[Scene, Question]:
    asked, other = (str(s) for s in rng.permutation(SHAPE_GROUPS[subtype]))
    if yes:
        target = _place(rng, _rand_obj(rng, "o0", asked, priors=priors), [])
        objs = _fill(rng, [target], [], set(), n_total, priors)  # the group's other shape may or may not appear
        edit = {"object": target.id, "remove": True}
        full = f"Yes, there is a {asked} in this picture."
    else:
        target = _place(rng, _rand_obj(rng, "o0", other, priors=priors), [])  # same-group distractor: the region an edit changes
        objs = _fill(rng, [target], [], {asked}, n_total, priors)
        edit = {"object": target.id, "set": {"shape": asked}}
        full = f"No, there is a {other} in this picture."
    text = f"Is there a {asked} in this picture?"
    q = Question(subtype, text, "yes" if yes else "no", full, (target.id,), edit, f"Is there a {other} in this picture?")
    return Scene(tuple(objs), int(rng.integers(2**31))), q


def _spatial_question(rng, yes: bool, n_total: int, priors: Priors | None = None) -> tuple[Scene, Question]:
    relation = str(rng.choice(list(SPATIAL)))
    true_rel = relation if yes else OPPOSITE[relation]
    axis, sign = SPATIAL[true_rel]
    sa, sb = (str(s) for s in rng.choice(SHAPES, size=2, replace=False))
    b = _place(rng, _rand_obj(rng, "o1", sb, priors=priors), [])
    a = _rand_obj(rng, "o0", sa, priors=priors)
    off = np.zeros(2)
    off[axis] = sign * rng.integers(SPATIAL_MIN_OFFSET + 2, SPATIAL_MIN_OFFSET + 16)
    off[1 - axis] = rng.integers(-8, 9)
    c = np.asarray(b.center) + off
    a = a.moved(int(round(c[0] - a.s / 2)), int(round(c[1] - a.s / 2)))
    mc = 2 * np.asarray(b.center) - np.asarray(a.center)  # mirror A's center through B's center along the axis
    m = np.asarray(a.center, dtype=float)
    m[axis] = mc[axis]
    a_cf = a.moved(int(round(m[0] - a.s / 2)), int(round(m[1] - a.s / 2)))
    if not (_fits(a, [b]) and _fits(a_cf, [b])):
        raise _Retry
    if not (spatial_holds(a, b, true_rel) and spatial_holds(a_cf, b, OPPOSITE[true_rel])):
        raise _Retry
    objs = _fill(rng, [a, b], [a_cf], set(), n_total, priors)
    text = f"Is the {sa} {relation} the {sb}?"
    full = f"{'Yes, the' if yes else 'No, the'} {sa} is {true_rel} the {sb}."
    edit = {"object": a.id, "set": {"x": a_cf.x, "y": a_cf.y}}
    q = Question("spatial", text, "yes" if yes else "no", full, (a.id, b.id), edit, f"Is the {sa} {OPPOSITE[relation]} the {sb}?")
    return Scene(tuple(objs), int(rng.integers(2**31))), q


def _slide(a: Obj, b: Obj, direction: np.ndarray, start: float, stop: float, want_touch: bool) -> Obj | None:
    """Move A from B's center along `direction` (unit) and return the first position that touches B
    (want_touch) or that clears B by a gap in APART_GAP (not want_touch)."""
    bc = np.asarray(b.center)
    for t in np.arange(start, stop, 0.5):
        c = bc + t * direction
        cand = a.moved(int(round(c[0] - a.s / 2)), int(round(c[1] - a.s / 2)))
        if want_touch:
            if touching(cand, b):
                return cand
        elif gap_at_least(cand, b, APART_GAP[0]) and not gap_at_least(cand, b, APART_GAP[1]):
            return cand
    return None


def _contact_question(rng, yes: bool, n_total: int, priors: Priors | None = None) -> tuple[Scene, Question]:
    sa, sb = (str(s) for s in rng.choice(SHAPES, size=2, replace=False))
    b = _place(rng, _rand_obj(rng, "o1", sb, priors=priors), [])
    a = _rand_obj(rng, "o0", sa, priors=priors)
    ang = rng.uniform(0, 2 * np.pi)
    d = np.array([np.cos(ang), np.sin(ang)])
    touch = _slide(a, b, d, 2.0, 40.0, want_touch=True)
    if touch is None:
        raise _Retry
    t0 = float(np.hypot(*(np.asarray(touch.center) - np.asarray(b.center))))
    apart = _slide(a, b, d, t0 + 1.0, t0 + 20.0, want_touch=False)
    if apart is None:
        raise _Retry
    a, a_cf = (touch, apart) if yes else (apart, touch)
    if not (in_bounds(a) and in_bounds(a_cf)) or (touching(a, b) != yes) or (touching(a_cf, b) == yes):
        raise _Retry
    objs = _fill(rng, [a, b], [a_cf], set(), n_total, priors)
    text = f"Is the {sa} {CONTACT} the {sb}?"
    full = f"Yes, the {sa} is touching the {sb}." if yes else f"No, the {sa} is near the {sb}."
    edit = {"object": a.id, "set": {"x": a_cf.x, "y": a_cf.y}}
    q = Question("action", text, "yes" if yes else "no", full, (a.id, b.id), edit, f"Is the {sa} near the {sb}?")
    return Scene(tuple(objs), int(rng.integers(2**31))), q


def _check(scene: Scene, q: Question) -> None:
    """Every generated question must be answered by the scene graph, and its edit must flip that answer."""
    for variant, expect in ((scene, q.answer), (apply_edit(scene, q.edit), "no" if q.answer == "yes" else "yes")):
        got = answer_from_graph(scene_graph(variant), q.subtype, q.text)
        if got != expect:
            raise _Retry
    objs = list(scene.objects)
    for i, a in enumerate(objs):  # only the asked pair of a contact question may touch; nothing overlaps
        for b in objs[i + 1 :]:
            pair = {a.id, b.id} == set(q.targets) and q.subtype == "action"
            if not pair and not gap_at_least(a, b, MIN_GAP):
                raise _Retry
        if not in_bounds(a):
            raise _Retry


def generate(split: str, index: int, seed: int = 0, priors: Priors | None | str = "split") -> tuple[Scene, Question]:
    """Record `index` of a split: subtype cycles through SUBTYPES, the answer alternates yes/no per cycle.

    priors: "split" (default) draws the split with its own biases (`priors_for`: the training priors for "train",
    none for held-out splits); None draws without any (the first organism's uniform training world)."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown shapes split {split!r}; choose from {sorted(SPLIT_SEEDS)}")
    subtype = SUBTYPES[index % len(SUBTYPES)]
    yes = (index // len(SUBTYPES)) % 2 == 0
    rng = np.random.default_rng([SPLIT_SEEDS[split], seed, index])
    priors = priors_for(split) if priors == "split" else priors
    for _ in range(500):
        n_total = int(rng.integers(2, 5))
        try:
            if subtype in ("color", "material"):
                scene, q = _attr_question(rng, subtype, yes, n_total, priors)
            elif subtype in SHAPE_GROUPS:
                scene, q = _presence_question(rng, subtype, yes, n_total, priors)
            elif subtype == "spatial":
                scene, q = _spatial_question(rng, yes, n_total, priors)
            else:
                scene, q = _contact_question(rng, yes, n_total, priors)
            _check(scene, q)
            return scene, q
        except _Retry:
            continue
    raise RuntimeError(f"shapes: could not lay out {split}[{index}] ({subtype}) in 500 draws")
