"""SAM box -> mask on real photos shipped in wheels (scikit-image), scored against hand-drawn outlines."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from vseam.calibrate.masks import (
    MOBILE_SAM_SHA256,
    box_mask,
    default_dilation,
    dilate,
    iou,
    load_mask,
    mobile_sam_path,
    polygon_mask,
    save_mask,
    sha256_of,
)
from vseam.calibrate.records import Box
from vseam.core.errors import UserError
from regions import grown

pytestmark = pytest.mark.slow  # SAM on real photos

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
OBJECTS = json.loads((FIXTURES / "photo_objects.json").read_text())


def photo(name: str) -> Image.Image:
    from skimage import data

    return Image.fromarray(getattr(data, name)()).convert("RGB")


@pytest.fixture(scope="module")
def segmenter():
    from vseam.calibrate.masks import BoxSegmenter

    return BoxSegmenter()  # MobileSAM from the cache (fetched by setup, or now)


def test_mobile_sam_weights_are_cached_and_verified(segmenter):
    assert mobile_sam_path().is_file() and sha256_of(mobile_sam_path()) == MOBILE_SAM_SHA256


@pytest.mark.parametrize("image_name", sorted(OBJECTS))
def test_sam_masks_cover_hand_drawn_objects(segmenter, image_name):
    image = photo(image_name)
    w, h = image.size
    objects = OBJECTS[image_name]
    before = segmenter.embedded
    results = segmenter.segment(image, [Box(*o["box"]) for o in objects])
    assert segmenter.embedded - before <= 1  # one embedding per image, however many boxes
    for o, r in zip(objects, results):
        truth = polygon_mask(o["polygon"], w, h)
        score = iou(r.mask, truth)
        assert r.source == "sam" and score >= 0.6, f"{image_name}/{o['name']}: IoU {score:.3f}"
        # the mask stays inside the (slightly grown) box: edits remain local
        grown = dilate(box_mask(Box(*o["box"]), w, h), int(0.05 * max(o["box"][2:])) + 1)
        assert not (r.mask & ~grown).any()


def test_sam_mask_drives_an_editor_that_stays_inside(segmenter):
    from vseam.calibrate.counterfactual import RuleRewriter
    from vseam.calibrate.editors import Recolor
    from vseam.calibrate.records import VQARecord

    image = photo("coffee")
    cup = OBJECTS["coffee"][0]
    record = VQARecord("cup", "t", "Is the cup red?", "yes", "coffee.png", "color", [Box(*cup["box"])])
    (m,) = segmenter.segment(image, record.boxes)
    edited = np.asarray(Recolor()(image, m.mask, record, RuleRewriter()(record)))
    changed = (edited != np.asarray(image)).any(-1)
    assert not (changed & ~grown(m.mask, default_dilation(m.mask.shape))).any()  # region computed independently
    assert changed[m.mask].mean() > 0.9


def test_mask_helpers(tmp_path):
    m = np.zeros((20, 30), bool)
    m[5:8, 10:12] = True
    d = dilate(m, 2)
    assert d[4:9, 9:13].all() and d[3, 10] and d[9, 11] and d[6, 8] and d[6, 13]  # grown by 2 px
    assert not d[2].any() and not d[:, 7].any() and not d[3, 8]  # ...and no more (disk, not square)
    save_mask(tmp_path / "m.png", m)
    assert (load_mask(tmp_path / "m.png") == m).all()
    assert iou(m, m) == 1.0 and iou(m, ~m) == 0.0
    assert box_mask(Box(-5, -5, 10, 10), 30, 20)[:5, :5].all()


def test_bad_sam_options_are_user_errors(tmp_path):
    from vseam.calibrate.masks import build_sam

    with pytest.raises(UserError, match="--sam-type must be one of"):
        build_sam(None, "vit_x")
    with pytest.raises(UserError, match="needs --sam-checkpoint"):
        build_sam(None, "vit_h")
    bogus = tmp_path / "sam.pt"
    bogus.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot load as a vit_t SAM checkpoint"):
        build_sam(bogus, "vit_t")
