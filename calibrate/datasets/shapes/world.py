"""The `shapes` world itself: the vocabulary, objects and scenes, their geometry, the renderer and the scene graph.

Rendering is deterministic: the same scene gives the same bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from functools import lru_cache
from typing import Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

from vseam.calibrate.records import Box

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


def grow_mask(mask: np.ndarray, r: int) -> np.ndarray:
    """The mask grown by `r` pixels (8-neighbourhood steps)."""
    if r <= 0:
        return mask
    return ndimage.binary_dilation(mask, structure=np.ones((3, 3), bool), iterations=r)


def gap_at_least(a: Obj, b: Obj, gap: int) -> bool:
    """True when at least `gap` background pixels separate the two masks (Chebyshev distance > gap)."""
    return not (grow_mask(object_mask(a), gap) & object_mask(b)).any()


def touching(a: Obj, b: Obj) -> bool:
    """Contact: the masks do not overlap but some pixels of the two are 8-neighbours."""
    ma, mb = object_mask(a), object_mask(b)
    return not (ma & mb).any() and bool((grow_mask(ma, 1) & mb).any())


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
