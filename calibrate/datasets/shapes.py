"""The `shapes` world: synthetic scenes with a known scene graph, binary questions for the 7 V-SEAM subtypes, and
exact counterfactual images (the same scene re-rendered with one change).

A scene is a 64×64 picture of 2-4 flat shapes on a lightly noisy gray background. Each object has

* a shape class (the "object" vocabulary), grouped three ways so the object-presence subtypes of the paper
  (animal / vehicle / indoor) map onto shape groups: round (circle, ring), angular (square, diamond),
  pointed (triangle, star);
* a color (red, green, blue, yellow, purple, orange) and
* a surface pattern standing in for "material" (plain, striped, dotted, checkered).

Question templates (one per subtype, Table 9 of the paper mapped onto this world):

========  =========================================================  ==========================
subtype   question                                                    edit that flips the answer
========  =========================================================  ==========================
color     Is the square red?                                          recolor the square
material  Is the square striped?                                      re-pattern the square
animal    Is there a circle in this picture?  (round group)           remove it / turn the other
vehicle   Is there a square in this picture?  (angular group)         round shape into it
indoor    Is there a star in this picture?    (pointed group)
spatial   Is the circle to the left of / right of / above / below    mirror the circle about the
          the square?                                                 square's center
action    Is the circle touching the square?                          pull apart / push together
========  =========================================================  ==========================

Every record is generated from (split, seed, index) alone, so any record, its image and its counterfactual can be
re-created bit-for-bit. Answers are exactly balanced (yes for even rounds, no for odd) and subtypes cycle.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
from functools import lru_cache
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

from calibrate.datasets import LoadResult, register_dataset
from calibrate.records import Box, EditedPair, VQARecord
from head_profiles import SUBTYPES
from vseam.errors import UserError

DATASET = "shapes"
#: bumped whenever rendering or question generation changes (part of the image cache key)
WORLD_VERSION = 1
SIZE = 64

SHAPE_GROUPS: dict[str, tuple[str, ...]] = {
    "animal": ("circle", "ring"),
    "vehicle": ("square", "diamond"),
    "indoor": ("triangle", "star"),
}
SHAPES: tuple[str, ...] = tuple(s for group in SHAPE_GROUPS.values() for s in group)
GROUP_OF: dict[str, str] = {s: g for g, group in SHAPE_GROUPS.items() for s in group}
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 160, 60),
    "blue": (45, 85, 215),
    "yellow": (235, 205, 35),
    "purple": (140, 60, 185),
    "orange": (240, 130, 20),
}
TEXTURES: tuple[str, ...] = ("plain", "striped", "dotted", "checkered")
#: spatial relation word in questions -> (axis, sign): axis 0 = x, 1 = y; sign of (A - B) along that axis
SPATIAL: dict[str, tuple[int, int]] = {
    "to the left of": (0, -1),
    "to the right of": (0, +1),
    "above": (1, -1),
    "below": (1, +1),
}
OPPOSITE = {"to the left of": "to the right of", "to the right of": "to the left of", "above": "below", "below": "above"}
CONTACT = "touching"

#: box-center distance along an axis from which a spatial relation holds (and below which none is stated)
SPATIAL_MIN_OFFSET = 12
#: clear separation between objects that should not touch (pixels between masks)
MIN_GAP = 3
#: separation of "not touching" pairs in contact questions
APART_GAP = (5, 11)
SIZE_RANGE = (15, 22)
BACKGROUND = 200
NOISE = 5
DARK = 0.45

SPLIT_SEEDS = {"train": 11, "val": 17, "calib": 23, "test": 37}
DEFAULT_SPLIT_SIZE = {"val": 700, "calib": 700, "test": 700}


# --------------------------------------------------------------------------------------------------------------
# scenes


@dataclasses.dataclass(frozen=True)
class Obj:
    """One shape: class, color, pattern, and its s×s frame at top-left (x, y) in image pixels."""

    id: str
    shape: str
    color: str
    texture: str
    x: int
    y: int
    s: int

    @property
    def center(self) -> tuple[float, float]:
        return (self.x + self.s / 2.0, self.y + self.s / 2.0)

    def moved(self, x: int, y: int) -> "Obj":
        return dataclasses.replace(self, x=int(x), y=int(y))


@dataclasses.dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]
    noise_seed: int
    size: int = SIZE

    def get(self, oid: str) -> Obj:
        for o in self.objects:
            if o.id == oid:
                return o
        raise KeyError(f"scene has no object {oid!r}")

    def by_shape(self, shape: str) -> Obj | None:
        return next((o for o in self.objects if o.shape == shape), None)

    def replace(self, obj: Obj) -> "Scene":
        return dataclasses.replace(self, objects=tuple(obj if o.id == obj.id else o for o in self.objects))

    def without(self, oid: str) -> "Scene":
        return dataclasses.replace(self, objects=tuple(o for o in self.objects if o.id != oid))

    def to_json(self) -> dict:
        return {"size": self.size, "noise_seed": self.noise_seed, "objects": [dataclasses.asdict(o) for o in self.objects]}

    @staticmethod
    def from_json(d: dict) -> "Scene":
        return Scene(tuple(Obj(**o) for o in d["objects"]), int(d["noise_seed"]), int(d.get("size", SIZE)))


# ---- geometry ------------------------------------------------------------------------------------------------


def _polygon(points: Sequence[tuple[float, float]]):
    from matplotlib.path import Path

    return Path(np.asarray(points, dtype=np.float64))


def _star_points(n: int = 5, outer: float = 1.0, inner: float = 0.45) -> list[tuple[float, float]]:
    pts = []
    for k in range(2 * n):
        r = outer if k % 2 == 0 else inner
        a = -np.pi / 2 + k * np.pi / n
        pts.append((r * np.cos(a), r * np.sin(a) + 0.08))
    return pts


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Point-in-shape for coordinates u (right), v (down) in [-1, 1]."""
    r2 = u * u + v * v
    if shape == "circle":
        return r2 <= 0.97**2
    if shape == "ring":
        return (r2 <= 0.99**2) & (r2 >= 0.52**2)
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.82
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    if shape == "triangle":
        poly = _polygon([(0.0, -0.97), (0.97, 0.82), (-0.97, 0.82)])
    elif shape == "star":
        poly = _polygon(_star_points())
    else:
        raise ValueError(f"unknown shape {shape!r}; shapes are {list(SHAPES)}")
    pts = np.stack([u.ravel(), v.ravel()], axis=1)
    return poly.contains_points(pts).reshape(u.shape)


@lru_cache(maxsize=None)
def shape_mask(shape: str, s: int) -> np.ndarray:
    """Boolean s×s mask of a shape class (4×4 supersampling, a pixel is in when half of it is covered)."""
    k = 4
    c = (np.arange(s * k) + 0.5) / (s * k) * 2.0 - 1.0
    inside = _inside(shape, c[None, :].repeat(s * k, 0), c[:, None].repeat(s * k, 1))
    m = inside.reshape(s, k, s, k).mean(axis=(1, 3)) >= 0.5
    m.setflags(write=False)
    return m


@lru_cache(maxsize=None)
def texture_dark(texture: str, s: int) -> np.ndarray:
    """Boolean s×s map of the darker pixels of a pattern, in the object's own frame (so it moves with it)."""
    i, j = np.mgrid[0:s, 0:s]
    if texture == "plain":
        d = np.zeros((s, s), bool)
    elif texture == "striped":
        d = (i // 2) % 2 == 1
    elif texture == "dotted":
        d = (i % 5 >= 2) & (i % 5 <= 3) & (j % 5 >= 2) & (j % 5 <= 3)
    elif texture == "checkered":
        d = (i // 3 + j // 3) % 2 == 1
    else:
        raise ValueError(f"unknown texture {texture!r}; textures are {list(TEXTURES)}")
    d.setflags(write=False)
    return d


def object_mask(obj: Obj, size: int = SIZE) -> np.ndarray:
    """The object's pixels in a size×size image (clipped at the border)."""
    out = np.zeros((size, size), bool)
    m = shape_mask(obj.shape, obj.s)
    y0, x0 = max(obj.y, 0), max(obj.x, 0)
    y1, x1 = min(obj.y + obj.s, size), min(obj.x + obj.s, size)
    if y1 > y0 and x1 > x0:
        out[y0:y1, x0:x1] = m[y0 - obj.y : y1 - obj.y, x0 - obj.x : x1 - obj.x]
    return out


def object_box(obj: Obj) -> Box:
    """Tight pixel box of the object's mask (what a detector/annotator would draw)."""
    m = shape_mask(obj.shape, obj.s)
    rows, cols = np.where(m.any(1))[0], np.where(m.any(0))[0]
    return Box(float(obj.x + cols[0]), float(obj.y + rows[0]), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1))


def in_bounds(obj: Obj, size: int = SIZE, margin: int = 1) -> bool:
    return obj.x >= margin and obj.y >= margin and obj.x + obj.s <= size - margin and obj.y + obj.s <= size - margin


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    if r <= 0:
        return mask
    return ndimage.binary_dilation(mask, structure=np.ones((3, 3), bool), iterations=r)


def gap_at_least(a: Obj, b: Obj, gap: int) -> bool:
    """True when at least `gap` background pixels separate the two masks (Chebyshev distance > gap)."""
    return not (_dilate(object_mask(a), gap) & object_mask(b)).any()


def touching(a: Obj, b: Obj) -> bool:
    """Contact: the masks do not overlap but some pixels of the two are 8-neighbours."""
    ma, mb = object_mask(a), object_mask(b)
    return not (ma & mb).any() and bool((_dilate(ma, 1) & mb).any())


def spatial_holds(a: Obj, b: Obj, relation: str) -> bool:
    axis, sign = SPATIAL[relation]
    d = a.center[axis] - b.center[axis]
    return sign * d >= SPATIAL_MIN_OFFSET


# ---- rendering -----------------------------------------------------------------------------------------------


def render(scene: Scene) -> np.ndarray:
    """The scene as an H×W×3 uint8 array (deterministic: same scene, same bytes)."""
    rng = np.random.default_rng(scene.noise_seed)
    img = BACKGROUND + rng.integers(-NOISE, NOISE + 1, size=(scene.size, scene.size, 1))
    img = np.repeat(img, 3, axis=2).astype(np.float64)
    for obj in scene.objects:
        m = shape_mask(obj.shape, obj.s)
        dark = texture_dark(obj.texture, obj.s)
        base = np.asarray(COLORS[obj.color], np.float64)
        patch = np.where(dark[..., None], base * DARK, base)
        y0, x0 = max(obj.y, 0), max(obj.x, 0)
        y1, x1 = min(obj.y + obj.s, scene.size), min(obj.x + obj.s, scene.size)
        sub_m = m[y0 - obj.y : y1 - obj.y, x0 - obj.x : x1 - obj.x]
        sub_p = patch[y0 - obj.y : y1 - obj.y, x0 - obj.x : x1 - obj.x]
        region = img[y0:y1, x0:x1]
        region[sub_m] = sub_p[sub_m]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def render_image(scene: Scene) -> Image.Image:
    return Image.fromarray(render(scene), "RGB")


def scene_graph(scene: Scene) -> dict:
    """GQA-style scene graph: objects keyed by id with name, tight box, attributes [color, pattern], relations."""
    objs = {}
    for a in scene.objects:
        rels = []
        for b in scene.objects:
            if b.id == a.id:
                continue
            for rel in SPATIAL:
                if spatial_holds(a, b, rel):
                    rels.append({"object": b.id, "name": rel})
            if touching(a, b):
                rels.append({"object": b.id, "name": CONTACT})
        box = object_box(a)
        objs[a.id] = {
            "name": a.shape,
            "x": int(box.x),
            "y": int(box.y),
            "w": int(box.w),
            "h": int(box.h),
            "attributes": [a.color, a.texture],
            "relations": rels,
        }
    return {"width": scene.size, "height": scene.size, "objects": objs}


# --------------------------------------------------------------------------------------------------------------
# sampling scenes and questions


class _Retry(Exception):
    """The sampled layout cannot host the question or its counterfactual; draw again."""


def _rand_obj(rng: np.random.Generator, oid: str, shape: str, color: str | None = None, texture: str | None = None, s: int | None = None) -> Obj:
    s = int(s if s is not None else rng.integers(SIZE_RANGE[0], SIZE_RANGE[1] + 1))
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


def _fill(rng: np.random.Generator, placed: list[Obj], reserved: Sequence[Obj], exclude_shapes: set[str], n_total: int) -> list[Obj]:
    """Add distractor objects (unused shape classes) until the scene holds n_total objects."""
    used = {o.shape for o in placed} | exclude_shapes
    pool = [s for s in SHAPES if s not in used]
    rng.shuffle(pool)
    out = list(placed)
    for shape in pool[: max(0, n_total - len(out))]:
        try:
            out.append(_place(rng, _rand_obj(rng, f"o{len(out)}", shape), out, reserved))
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


def _attr_question(rng, subtype: str, yes: bool, n_total: int) -> tuple[Scene, Question]:
    field, values = ("color", list(COLORS)) if subtype == "color" else ("texture", list(TEXTURES))
    target = _rand_obj(rng, "o0", str(rng.choice(SHAPES)))
    target = _place(rng, target, [])
    objs = _fill(rng, [target], [], set(), n_total)
    actual = getattr(target, field)
    others = [getattr(o, field) for o in objs[1:] if getattr(o, field) != actual]
    if yes:
        asked = actual
        new = str(rng.choice([v for v in values if v != actual]))
        edit = {"object": target.id, "set": {field: new}}
        cf_word = new
    else:
        # half of the "no" questions name a value another object has, so the answer needs the right object
        asked = str(rng.choice(others)) if others and rng.random() < 0.5 else str(rng.choice([v for v in values if v != actual]))
        edit = {"object": target.id, "set": {field: asked}}
        cf_word = actual
    text = f"Is the {target.shape} {asked}?"
    full = f"The {target.shape} is {actual}." if yes else f"No, the {target.shape} is {actual}."
    q = Question(subtype, text, "yes" if yes else "no", full, (target.id,), edit, f"Is the {target.shape} {cf_word}?")
    return Scene(tuple(objs), int(rng.integers(2**31))), q


def _presence_question(rng, subtype: str, yes: bool, n_total: int) -> tuple[Scene, Question]:
    asked, other = (str(s) for s in rng.permutation(SHAPE_GROUPS[subtype]))
    if yes:
        target = _place(rng, _rand_obj(rng, "o0", asked), [])
        objs = _fill(rng, [target], [], set(), n_total)  # the group's other shape may or may not appear
        edit = {"object": target.id, "remove": True}
        full = f"Yes, there is a {asked} in this picture."
    else:
        target = _place(rng, _rand_obj(rng, "o0", other), [])  # same-group distractor: the region an edit changes
        objs = _fill(rng, [target], [], {asked}, n_total)
        edit = {"object": target.id, "set": {"shape": asked}}
        full = f"No, there is a {other} in this picture."
    text = f"Is there a {asked} in this picture?"
    q = Question(subtype, text, "yes" if yes else "no", full, (target.id,), edit, f"Is there a {other} in this picture?")
    return Scene(tuple(objs), int(rng.integers(2**31))), q


def _spatial_question(rng, yes: bool, n_total: int) -> tuple[Scene, Question]:
    relation = str(rng.choice(list(SPATIAL)))
    true_rel = relation if yes else OPPOSITE[relation]
    axis, sign = SPATIAL[true_rel]
    sa, sb = (str(s) for s in rng.choice(SHAPES, size=2, replace=False))
    b = _place(rng, _rand_obj(rng, "o1", sb), [])
    a = _rand_obj(rng, "o0", sa)
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
    objs = _fill(rng, [a, b], [a_cf], set(), n_total)
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


def _contact_question(rng, yes: bool, n_total: int) -> tuple[Scene, Question]:
    sa, sb = (str(s) for s in rng.choice(SHAPES, size=2, replace=False))
    b = _place(rng, _rand_obj(rng, "o1", sb), [])
    a = _rand_obj(rng, "o0", sa)
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
    objs = _fill(rng, [a, b], [a_cf], set(), n_total)
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


def generate(split: str, index: int, seed: int = 0) -> tuple[Scene, Question]:
    """Record `index` of a split: subtype cycles through SUBTYPES, the answer alternates yes/no per cycle."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown shapes split {split!r}; choose from {sorted(SPLIT_SEEDS)}")
    subtype = SUBTYPES[index % len(SUBTYPES)]
    yes = (index // len(SUBTYPES)) % 2 == 0
    rng = np.random.default_rng([SPLIT_SEEDS[split], seed, index])
    for _ in range(500):
        n_total = int(rng.integers(2, 5))
        try:
            if subtype in ("color", "material"):
                scene, q = _attr_question(rng, subtype, yes, n_total)
            elif subtype in SHAPE_GROUPS:
                scene, q = _presence_question(rng, subtype, yes, n_total)
            elif subtype == "spatial":
                scene, q = _spatial_question(rng, yes, n_total)
            else:
                scene, q = _contact_question(rng, yes, n_total)
            _check(scene, q)
            return scene, q
        except _Retry:
            continue
    raise RuntimeError(f"shapes: could not lay out {split}[{index}] ({subtype}) in 500 draws")


# --------------------------------------------------------------------------------------------------------------
# answering from a scene graph (the ground truth the generator is checked against)


def _parse(text: str) -> tuple[str, ...]:
    t = text.strip().rstrip("?")
    if t.startswith("Is there a ") and t.endswith(" in this picture"):
        return ("presence", t[len("Is there a ") : -len(" in this picture")])
    if not t.startswith("Is the "):
        raise ValueError(f"not a shapes question: {text!r}")
    words = t[len("Is the ") :]
    subject, rest = words.split(" ", 1)
    if rest in COLORS or rest in TEXTURES:
        return ("attr", subject, rest)
    for rel in list(SPATIAL) + [CONTACT]:
        if rest.startswith(rel + " the "):
            return ("rel", subject, rel, rest[len(rel + " the ") :])
    raise ValueError(f"not a shapes question: {text!r}")


def answer_from_graph(graph: dict, subtype: str | None, text: str) -> str:
    """yes/no for a shapes question, read off a GQA-style scene graph (objects are referred to by name)."""
    objs = graph["objects"]
    by_name = {o["name"]: (oid, o) for oid, o in objs.items()}
    p = _parse(text)
    if p[0] == "presence":
        return "yes" if p[1] in by_name else "no"
    if p[1] not in by_name:
        raise ValueError(f"question {text!r} names a {p[1]} the scene does not contain")
    _, subj = by_name[p[1]]
    if p[0] == "attr":
        return "yes" if p[2] in subj["attributes"] else "no"
    other = by_name.get(p[3])
    if other is None:
        raise ValueError(f"question {text!r} names a {p[3]} the scene does not contain")
    return "yes" if any(r["object"] == other[0] and r["name"] == p[2] for r in subj["relations"]) else "no"


def all_questions(scene: Scene) -> list[tuple[str, str, str]]:
    """Every (subtype, question, answer) this world's templates can ask about `scene` with a definite answer.

    Spatial questions are asked only about pairs where the relation or its opposite holds (no ambiguous pairs).
    Used to get many questions out of one rendered training image.
    """
    out = []
    for o in scene.objects:
        for c in COLORS:
            out.append(("color", f"Is the {o.shape} {c}?", "yes" if c == o.color else "no"))
        for t in TEXTURES:
            out.append(("material", f"Is the {o.shape} {t}?", "yes" if t == o.texture else "no"))
    present = {o.shape for o in scene.objects}
    for s in SHAPES:
        out.append((GROUP_OF[s], f"Is there a {s} in this picture?", "yes" if s in present else "no"))
    for a in scene.objects:
        for b in scene.objects:
            if a.id == b.id:
                continue
            for rel in SPATIAL:
                if spatial_holds(a, b, rel):
                    out.append(("spatial", f"Is the {a.shape} {rel} the {b.shape}?", "yes"))
                elif spatial_holds(a, b, OPPOSITE[rel]):
                    out.append(("spatial", f"Is the {a.shape} {rel} the {b.shape}?", "no"))
            out.append(("action", f"Is the {a.shape} {CONTACT} the {b.shape}?", "yes" if touching(a, b) else "no"))
    return out


# --------------------------------------------------------------------------------------------------------------
# records, images on disk, exact counterfactuals


def default_images_dir() -> pathlib.Path:
    root = os.environ.get("VSEAM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "vseam")
    return pathlib.Path(root) / "shapes"


def qid_of(split: str, seed: int, index: int) -> str:
    return f"shapes-{split}-s{seed}-{index:06d}"


def make_record(split: str, index: int, seed: int = 0, images_dir: str | pathlib.Path | None = None, write: bool = True) -> VQARecord:
    """One `VQARecord` (image written to `images_dir`/<split>-s<seed>/<qid>.png unless it is already there)."""
    scene, q = generate(split, index, seed)
    qid = qid_of(split, seed, index)
    folder = pathlib.Path(images_dir or default_images_dir()) / f"v{WORLD_VERSION}" / f"{split}-s{seed}"
    path = folder / f"{qid}.png"
    if write and not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.png")
        render_image(scene).save(tmp)
        os.replace(tmp, path)
    graph = scene_graph(scene)
    return VQARecord(
        qid=qid,
        dataset=DATASET,
        question=q.text,
        answer=q.answer,
        image=str(path.resolve()),
        subtype=q.subtype,
        boxes=[object_box(scene.get(t)) for t in q.targets],
        full_answer=q.full_answer,
        scene=graph,
        meta={
            "split": split,
            "index": index,
            "seed": seed,
            "world_version": WORLD_VERSION,
            "targets": list(q.targets),
            "scene_spec": scene.to_json(),
            "edit": q.edit,
            "counterfactual": q.counterfactual,
        },
    )


def load_shapes(
    split: str = "calib",
    limit: int | None = None,
    seed: int = 0,
    images: str | pathlib.Path | None = None,
    subtypes: Sequence[str] | None = None,
    fraction: float | None = None,
    start: int = 0,
    **_ignored: Any,
) -> list[VQARecord]:
    """Records of a split. `limit` (default: DEFAULT_SPLIT_SIZE, 700 = 100 per subtype) counts records after the
    subtype filter; `fraction` keeps that share of them (a seeded subset); images go to `images` or the cache."""
    if subtypes:
        bad = [s for s in subtypes if s not in SUBTYPES]
        if bad:
            raise ValueError(f"shapes: unknown subtype(s) {bad}; choose from {list(SUBTYPES)}")
    n = int(limit) if limit is not None else DEFAULT_SPLIT_SIZE.get(split, 700)
    wanted = set(subtypes or SUBTYPES)
    per_cycle = sum(1 for s in SUBTYPES if s in wanted)
    records, i = [], start
    while len(records) < n:
        if SUBTYPES[i % len(SUBTYPES)] in wanted:
            records.append(make_record(split, i, seed, images))
        i += 1
        if per_cycle == 0:
            break
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise ValueError(f"shapes: --fraction must be in (0, 1], got {fraction}")
        rng = np.random.default_rng([seed, 7919])
        keep = sorted(rng.choice(len(records), size=max(1, int(round(fraction * len(records)))), replace=False))
        records = [records[k] for k in keep]
    return records


@register_dataset(DATASET)
def load_shapes_dataset(
    path: str | None = None,
    *,
    images: str | pathlib.Path | None = None,
    split: str | None = None,
    size: int | str | None = None,
    world_seed: int | str = 0,
) -> LoadResult:
    """`--dataset shapes`: a split of the synthetic world, rendered into `images` (default: the vseam cache).

    path (`--data`):  the split name — calib (default; for calibration), test (held out: evaluation and the
                      model card), val (checkpoint selection while training) or train
    split:            the same, as a `--dataset-option split=...`
    size:             records generated for the split (default 700 = 100 per subtype; the shared --limit /
                      --fraction / --subtypes options then select from them)
    world_seed:       generator seed (a different world sample with the same vocabulary)
    """
    name = split or (str(path) if path is not None else "calib")
    name = pathlib.Path(name).name if name not in SPLIT_SEEDS else name
    if name not in SPLIT_SEEDS:
        raise UserError(f"shapes: --data/split must be one of {', '.join(SPLIT_SEEDS)} (the world's splits), got {path or split!r}")
    try:
        n = int(size) if size is not None else DEFAULT_SPLIT_SIZE.get(name, 700)
        seed = int(world_seed)
    except ValueError as e:
        raise UserError(f"shapes: size and world_seed must be integers ({e})") from None
    records = [make_record(name, i, seed, images) for i in range(n)]
    return LoadResult(records=records, source=f"shapes ({name}, {n} records, world v{WORLD_VERSION}, seed {seed})")


def scene_of(record: VQARecord) -> Scene:
    spec = (record.meta or {}).get("scene_spec")
    if spec is None:
        raise ValueError(f"record {record.qid}: not a shapes record (meta.scene_spec missing)")
    return Scene.from_json(spec)


@dataclasses.dataclass
class Counterfactual:
    """The exact edit of a record: the scene re-rendered with the one change that flips the answer."""

    question: str  # counterfactual question (the semantic unit swapped)
    answer: str  # answer of the ORIGINAL question on the edited image
    image: Image.Image
    scene: Scene
    graph: dict
    changed: np.ndarray  # H×W bool: pixels that differ from the clean render
    edit: dict


def counterfactual(record: VQARecord) -> Counterfactual:
    scene = scene_of(record)
    edit = record.meta["edit"]
    edited = apply_edit(scene, edit)
    clean, cf = render(scene), render(edited)
    graph = scene_graph(edited)
    return Counterfactual(
        question=record.meta["counterfactual"],
        answer=answer_from_graph(graph, record.subtype, record.question),
        image=Image.fromarray(cf, "RGB"),
        scene=edited,
        graph=graph,
        changed=(clean != cf).any(axis=2),
        edit=edit,
    )


def exact_pair(record: VQARecord, out_dir: str | pathlib.Path) -> EditedPair:
    """An `EditedPair` whose edited image is the exact re-render (editor "render"), written under `out_dir`."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cf = counterfactual(record)
    img_path, mask_path = out / f"{record.qid}.edited.png", out / f"{record.qid}.mask.png"
    cf.image.save(img_path)
    Image.fromarray(cf.changed.astype(np.uint8) * 255, "L").save(mask_path)
    return EditedPair(
        record=record,
        counterfactual=cf.question,
        clean_image=record.image,
        edited_image=str(img_path.resolve()),
        mask=str(mask_path.resolve()),
        editor="render",
        quality={"changed_pixels": int(cf.changed.sum())},
    )


def compare_edit(record: VQARecord, edited: Image.Image | np.ndarray | str, tol: int = 24) -> dict:
    """How close an edit (e.g. stage 1's SAM mask + editor) comes to the exact counterfactual of `record`.

    changed_iou:       IoU of the pixel sets each edit changed (a pixel is changed when a channel moves > tol)
    pixel_agreement:   share of all pixels within tol of the exact edited image
    region_agreement:  the same share inside the exact edit's changed region
    outside_changed:   share of pixels outside the exact changed region that the edit altered
    """
    if isinstance(edited, (str, pathlib.Path)):
        edited = Image.open(edited)
    e = np.asarray(edited.convert("RGB") if isinstance(edited, Image.Image) else edited).astype(np.int16)
    clean = render(scene_of(record)).astype(np.int16)
    if e.shape != clean.shape:
        raise ValueError(f"record {record.qid}: edited image is {e.shape[1]}×{e.shape[0]}, the scene is {clean.shape[1]}×{clean.shape[0]}")
    cf = counterfactual(record)
    exact = np.asarray(cf.image).astype(np.int16)
    theirs = (np.abs(e - clean) > tol).any(axis=2)
    ours = (np.abs(exact - clean) > tol).any(axis=2)
    union = (theirs | ours).sum()
    agree = (np.abs(e - exact) <= tol).all(axis=2)
    return {
        "changed_iou": float((theirs & ours).sum() / union) if union else 1.0,
        "pixel_agreement": float(agree.mean()),
        "region_agreement": float(agree[ours].mean()) if ours.any() else 1.0,
        "outside_changed": float(theirs[~ours].mean()),
    }


def world_description() -> dict:
    """The vocabulary of the world (for model cards and reports)."""
    return {
        "version": WORLD_VERSION,
        "size": SIZE,
        "shape_groups": {g: list(v) for g, v in SHAPE_GROUPS.items()},
        "colors": list(COLORS),
        "textures": list(TEXTURES),
        "relations": list(SPATIAL) + [CONTACT],
    }


def fingerprint() -> str:
    """A short hash of the world's definition (changes when any vocabulary or rendering constant changes)."""
    blob = json.dumps([world_description(), SPATIAL_MIN_OFFSET, MIN_GAP, APART_GAP, SIZE_RANGE, BACKGROUND, NOISE, DARK, COLORS])
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
