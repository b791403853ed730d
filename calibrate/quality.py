"""Automatic quality gate for edited images (stands in for the paper's manual inspection of each edit).

An edit passes when all three hold:

1. ``outside``: pixels outside the editor's dilated region are unchanged (editors paste the original back, so
   anything else is a bug or a foreign edit; a tolerance exists for lossy inputs);
2. ``weak``:    the region itself really changed (mean absolute change and share of changed pixels);
3. ``drift``:   the model's own vision-tower feature of the edited image stays close to the clean one — cosine
   similarity of `family.vision_embedding` (the measure of the paper's Table 10, where local semantic edits score
   about 0.92 and Gaussian noise of intensity 30 about 0.63) at least `min_cosine`.

`assess` returns every failed check with its metrics, so rejections can be counted by reason.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
from PIL import Image

#: reason codes -> what they mean (used in manifests and summaries)
REASONS = {
    "outside": "changed pixels outside the dilated edit region",
    "weak": "the edit region barely changed",
    "drift": "vision features of the edited image drifted from the clean image",
}


@dataclasses.dataclass
class Thresholds:
    outside_tolerance: int = 0  # per-channel |difference| still counted as unchanged outside the region
    max_outside_fraction: float = 0.0  # share of outside pixels allowed to differ by more than that
    change_tolerance: int = 12  # a region pixel counts as changed when a channel moves by more than this
    min_changed_fraction: float = 0.25  # share of region pixels that must change
    min_mean_change: float = 0.04  # mean |difference| / 255 over the region
    min_cosine: float = 0.85  # vision-feature cosine similarity clean vs edited

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class QualityReport:
    passed: bool
    reasons: list[str]
    metrics: dict[str, Any]

    def to_json(self) -> dict:
        return {"passed": self.passed, "reasons": list(self.reasons), **self.metrics}


def _arr(image: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.int16)
    return np.asarray(image, dtype=np.int16)


def pixel_metrics(clean, edited, allowed: np.ndarray, region: np.ndarray, th: Thresholds) -> dict[str, float]:
    """Outside-change share, region change share and mean region change of an edit."""
    a, b = _arr(clean), _arr(edited)
    if a.shape != b.shape:
        raise ValueError(f"edited image is {b.shape[1]}x{b.shape[0]}, clean image is {a.shape[1]}x{a.shape[0]}")
    diff = np.abs(a - b).max(axis=-1)
    outside = ~allowed.astype(bool)
    region = region.astype(bool)
    n_out, n_reg = int(outside.sum()), int(region.sum())
    return {
        "outside_changed": float((diff[outside] > th.outside_tolerance).sum() / n_out) if n_out else 0.0,
        "outside_max_diff": int(diff[outside].max()) if n_out else 0,
        "region_changed": float((diff[region] > th.change_tolerance).mean()) if n_reg else 0.0,
        "region_mean_change": float(np.abs(a - b)[region].mean() / 255.0) if n_reg else 0.0,
        "region_pixels": n_reg,
    }


def assess(
    clean,
    edited,
    allowed: np.ndarray,
    region: np.ndarray,
    thresholds: Thresholds | None = None,
    cosine: float | None = None,
) -> QualityReport:
    """Check one edit. `allowed` = the dilated region (what the editor may change), `region` = the undilated one,
    `cosine` = vision-feature similarity (None: that check is not run)."""
    th = thresholds or Thresholds()
    m = pixel_metrics(clean, edited, allowed, region, th)
    reasons = []
    if m["outside_changed"] > th.max_outside_fraction:
        reasons.append("outside")
    if m["region_changed"] < th.min_changed_fraction or m["region_mean_change"] < th.min_mean_change:
        reasons.append("weak")
    m["cosine"] = cosine
    if cosine is not None and cosine < th.min_cosine:
        reasons.append("drift")
    return QualityReport(passed=not reasons, reasons=reasons, metrics=m)


class VisionFeatures:
    """Global image features from a VLM's own vision encoder (`family.vision_embedding`), for the drift check."""

    def __init__(self, model, processor, family=None):
        from vseam.core.families import family_for

        self.model = model.eval()
        self.processor = processor
        self.image_processor = getattr(processor, "image_processor", processor)
        self.family = family or family_for(model.config)

    @classmethod
    def from_pretrained(cls, model_dir: str) -> "VisionFeatures":
        from vseam.core.engine import HeadEngine

        return cls.from_engine(HeadEngine.from_pretrained(model_dir))

    @classmethod
    def from_engine(cls, engine) -> "VisionFeatures":
        return cls(engine.model, engine.processor, engine.family)

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        px = self.image_processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            feats = self.family.vision_embedding(self.model, px.to(device))
        return feats.float().reshape(len(images), -1).cpu().numpy()

    def cosine(self, clean: Image.Image, edited: Image.Image) -> float:
        a, b = self.embed([clean, edited])
        return cosine_similarity(a, b)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denom) if denom else 0.0


__all__ = ["REASONS", "QualityReport", "Thresholds", "VisionFeatures", "assess", "cosine_similarity", "pixel_metrics"]
