"""Edit regions computed in the tests themselves, independently of `vseam.calibrate.masks.dilate` and of the editors'
own `region()` / `allowed()`: a locality check built from the code under test would only test the clip."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def grown(mask: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within `radius` + ½ px (Euclidean) of the mask: a disk of that radius, with the half-pixel slack of
    rasterising a disk (OpenCV's elliptical kernel reaches r + 0.37 px)."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask.copy()
    return ndimage.distance_transform_edt(~mask) <= radius + 0.5


def translated(mask: np.ndarray, shift: int, axis: str) -> np.ndarray:
    """The mask moved by `shift` pixels along x or y (pixels moved off the image are dropped)."""
    ys, xs = np.nonzero(mask)
    if axis == "x":
        xs = xs + shift
    else:
        ys = ys + shift
    keep = (xs >= 0) & (xs < mask.shape[1]) & (ys >= 0) & (ys < mask.shape[0])
    out = np.zeros_like(mask, dtype=bool)
    out[ys[keep], xs[keep]] = True
    return out


def mirror_position(mask: np.ndarray, axis: str) -> np.ndarray:
    """Where a mirror edit puts the object: its extent reflected across the image's centre line (a translation)."""
    ys, xs = np.nonzero(mask)
    lo, hi, extent = (xs.min(), xs.max(), mask.shape[1]) if axis == "x" else (ys.min(), ys.max(), mask.shape[0])
    return translated(mask, int(extent - 1 - hi - lo), axis)
