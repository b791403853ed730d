"""Editors on real photos with hand-drawn masks: each changes its region and nothing outside the dilated region.

Locality is checked against regions computed here (`regions.py`), never from the editor's own `region()` /
`allowed()`: each editor's raw edit (before `Editor.__call__` clips it) must already stay inside, and one test
checks the clip itself.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from vseam.calibrate.counterfactual import Counterfactual, RuleRewriter
from vseam.calibrate.datasets.vocab import COLORS
from vseam.calibrate.editors import (
    EditError,
    Mirror,
    Recolor,
    Remove,
    choose_editor,
    default_editors,
    preferred_editors,
)
from vseam.calibrate.editors import confine
from vseam.calibrate.masks import default_dilation, dilate, polygon_mask
from vseam.calibrate.records import Box, VQARecord
from regions import grown, mirror_position

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
OBJECTS = json.loads((FIXTURES / "photo_objects.json").read_text())


def photo(name: str) -> Image.Image:
    from skimage import data

    return Image.fromarray(getattr(data, name)()).convert("RGB")


def obj(image_name: str, name: str) -> tuple[np.ndarray, Box]:
    o = next(o for o in OBJECTS[image_name] if o["name"] == name)
    w, h = photo(image_name).size
    return polygon_mask(o["polygon"], w, h), Box(*o["box"])


def record(question, subtype, boxes, answer="yes", qid="r1"):
    return VQARecord(qid=qid, dataset="t", question=question, answer=answer, image="x", subtype=subtype, boxes=boxes)


def check_local(editor, image, mask, rec, cf, region=None, min_changed=0.5, raw_local=True):
    """The edit changes most of the mask and nothing farther than the dilation radius from `region` (default: the
    mask itself), a region computed here. With `raw_local`, the editor's own edit (before the clip) is checked too.
    Returns the edited array."""
    orig = np.asarray(image)
    allowed = grown(mask if region is None else region, editor.radius(mask.shape))
    if raw_local:
        raw = editor._edit(orig.copy(), mask, rec, cf)
        outside = (raw != orig).any(-1) & ~allowed
        assert not outside.any(), f"{editor.name}: its edit changed {int(outside.sum())} pixels outside its region"
    out = np.asarray(editor(image, mask, rec, cf))
    assert out.shape == orig.shape and out.dtype == np.uint8
    changed = (out != orig).any(-1)
    assert not (changed & ~allowed).any(), f"{editor.name}: {int((changed & ~allowed).sum())} pixels changed outside"
    assert changed[mask].mean() >= min_changed, f"{editor.name}: only {changed[mask].mean():.2f} of the region changed"
    return out


def test_the_clip_confines_any_edit_to_the_allowed_region():
    """`Editor.__call__` clips every edit to `allowed()`: an edit that paints everything keeps only that region."""
    image = np.asarray(photo("coffee"))
    allowed = np.zeros(image.shape[:2], bool)
    allowed[100:150, 200:260] = True
    everywhere = np.zeros_like(image)
    out = confine(everywhere, image, allowed)
    assert (out[allowed] == 0).all() and (out[~allowed] == image[~allowed]).all()


def test_recolor_paints_the_target_colour_and_keeps_shading():
    image = photo("coffee")
    mask, box = obj("coffee", "cup")
    rec = record("Is the cup red?", "color", [box])
    cf = RuleRewriter()(rec)
    out = check_local(Recolor(), image, mask, rec, cf, min_changed=0.9)
    target = np.array(COLORS[cf.target], float)
    region = out[mask].astype(float)
    # mean colour moves towards the target: the hue direction of the region matches the target's
    mean = region.mean(0)
    cos = mean @ target / (np.linalg.norm(mean) * np.linalg.norm(target))
    assert cos > 0.95, (cf.target, mean)
    lum = region @ [0.299, 0.587, 0.114]
    orig_lum = np.asarray(image)[mask].astype(float) @ [0.299, 0.587, 0.114]
    assert np.corrcoef(lum, orig_lum)[0, 1] > 0.5  # shading survives the recolouring


def test_remove_inpaints_the_object_from_its_surroundings():
    image = photo("astronaut")
    mask, box = obj("astronaut", "patch")
    rec = record("Is there a patch in this picture?", "indoor", [box])
    cf = Counterfactual("Is there a badge in this picture?", "object", "patch", "badge", "a badge")
    out = check_local(Remove(), image, mask, rec, cf, min_changed=0.9)
    ring = dilate(mask, 12) & ~dilate(mask, 4)
    # the filled region now looks like the suit around it (orange), not like the patch (dark blue/purple)
    fill, around, before = out[mask].mean(0), np.asarray(image)[ring].mean(0), np.asarray(image)[mask].mean(0)
    assert np.abs(fill - around).sum() < np.abs(before - around).sum() / 2


def test_mirror_moves_the_object_that_flips_the_relation():
    image = photo("astronaut")
    helmet, hbox = obj("astronaut", "helmet")
    _, pbox = obj("astronaut", "patch")
    rec = record("Is the helmet to the right of the patch?", "spatial", [hbox, pbox])
    cf = RuleRewriter()(rec)
    assert cf.target == "to the left of"
    ed = Mirror()
    assert ed.target_boxes(rec, cf, image.size) == [0]  # moving the patch would not put it right of the helmet
    out = check_local(ed, image, helmet, rec, cf, region=helmet | mirror_position(helmet, "x"))
    moved = ed.region(helmet, rec, cf) & ~helmet
    xs = np.nonzero(moved)[1]
    assert xs.mean() < pbox.x + pbox.w / 2 < np.nonzero(helmet)[1].mean()  # the helmet now sits left of the patch
    # the moved pixels are the helmet's own pixels
    ys, xs = np.nonzero(helmet)
    shift = image.size[0] - 1 - xs.max() - xs.min()
    keep = xs + shift >= 0
    assert (out[ys[keep], xs[keep] + shift] == np.asarray(image)[ys[keep], xs[keep]]).mean() > 0.95
    with pytest.raises(EditError, match="mirroring cannot"):
        ed.target_boxes(record("Is the cup behind the saucer?", "spatial", [hbox, pbox]),
                        RuleRewriter()(record("Is the cup behind the saucer?", "spatial", [hbox, pbox])), image.size)  # fmt: skip


def test_choose_editor_by_semantic_type():
    eds = default_editors()
    b = [Box(0, 0, 5, 5), Box(10, 0, 5, 5)]
    cases = [
        (record("Is the cup red?", "color", b[:1]), "recolor"),
        (record("Is there a dog in this picture?", "animal", b[:1]), "remove"),
        (record("Is the cup to the left of the plate?", "spatial", b), "mirror"),
        (record("Is the man riding the horse?", "action", b), None),
        (record("Is the table made of wood?", "material", b[:1]), None),
    ]
    for rec, want in cases:
        cf = RuleRewriter()(rec)
        if want is None:
            with pytest.raises(EditError, match="--inpaint-model"):
                choose_editor(rec, cf, eds)
            assert preferred_editors(rec, cf)[-1] == "diffusion"
        else:
            assert choose_editor(rec, cf, eds).name == want


# ---- diffusion editor with a tiny random pipeline built offline -------------------------------------------------


def build_tiny_inpaint_pipeline(out: pathlib.Path) -> pathlib.Path:
    """A random, tiny Stable-Diffusion inpainting pipeline (32 px) from diffusers/transformers classes."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=9, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
    )  # fmt: skip
    vae = AutoencoderKL(
        block_out_channels=[32, 64], in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4, norm_num_groups=8,
    )  # fmt: skip
    # a character-level CLIP BPE vocabulary (no merges) is enough for a tokenizer
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in map(chr, range(33, 127)):
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    src = out / "tokenizer-src"
    src.mkdir(parents=True, exist_ok=True)
    (src / "vocab.json").write_text(json.dumps(vocab))
    (src / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(src / "vocab.json"), str(src / "merges.txt"), model_max_length=32)
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=32, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    ))  # fmt: skip
    pipe = StableDiffusionInpaintPipeline(
        vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=DDIMScheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.save_pretrained(out / "pipeline")
    return out / "pipeline"


@pytest.fixture(scope="module")
def tiny_inpaint(tmp_path_factory) -> pathlib.Path:
    return build_tiny_inpaint_pipeline(tmp_path_factory.mktemp("tiny-inpaint"))


def test_diffusion_editor_is_prompted_seeded_and_local(tiny_inpaint):
    from vseam.calibrate.editors import Diffusion

    eds = default_editors(tiny_inpaint, steps=2)
    ed = eds["diffusion"]
    assert isinstance(ed, Diffusion) and ed.resolution == 32
    image = photo("chelsea")
    mask, box = obj("chelsea", "left eye")
    rec = record("Is the cat holding the eye?", "action", [box])
    cf = RuleRewriter()(rec)
    assert choose_editor(rec, cf, eds) is ed and cf.prompt == "the cat throwing the eye"
    calls = []
    original_call = type(ed.pipe).__call__

    def spy(self, *a, **kw):
        calls.append(kw)
        return original_call(self, *a, **kw)

    type(ed.pipe).__call__ = spy
    try:
        # the pipeline repaints its whole square crop; the clip keeps the dilated mask only
        out = check_local(ed, image, mask, rec, cf, raw_local=False)
        again = np.asarray(ed(image, mask, rec, cf))
    finally:
        type(ed.pipe).__call__ = original_call
    assert (out == again).all()  # seeded per record
    assert calls[0]["prompt"] == cf.prompt and calls[0]["num_inference_steps"] == 2
    assert calls[0]["image"].size == (32, 32) and calls[0]["mask_image"].size == (32, 32)


def test_render_editor_for_synthetic_records():
    from vseam.calibrate.datasets import shapes
    from vseam.calibrate.edit import dataset_counterfactual

    rec = shapes.make_record("calib", 0, seed=0, write=True)
    cf = dataset_counterfactual(rec)
    eds = default_editors()
    ed = choose_editor(rec, cf, eds)
    assert ed.name == "render" and not ed.uses_mask
    image = Image.open(rec.image).convert("RGB")
    out = np.asarray(ed(image, np.zeros(image.size[::-1], bool), rec, cf))
    changed = (out != np.asarray(image)).any(-1)
    # the region the edit may touch, from the scene itself: the edited object before and after the change
    scene = shapes.scene_of(rec)
    edit = rec.meta["edit"]
    after = shapes.apply_edit(scene, edit)
    region = shapes.object_mask(scene.get(edit["object"]))
    if not edit.get("remove"):
        region |= shapes.object_mask(after.get(edit["object"]))
    assert changed.any() and not (changed & ~region).any()


def test_dilation_radius_and_error_paths():
    image = photo("coffee")
    mask, box = obj("coffee", "cup")
    rec = record("Is the cup red?", "color", [box])
    assert Recolor().radius(mask.shape) == default_dilation(mask.shape) == 6
    assert Recolor(dilation=3).radius(mask.shape) == 3
    with pytest.raises(EditError, match="empty mask"):
        Recolor()(image, np.zeros_like(mask), rec, RuleRewriter()(rec))
    bad = Counterfactual("Is the cup shiny?", "attribute", "red", "shiny", "a shiny cup")
    with pytest.raises(EditError, match="no RGB value"):
        Recolor()(image, mask, rec, bad)
