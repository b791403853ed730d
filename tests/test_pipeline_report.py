"""Run-report pieces: box -> patch-grid coverage in the model's crop, and the Table-14 head/bbox overlap."""

from __future__ import annotations

import types

import numpy as np
import pytest

from vseam.calibrate.records import Box, VQARecord
from vseam.calibrate.report import box_coverage, crop_geometry, record_overlap
from planted_heads import POSITIVE, build_planted, clean_image
from vseam.core.engine import HeadEngine

CLIP = types.SimpleNamespace(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}, do_center_crop=True)


def test_crop_geometry_resizes_the_short_side_and_centre_crops():
    assert crop_geometry(CLIP, 128, 64) == (1.0, 1.0, 32.0, 0.0, 64.0, 64.0)  # short side already 64: crop x 32..96
    assert crop_geometry(CLIP, 256, 128) == (0.5, 0.5, 32.0, 0.0, 64.0, 64.0)  # -> 128x64, then the same crop
    assert crop_geometry(CLIP, 100, 200) == (0.64, 0.64, 0.0, 32.0, 64.0, 64.0)  # -> 64x128, crop y 32..96
    plain = types.SimpleNamespace(size={"height": 32, "width": 32}, do_center_crop=False)
    assert crop_geometry(plain, 64, 128) == (0.5, 0.25, 0.0, 0.0, 32.0, 32.0)


def test_box_coverage_in_patch_grid():
    cov = box_coverage([Box(0, 0, 32, 64)], (64, 64), CLIP, (4, 4))  # the left half
    np.testing.assert_allclose(cov, [[1, 1, 0, 0]] * 4)
    cov = box_coverage([Box(64, 0, 64, 128)], (256, 128), CLIP, (4, 4))  # x 64..128 of 256 -> crop x 0..32
    np.testing.assert_allclose(cov, [[1, 1, 0, 0]] * 4)
    cov = box_coverage([Box(8, 8, 16, 16)], (64, 64), CLIP, (4, 4))  # quarter of 4 patches
    np.testing.assert_allclose(cov[:2, :2], 0.25)
    assert cov.sum() == pytest.approx(1.0)
    two = box_coverage([Box(0, 0, 16, 16), Box(48, 48, 16, 16)], (64, 64), CLIP, (4, 4))
    assert two[0, 0] == 1 and two[3, 3] == 1 and two.sum() == 2


def test_overlap_of_a_head_that_attends_uniformly(tmp_path):
    engine = HeadEngine.from_pretrained(str(build_planted(tmp_path / "m")))
    path = tmp_path / "c.png"
    clean_image(0).save(path)  # a solid colour: every image token looks the same to the planted head
    rec = VQARecord(qid="q", dataset="gqa", question="Is it red?", answer="yes", image=str(path),
                    subtype="color", boxes=[Box(0, 0, 32, 64)])
    ov = record_overlap(engine, rec, engine.family.image_grid(engine.model.config))
    assert ov.shape == (engine.num_layers, engine.num_heads)
    assert ov[POSITIVE] == pytest.approx(0.5, abs=1e-3)  # half the image, half the attention
    assert ((ov >= 0) & (ov <= 1)).all()
    no_box = VQARecord(**{**rec.__dict__, "boxes": []})
    assert record_overlap(engine, no_box, (4, 4)) is None
