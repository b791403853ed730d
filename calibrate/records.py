"""The record types every stage passes along: one VQA question (any dataset) and one edit triple (Eq 4).

Every dataset loader yields `VQARecord`s; editing turns a record into an `EditedPair`; triple selection keeps
the pairs that satisfy Eq 4 as `Triple`s. All three serialise to one JSON line each (JSONL manifests in run dirs).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from vseam.core.vocab import SUBTYPE_LEVEL


@dataclasses.dataclass(frozen=True)
class Box:
    """An axis-aligned region in pixel coordinates of the original image: top-left (x, y), width, height."""

    x: float
    y: float
    w: float
    h: float

    def xyxy(self) -> tuple[float, float, float, float]:
        return (self.x, self.y, self.x + self.w, self.y + self.h)

    @staticmethod
    def from_dict(d: dict) -> "Box":
        return Box(float(d["x"]), float(d["y"]), float(d["w"]), float(d["h"]))


@dataclasses.dataclass
class VQARecord:
    """One question about one image, from any dataset (GQA, V-SEAM subsets, POPE, COCO-QA, shapes).

    answer:   normalised lower-case answer ("yes"/"no" for binary questions; a word/phrase otherwise)
    image:    path of the image file (absolute, or relative to the dataset's images dir when `resolved` is False)
    subtype:  one of vseam.core.vocab.SUBTYPES for the V-SEAM tasks; COCO-QA's type (color/object/location/number)
              or POPE's split (random/popular/adversarial) for evaluation sets
    boxes:    the asked-about regions (what the edit may change), in original-image pixels
    scene:    optional scene-graph fragment for the objects involved (GQA-style objects dict)
    """

    qid: str
    dataset: str
    question: str
    answer: str
    image: str
    subtype: str | None = None
    boxes: list[Box] = dataclasses.field(default_factory=list)
    full_answer: str | None = None
    scene: dict | None = None
    meta: dict = dataclasses.field(default_factory=dict)

    @property
    def level(self) -> str | None:
        """attribute / object / relation for the seven V-SEAM subtypes, else None."""
        return SUBTYPE_LEVEL.get(self.subtype or "")

    @property
    def is_binary(self) -> bool:
        return self.answer in ("yes", "no")

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["level"] = self.level
        return d

    @staticmethod
    def from_json(d: dict) -> "VQARecord":
        d = {k: v for k, v in d.items() if k != "level"}
        d["boxes"] = [Box(**b) if isinstance(b, dict) else b for b in d.get("boxes", [])]
        return VQARecord(**d)


class _Wraps:
    """JSON of a dataclass whose field `_WRAPPED[0]` holds a `_WRAPPED[1]`, written with that type's own JSON."""

    _WRAPPED: tuple[str, type]  # (field name, type); set by each subclass (a class attribute, not a field)

    def to_json(self) -> dict:
        field, _ = self._WRAPPED
        d = dataclasses.asdict(self)
        d[field] = getattr(self, field).to_json()
        return d

    @classmethod
    def from_json(cls, d: dict):
        field, kind = cls._WRAPPED
        d = dict(d)
        d[field] = kind.from_json(d[field])
        return cls(**d)


@dataclasses.dataclass
class EditedPair(_Wraps):
    """A record with its counterfactual question and the locally edited image (before the Eq 4 filter)."""

    record: VQARecord
    counterfactual: str  # the rewritten question that guided the edit
    clean_image: str  # path
    edited_image: str  # path
    mask: str | None = None  # path of the binary mask PNG actually edited
    editor: str = ""  # recolor / remove / mirror / diffusion / render (exact re-render, shapes world)
    quality: dict[str, Any] = dataclasses.field(default_factory=dict)

    _WRAPPED = ("record", VQARecord)


@dataclasses.dataclass
class Triple(_Wraps):
    """An (x, z, z̃, y) triple kept by Eq 4: the model answers y on the clean image and not on the edited one."""

    pair: EditedPair
    p_clean: float  # P(y | x, z)
    p_edited: float  # P(y | x, z̃)
    pred_clean: str
    pred_edited: str

    _WRAPPED = ("pair", EditedPair)

    @property
    def record(self) -> VQARecord:
        return self.pair.record


def write_jsonl(path, items) -> None:
    with open(path, "w") as fh:
        for it in items:
            fh.write(json.dumps(it.to_json() if hasattr(it, "to_json") else it, sort_keys=True) + "\n")


def read_jsonl(path, kind=None) -> list:
    out = []
    with open(path) as fh:
        for line in fh:
            if line.strip():
                d = json.loads(line)
                out.append(kind.from_json(d) if kind else d)
    return out


def load_image(path: str, what: str = "image"):
    """The RGB image at `path`; an unreadable file is a user error naming `what` (the item it belongs to)."""
    from PIL import Image

    from vseam.core.errors import UserError

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, ValueError) as e:
        raise UserError(f"{what}: cannot read image {path} ({e})") from None

