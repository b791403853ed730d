"""Semantic region editors: change what the masked object shows, and nothing else.

An editor is called as `editor(image, mask, record, counterfactual) -> edited PIL image`. Each one

* says which of the record's boxes it edits (`target_boxes`) and which pixels it may change (`region`: the mask,
  or for a move the mask plus its destination),
* computes its edit, and then pastes the original back everywhere outside `region` grown by the dilation radius
  (`vseam.calibrate.masks.dilate`), so by construction nothing outside the dilated region changes.

Editors by semantic type (`choose_editor`):

==========  =====================================================================================  ==============
recolor     paint the object in the counterfactual colour, keeping its shading (luminance ratio)   color
remove      inpaint the object away (OpenCV Telea)                                                 object present
mirror      move the object to its mirror position (left<->right / above<->below), inpaint the    spatial
            hole
diffusion   a diffusers inpainting pipeline prompted with the counterfactual ("a wooden chair")    material,
                                                                                                   action, other
render      exact re-render of a synthetic scene (the `shapes` world)                              shapes records
==========  =====================================================================================  ==============
"""

from __future__ import annotations

import hashlib
import os
from typing import Sequence

import numpy as np
from PIL import Image

from vseam.calibrate.counterfactual import Counterfactual
from vseam.calibrate.datasets.vocab import COLORS, HORIZONTAL_RELATIONS, VERTICAL_RELATIONS
from vseam.calibrate.masks import default_dilation, dilate
from vseam.calibrate.records import Box, VQARecord


class EditError(ValueError):
    """This editor cannot edit this record (the message is the reason the edit job counts)."""


def _seed(record: VQARecord, base: int = 0) -> int:
    return (int(hashlib.sha256(record.qid.encode()).hexdigest()[:8], 16) + base) % (2**31)


def _rgb(image: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an RGB image, got an array of shape {arr.shape}")
    return arr.astype(np.uint8)


def confine(edited: np.ndarray, original: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """`edited` inside `allowed`, `original` everywhere else."""
    return np.where(allowed[..., None], edited, original).astype(np.uint8)


class Editor:
    """Base class: subclasses implement `_edit` (and `region`/`target_boxes` when they differ)."""

    name = "editor"
    uses_mask = True  # False: the editor knows its region itself (no SAM needed)

    def __init__(self, dilation: int | None = None):
        self.dilation = dilation

    def radius(self, shape: tuple[int, ...]) -> int:
        return self.dilation if self.dilation is not None else default_dilation(shape)

    def target_boxes(self, record: VQARecord, cf: Counterfactual, size: tuple[int, int]) -> list[int]:
        """Indices of `record.boxes` to segment and edit (default: the first box, the object asked about)."""
        if not record.boxes:
            raise EditError("record has no boxes")
        return [0]

    def region(self, mask: np.ndarray, record: VQARecord, cf: Counterfactual) -> np.ndarray:
        """The pixels this edit may change, before dilation."""
        return mask

    def allowed(self, mask: np.ndarray, record: VQARecord, cf: Counterfactual) -> np.ndarray:
        return dilate(self.region(mask, record, cf), self.radius(mask.shape))

    def __call__(self, image, mask: np.ndarray, record: VQARecord, cf: Counterfactual) -> Image.Image:
        original = _rgb(image)
        if mask.shape != original.shape[:2]:
            raise ValueError(f"mask is {mask.shape[::-1]}, image is {original.shape[1::-1]}")
        if not mask.any():
            raise EditError("empty mask")
        edited = self._edit(original, mask.astype(bool), record, cf)
        return Image.fromarray(confine(edited, original, self.allowed(mask, record, cf)))

    def _edit(self, image: np.ndarray, mask: np.ndarray, record: VQARecord, cf: Counterfactual) -> np.ndarray:
        raise NotImplementedError


def _feather(mask: np.ndarray, radius: int) -> np.ndarray:
    """A soft alpha (0..1) that is 1 on the mask and fades out over `radius` pixels."""
    import cv2

    if radius <= 0:
        return mask.astype(np.float32)
    grown = dilate(mask, radius).astype(np.float32)
    k = 2 * radius + 1
    soft = cv2.GaussianBlur(grown, (k, k), radius / 2)
    return np.maximum(soft * grown, mask.astype(np.float32))


class Recolor(Editor):
    """Paint the object in `cf.target` (a colour name), keeping its shading: new = target * (Y / mean Y)."""

    name = "recolor"

    def _edit(self, image, mask, record, cf):
        rgb = COLORS.get((cf.target or "").lower())
        if rgb is None:
            raise EditError(f"no RGB value for colour {cf.target!r}")
        img = image.astype(np.float32)
        lum = img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        mean = max(float(lum[mask].mean()), 1.0)
        ratio = np.clip(lum / mean, 0.35, 1.8)[..., None]
        painted = np.clip(np.array(rgb, dtype=np.float32) * ratio, 0, 255)
        alpha = _feather(mask, max(1, self.radius(mask.shape) // 2))[..., None]
        return (alpha * painted + (1 - alpha) * img).round().astype(np.uint8)


def _inpaint(image: np.ndarray, hole: np.ndarray, radius: int) -> np.ndarray:
    import cv2

    bgr = np.ascontiguousarray(image[..., ::-1])
    out = cv2.inpaint(bgr, hole.astype(np.uint8) * 255, max(3, radius), cv2.INPAINT_TELEA)
    return out[..., ::-1]


class Remove(Editor):
    """Inpaint the object away (the dilated mask is filled from its surroundings)."""

    name = "remove"

    def _edit(self, image, mask, record, cf):
        r = self.radius(mask.shape)
        return _inpaint(image, dilate(mask, r), r)


def _axis(cf: Counterfactual) -> str:
    rels = {(cf.source or "").lower(), (cf.target or "").lower()}
    if rels & set(HORIZONTAL_RELATIONS):
        return "x"
    if rels & set(VERTICAL_RELATIONS):
        return "y"
    raise EditError(f"mirroring cannot turn {cf.source!r} into {cf.target!r}")


def _center(box: Box, axis: str) -> float:
    return box.x + box.w / 2 if axis == "x" else box.y + box.h / 2


class Mirror(Editor):
    """Move the object to its mirror position across the image's vertical (left/right) or horizontal
    (above/below) centre line; the vacated area is inpainted. Of the boxes, the one whose move flips the relation
    is moved (the smaller one when both would)."""

    name = "mirror"

    def target_boxes(self, record, cf, size):
        if not record.boxes:
            raise EditError("record has no boxes")
        axis = _axis(cf)
        extent = size[0] if axis == "x" else size[1]
        if len(record.boxes) == 1:
            return [0]
        min_gap = 0.02 * extent
        candidates = []
        for i, b in enumerate(record.boxes):
            c, moved = _center(b, axis), extent - _center(b, axis)
            others = [_center(o, axis) for j, o in enumerate(record.boxes) if j != i]
            if all(np.sign(c - o) != np.sign(moved - o) and abs(moved - o) > min_gap for o in others):
                candidates.append((b.w * b.h, i))
        if not candidates:
            raise EditError("no object's mirror position flips the relation")
        return [min(candidates)[1]]

    def _shift(self, mask: np.ndarray, axis: str) -> int:
        ys, xs = np.nonzero(mask)
        lo, hi, extent = (xs.min(), xs.max(), mask.shape[1]) if axis == "x" else (ys.min(), ys.max(), mask.shape[0])
        return int(extent - 1 - hi - lo)

    def _moved(self, arr: np.ndarray, shift: int, axis: str) -> np.ndarray:
        out = np.zeros_like(arr)
        if axis == "x":
            if shift >= 0:
                out[:, shift:] = arr[:, : arr.shape[1] - shift]
            else:
                out[:, :shift] = arr[:, -shift:]
        else:
            if shift >= 0:
                out[shift:] = arr[: arr.shape[0] - shift]
            else:
                out[:shift] = arr[-shift:]
        return out

    def region(self, mask, record, cf):
        axis = _axis(cf)
        return mask | self._moved(mask, self._shift(mask, axis), axis)

    def _edit(self, image, mask, record, cf):
        axis = _axis(cf)
        shift = self._shift(mask, axis)
        if abs(shift) < 2:
            raise EditError("the object sits on the mirror axis; moving it would not change the relation")
        r = self.radius(mask.shape)
        background = _inpaint(image, dilate(mask, r), r)
        moved_mask = self._moved(mask, shift, axis)
        moved_pixels = self._moved(image, shift, axis)
        return np.where(moved_mask[..., None], moved_pixels, background)


class Diffusion(Editor):
    """A diffusers inpainting pipeline (e.g. Stable Diffusion inpainting) guided by `cf.prompt`.

    The region's neighbourhood is cropped (square, with context), resized to the pipeline's resolution, inpainted
    under the dilated mask, resized back, and pasted into the dilated region only. Seeded per record.
    """

    name = "diffusion"

    def __init__(
        self,
        model_dir: str | os.PathLike,
        *,
        steps: int = 25,
        guidance: float = 7.5,
        seed: int = 0,
        context: float = 0.5,
        dilation: int | None = None,
    ):
        super().__init__(dilation)
        import torch
        from diffusers import AutoPipelineForInpainting

        from vseam.core.errors import UserError

        try:
            self.pipe = AutoPipelineForInpainting.from_pretrained(str(model_dir), torch_dtype=torch.float32)
        except (OSError, ValueError) as e:
            raise UserError(f"{model_dir}: cannot load a diffusers inpainting pipeline ({e})"[:400]) from None
        self.pipe.set_progress_bar_config(disable=True)
        if getattr(self.pipe, "safety_checker", None) is not None:
            self.pipe.safety_checker = None
        self.steps, self.guidance, self.seed, self.context = steps, guidance, seed, context
        unet_size = int(getattr(self.pipe.unet.config, "sample_size", 64))
        self.resolution = unet_size * int(getattr(self.pipe, "vae_scale_factor", 8))

    def _crop(self, allowed: np.ndarray) -> tuple[int, int, int]:
        """(x0, y0, side) of a square crop around `allowed` with context, inside the image when possible."""
        h, w = allowed.shape
        ys, xs = np.nonzero(allowed)
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        side = int(max(x1 - x0, y1 - y0) * (1 + 2 * self.context))
        side = max(8, min(side, max(h, w)))
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        sx = int(np.clip(cx - side // 2, 0, max(0, w - side)))
        sy = int(np.clip(cy - side // 2, 0, max(0, h - side)))
        return sx, sy, side

    def _edit(self, image, mask, record, cf):
        import torch

        allowed = self.allowed(mask, record, cf)
        sx, sy, side = self._crop(allowed)
        h, w = mask.shape
        crop = np.zeros((side, side, 3), np.uint8)
        crop_mask = np.zeros((side, side), bool)
        ch, cw = min(side, h - sy), min(side, w - sx)
        crop[:ch, :cw] = image[sy : sy + ch, sx : sx + cw]
        crop_mask[:ch, :cw] = allowed[sy : sy + ch, sx : sx + cw]
        res = self.resolution
        generator = torch.Generator().manual_seed(_seed(record, self.seed))
        with torch.inference_mode():
            out = self.pipe(
                prompt=cf.prompt,
                image=Image.fromarray(crop).resize((res, res), Image.BICUBIC),
                mask_image=Image.fromarray(crop_mask.astype(np.uint8) * 255).resize((res, res), Image.NEAREST),
                num_inference_steps=self.steps,
                guidance_scale=self.guidance,
                generator=generator,
                height=res,
                width=res,
            ).images[0]
        painted = np.asarray(out.convert("RGB").resize((side, side), Image.BICUBIC))
        edited = image.copy()
        edited[sy : sy + ch, sx : sx + cw] = painted[:ch, :cw]
        return edited


class Render(Editor):
    """Exact counterfactual of a synthetic `shapes` record: the scene re-rendered with the one change."""

    name = "render"
    uses_mask = False

    def target_boxes(self, record, cf, size):
        return []

    def render(self, record: VQARecord):
        from vseam.calibrate.datasets import shapes

        return shapes.counterfactual(record)

    def region(self, mask, record, cf):
        return self.render(record).changed

    def allowed(self, mask, record, cf):
        return self.region(mask, record, cf)  # exact: no dilation needed

    def __call__(self, image, mask, record, cf):
        return self.render(record).image.convert("RGB")


# ---- choosing an editor ---------------------------------------------------------------------------------------

EDITOR_NAMES = ("recolor", "remove", "mirror", "diffusion", "render")


def is_synthetic(record: VQARecord) -> bool:
    return bool((record.meta or {}).get("scene_spec")) and record.dataset == "shapes"


def preferred_editors(record: VQARecord, cf: Counterfactual) -> list[str]:
    """Editors that fit this record's semantic change, best first."""
    if is_synthetic(record):
        return ["render"]
    if record.subtype == "color":
        return ["recolor", "diffusion"]
    if record.subtype == "material":
        return ["diffusion"]
    if cf.level == "object":
        return ["remove", "diffusion"] if record.answer == "yes" else ["diffusion"]
    if cf.level == "relation":
        try:
            _axis(cf)
            return ["mirror", "diffusion"]
        except EditError:
            return ["diffusion"]
    return ["diffusion"]


def choose_editor(record: VQARecord, cf: Counterfactual, editors: dict[str, Editor]) -> Editor:
    """The first preferred editor that is available; EditError naming what is missing otherwise."""
    wanted = preferred_editors(record, cf)
    for name in wanted:
        if name in editors:
            return editors[name]
    hint = " (pass --inpaint-model DIR)" if "diffusion" in wanted else ""
    raise EditError(f"no editor for {record.subtype} edits: needs {' or '.join(wanted)}{hint}")


def default_editors(
    inpaint_model: str | os.PathLike | None = None, dilation: int | None = None, **diffusion_opts
) -> dict[str, Editor]:
    editors: dict[str, Editor] = {
        "recolor": Recolor(dilation),
        "remove": Remove(dilation),
        "mirror": Mirror(dilation),
        "render": Render(dilation),
    }
    if inpaint_model is not None:
        editors["diffusion"] = Diffusion(inpaint_model, dilation=dilation, **diffusion_opts)
    return editors


def masks_for(editor: Editor, record: VQARecord, cf: Counterfactual, image: Image.Image, segment) -> tuple[np.ndarray, dict]:
    """The mask an editor works on: union of the SAM masks of its target boxes. `segment(image, boxes)` returns
    `BoxMask`es. Also returns facts for the manifest (boxes used, mask sources, SAM scores)."""
    w, h = image.size
    if not editor.uses_mask:
        return np.zeros((h, w), bool), {"boxes": []}
    idx = editor.target_boxes(record, cf, (w, h))
    found = segment(image, [record.boxes[i] for i in idx])
    mask = np.zeros((h, w), bool)
    for m in found:
        mask |= m.mask
    return mask, {"boxes": idx, "mask_sources": [m.source for m in found], "sam_scores": [m.score for m in found]}


__all__: Sequence[str] = [
    "Diffusion",
    "EDITOR_NAMES",
    "EditError",
    "Editor",
    "Mirror",
    "Recolor",
    "Remove",
    "Render",
    "choose_editor",
    "confine",
    "default_editors",
    "masks_for",
    "preferred_editors",
]
