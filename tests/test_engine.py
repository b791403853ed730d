"""HF reference head engine: scaling == o_proj column scaling, identity, Eq 5 mean-ablation, per-row batching."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from conftest import random_image
from vseam.core.engine import HeadEdits, HeadEngine

QUESTIONS = ["Is the cat red?", "Is there a dog in this picture?", "Is the cup to the left of the plate?"]


@pytest.fixture(scope="module")
def engine(tiny_dir):
    return HeadEngine.from_pretrained(str(tiny_dir))


def batch_for(engine, n=3, seed=0):
    images = [random_image(seed + i) for i in range(n)]
    return engine.encode(images, [engine.family.binary_text(q) for q in QUESTIONS[:n]])


def test_scaling_a_head_equals_scaling_o_proj_columns(engine):
    batch = batch_for(engine)
    L, H, D = engine.num_layers, engine.num_heads, engine.head_dim
    scales = np.ones((L, H))
    scales[0, 1], scales[L - 1, H - 1], scales[1, 0] = 1.7, 0.0, 0.4
    got = engine.next_token_logprobs(batch, HeadEdits.from_scales(scales, 3))

    folded = copy.deepcopy(engine.model)
    with torch.no_grad():
        for l, layer in enumerate(engine.family.lm_layers(folded)):
            w = engine.family.o_proj(layer).weight  # [hidden, H*D]
            w.mul_(torch.as_tensor(scales[l], dtype=w.dtype).repeat_interleave(D)[None, :])
    plain = HeadEngine(folded, engine.processor, engine.family)
    want = plain.next_token_logprobs(batch)
    base = engine.next_token_logprobs(batch)
    assert (got - want).abs().max().item() <= 1e-5
    assert (got - base).abs().max().item() > 1e-2, "the edit must actually change the output"


def test_all_ones_profile_is_exactly_the_identity(engine):
    batch = batch_for(engine)
    ones = np.ones((engine.num_layers, engine.num_heads))
    a = engine.next_token_logprobs(batch)
    b = engine.next_token_logprobs(batch, HeadEdits.from_scales(ones, 3))
    assert torch.equal(a, b)


def test_mean_ablation_matches_hand_computed_replacement(engine):
    batch = batch_for(engine, n=1)
    layer, head = engine.num_layers - 1, 2
    H, D = engine.num_heads, engine.head_dim

    with engine.capture_head_out() as clean:
        engine.next_token_logprobs(batch)
    x = clean[layer][0]  # [T, H*D]
    heads = [x[:, h * D : (h + 1) * D] for h in range(H)]
    others = [heads[h] for h in range(H) if h != head]
    expected = x.clone()
    expected[:, head * D : (head + 1) * D] = sum(others) / (H - 1)

    seen = {}
    o_proj = engine.family.o_proj(engine.layers[layer])
    handle = o_proj.register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0].detach().clone()))
    try:
        mask = torch.zeros(1, engine.num_layers, H, dtype=torch.bool)
        mask[0, layer, head] = True
        engine.next_token_logprobs(batch, HeadEdits(mean_ablate=mask))
    finally:
        handle.remove()
    assert torch.allclose(seen["x"][0], expected, atol=1e-6, rtol=0)
    untouched = [h for h in range(H) if h != head]
    for h in untouched:
        assert torch.equal(seen["x"][0][:, h * D : (h + 1) * D], x[:, h * D : (h + 1) * D])


def test_per_row_settings_equal_one_at_a_time(engine):
    images = [random_image(10 + i) for i in range(3)]
    texts = [engine.family.binary_text(q) for q in QUESTIONS]
    L, H = engine.num_layers, engine.num_heads
    scale = torch.ones(3, L, H)
    scale[0, 0, 1] = 2.0
    scale[2, L - 1, 3] = 0.0
    ablate = torch.zeros(3, L, H, dtype=torch.bool)
    ablate[1, 0, 0] = True
    ablate[2, 1, 2] = True
    together = engine.next_token_logprobs(engine.encode(images, texts), HeadEdits(scale=scale, mean_ablate=ablate))
    for i in range(3):
        alone = engine.next_token_logprobs(
            engine.encode([images[i]], [texts[i]]),
            HeadEdits(scale=scale[i : i + 1], mean_ablate=ablate[i : i + 1]),
        )
        assert (together[i] - alone[0]).abs().max().item() <= 1e-5
    assert (together[0] - together[1]).abs().max().item() > 1e-3


def test_answer_tokens_and_prompt(engine):
    ids = engine.answer_ids()
    tok = engine.tokenizer
    assert tok.decode([ids["yes"]]).strip() == engine.family.yes_word
    assert tok.decode([ids["no"]]).strip() == engine.family.no_word
    batch = batch_for(engine, n=1)
    mask = engine.family.image_positions(batch["input_ids"], engine.model.config)
    assert int(mask.sum()) > 0
    text = engine.family.render_prompt(engine.processor, engine.family.binary_text("Is it red?"))
    if engine.family.name == "llava":
        assert text == "USER: <image>\nQuestion: Is it red? Please answer the question using Yes or No. ASSISTANT:"
    else:
        assert text == "Question: Is it red? Please answer the question using yes or no."
    out = engine.binary([random_image(1)], ["Is it red?"])
    assert 0 < float(out["yes"][0]) < 1 and out["logprobs"].shape[-1] == engine.model.config.get_text_config().vocab_size
