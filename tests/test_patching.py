"""Activation patching (Eq 1-3): resumed patching == patching a full forward, sanity identities, files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vseam.calibrate.patching import (
    IMAGE_ROW,
    MODULES,
    ActivationPatcher,
    PatchResult,
    heatmap,
    lens_figure,
    peaks,
    save_arrays,
    summarise,
    write_lens_table,
)
from conftest import random_image
from vseam.core.engine import HeadEngine

Q = "Is the cat red?"


@pytest.fixture(scope="module")
def patcher(tiny_dir):
    return ActivationPatcher(HeadEngine.from_pretrained(str(tiny_dir)), max_rows=4)


@pytest.fixture(scope="module")
def result(patcher):
    return patcher.patch(random_image(0), random_image(1), Q, "yes")


def full_forward_patch(patcher, clean, edited, kind, layer, row):
    """Eq 1-2 the slow, obvious way: one full forward of the edited input with one module output patched."""
    engine = patcher.engine
    text = engine.family.binary_text(Q)
    cb, eb = engine.encode([clean], [text]), engine.encode([edited], [text])
    labels, masks = patcher._rows(cb["input_ids"][0])
    saved = {}
    module = patcher.module(kind, layer)

    def save(mod, args, out):
        saved["x"] = (out[0] if isinstance(out, tuple) else out).clone()

    h = module.register_forward_hook(save)
    engine.next_token_logprobs(cb)
    h.remove()

    def put(mod, args, out):
        o = out[0] if isinstance(out, tuple) else out
        o = torch.where(masks[row][None, :, None], saved["x"], o)
        return (o,) + tuple(out[1:]) if isinstance(out, tuple) else o

    y = engine.answer_ids()["yes"]
    with torch.no_grad():
        base = engine.model(**engine._forward_inputs(eb), logits_to_keep=1).logits[0, -1, y].item()
        h = module.register_forward_hook(put)
        try:
            patched = engine.model(**engine._forward_inputs(eb), logits_to_keep=1).logits[0, -1, y].item()
        finally:
            h.remove()
    return patched - base


def test_resumed_patching_equals_full_forward_patching(patcher, result):
    L = len(patcher.layers)
    R = len(result.rows)
    assert result.rows[0] == IMAGE_ROW and result.rows[-1] and R > 5
    assert result.delta.shape == (2, L, R)
    for k, kind in enumerate(MODULES):
        for layer, row in [(0, 0), (0, R - 1), (L - 1, R - 1), (0, R // 2)]:
            want = full_forward_patch(patcher, random_image(0), random_image(1), kind, layer, row)
            assert result.delta[k, layer, row] == pytest.approx(want, abs=1e-4), (kind, layer, row)
    assert np.abs(result.delta).max() > 1e-3, "patching must change the answer logit somewhere"


def test_patching_identities(patcher, result):
    L = len(patcher.layers)
    # the image tokens' last-layer attention output cannot reach the answer position
    assert np.abs(result.delta[0, L - 1, 0]) <= 1e-5
    # patching an image into itself changes nothing
    same = patcher.patch(random_image(2), random_image(2), Q, "yes")
    assert np.abs(same.delta).max() <= 1e-5
    assert same.logit_clean == pytest.approx(same.logit_edited, abs=1e-5)
    with pytest.raises(ValueError, match="yes/no"):
        patcher.patch(random_image(2), random_image(3), Q, "blue")


def test_logit_lens_is_norm_then_lm_head(patcher, result):
    assert set(result.lens) == set(MODULES)
    att = result.lens["att"]
    assert len(att) == len(patcher.layers) and len(att[0]) == 5
    values = [v for _, v in att[0]]
    assert values == sorted(values, reverse=True)


def test_summary_aligns_rows_on_the_answer_position(tmp_path, patcher, result):
    L = len(patcher.layers)
    longer = PatchResult(
        rows=[IMAGE_ROW, "extra"] + result.rows[1:],
        delta=np.concatenate([result.delta[:, :, :1], np.full((2, L, 1), 7.0), result.delta[:, :, 1:] + 1.0], axis=2),
        logit_clean=0.0,
        logit_edited=0.0,
        lens=result.lens,
    )
    s = summarise([result, longer])
    assert s.rows == [IMAGE_ROW, "extra"] + result.rows[1:]
    assert list(s.count) == [2, 1] + [2] * (len(result.rows) - 1)
    np.testing.assert_allclose(s.s[:, :, 1], 7.0)
    np.testing.assert_allclose(s.s[:, :, 2:], result.delta[:, :, 1:] + 0.5)
    np.testing.assert_allclose(s.s[:, :, 0], result.delta[:, :, 0])
    assert PatchResult.from_json(result.to_json()).rows == result.rows

    npz = np.load(save_arrays(s, tmp_path / "p.npz", keys=["a", "b"]))
    assert npz["s"].shape == (2, L, len(s.rows)) and list(npz["triples"]) == ["a", "b"]
    for png in (heatmap(s, tmp_path / "h.png"), lens_figure(result, tmp_path / "l.png")):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = write_lens_table([("a", result)], tmp_path / "lens.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["triple", "module", "layer", "rank", "token", "logit"]
    assert len(lines) == 1 + 2 * L * 5
    best = peaks(summarise([result]))
    flat = np.argmax(result.delta[0])
    l, r = np.unravel_index(int(flat), result.delta[0].shape)
    assert best["att"] == {"layer": int(l), "row": result.rows[r], "mean_delta_logit": float(result.delta[0, l, r])}
