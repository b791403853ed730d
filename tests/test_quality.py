"""The quality gate accepts a clean local edit and rejects planted bad ones, each for the right reason."""

from __future__ import annotations

import collections
import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from vseam.calibrate.counterfactual import RuleRewriter
from vseam.calibrate.editors import Recolor
from vseam.calibrate.masks import default_dilation, polygon_mask
from vseam.calibrate.quality import Thresholds, VisionFeatures, assess, cosine_similarity
from vseam.calibrate.records import Box, VQARecord
from regions import grown

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
CUP = json.loads((FIXTURES / "photo_objects.json").read_text())["coffee"][0]


@pytest.fixture(scope="module")
def scene():
    from skimage import data

    image = Image.fromarray(data.coffee()).convert("RGB")
    w, h = image.size
    mask = polygon_mask(CUP["polygon"], w, h)
    rec = VQARecord("cup", "t", "Is the cup red?", "yes", "coffee.png", "color", [Box(*CUP["box"])])
    good = Recolor()(image, mask, rec, RuleRewriter()(rec))
    # the region the gate is given is computed here, not by the editor that made `good`
    return image, mask, grown(mask, default_dilation(mask.shape)), good


def planted(image: Image.Image, mask: np.ndarray) -> dict[str, Image.Image]:
    arr = np.asarray(image).astype(float)
    rng = np.random.default_rng(0)
    noise = np.clip(arr + rng.normal(0, 10, arr.shape), 0, 255).astype(np.uint8)
    # the cup's outline moved 250 px to the right of where the edit was supposed to be: recolour there
    elsewhere = np.zeros_like(mask)
    elsewhere[:, 250:] = mask[:, :-250]
    wrong_place = np.asarray(image).copy()
    wrong_place[elsewhere & ~mask] = (30, 200, 40)
    # a tiny edit: 20 pixels of the cup
    weak = np.asarray(image).copy()
    ys, xs = np.nonzero(mask)
    weak[ys[:20], xs[:20]] = 0
    return {
        "global noise": Image.fromarray(noise),
        "edit outside the box": Image.fromarray(wrong_place),
        "no-op": image.copy(),
        "barely changed": Image.fromarray(weak),
    }


def test_gate_accepts_a_local_edit_and_rejects_planted_bad_edits(scene):
    image, mask, allowed, good = scene
    ok = assess(image, good, allowed, mask)
    assert ok.passed and ok.reasons == [] and ok.metrics["outside_changed"] == 0.0
    assert ok.metrics["region_changed"] > 0.9
    reports = {name: assess(image, bad, allowed, mask) for name, bad in planted(image, mask).items()}
    assert reports["global noise"].reasons == ["outside", "weak"]  # sigma-10 noise is no semantic edit either
    assert reports["global noise"].metrics["outside_changed"] > 0.8
    assert reports["edit outside the box"].reasons == ["outside", "weak"]
    assert reports["no-op"].reasons == ["weak"]
    assert reports["barely changed"].reasons == ["weak"]
    counts = collections.Counter(r for rep in reports.values() for r in rep.reasons)
    assert counts == {"outside": 2, "weak": 4}
    assert not any(rep.passed for rep in reports.values())


def test_tolerance_allows_lossy_noise_when_asked(scene):
    image, mask, allowed, good = scene
    arr = np.asarray(good).astype(int)
    arr[~allowed] += 1  # e.g. a JPEG round trip
    lossy = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    assert assess(image, lossy, allowed, mask).reasons == ["outside"]
    assert assess(image, lossy, allowed, mask, Thresholds(outside_tolerance=2)).passed


def test_drift_check_uses_the_models_own_vision_tower(scene, tiny_instructblip_dir):
    from skimage import data

    image, mask, allowed, good = scene
    features = VisionFeatures.from_pretrained(str(tiny_instructblip_dir))
    emb = features.embed([image, good])
    assert emb.shape[0] == 2 and emb.shape[1] > 1
    assert features.cosine(image, image) == pytest.approx(1.0, abs=1e-6)
    assert cosine_similarity(emb[0], emb[1]) == pytest.approx(features.cosine(image, good), abs=1e-6)
    # a "local" edit whose region is the whole picture: pixel checks pass, the features tell it is another image
    everything = np.ones_like(mask)
    swapped = Image.fromarray(data.astronaut()).convert("RGB").resize(image.size)
    cos = features.cosine(image, swapped)
    report = assess(image, swapped, everything, everything, Thresholds(min_cosine=0.85), cosine=cos)
    assert cos < 0.85 and report.reasons == ["drift"] and report.metrics["cosine"] == cos
    assert assess(image, good, allowed, mask, cosine=features.cosine(image, good)).metrics["cosine"] > cos
