"""A tiny LLaVA whose answer is carried by known heads, for testing attribution end to end.

Starting from the random tiny checkpoint, the weights are set so that

* the vision side turns each 16-px patch into a "redness" and a "blueness" feature plus an "image" flag
  (CLIP layers made identity, a hand-set patch embedding, a hand-set projector);
* head `POSITIVE` (layer 1) attends from every text position to the image tokens, reads redness and writes it
  along the answer direction: on a red image it alone makes the model say "Yes";
* head `DISTRACTOR` (layer 0) does the same with blueness but writes against the answer: on a blue image it
  makes the model say "No";
* every other head and MLP keeps its random weights (scaled down) and never writes into the five reserved
  residual dimensions, so they perturb the answer only a little.

With questions whose correct answer is "yes", red (clean) images are answered correctly and blue (edited) images
incorrectly: mean-ablating `POSITIVE` on clean inputs costs the most probability (first positive head) and
mean-ablating `DISTRACTOR` on edited inputs gains the most (first negative head).

`build_misleading` adds a third wired head, `MISLEADING` (layer 0), that reads "greenness" and writes strongly
against the answer: on a yellow image (red + green) it outweighs `POSITIVE`, so "Is it red?" - true, the image is
red enough for `POSITIVE` - is answered "No". It misleads the model on a known subset of clean questions.
"""

from __future__ import annotations

import pathlib

import numpy as np
import torch
from PIL import Image

from vseam.core.families import FAMILIES
from vseam.core.toy_checkpoints import build, llava_hub_key, write_sharded

POSITIVE = (1, 2)
DISTRACTOR = (0, 1)
MISLEADING = (0, 3)
RED, BLUE, IMG, CONST, ANS, GREEN = 0, 1, 2, 3, 4, 5  # reserved residual dimensions of the LM
ROPE_SLOW = 15  # the slowest-rotating rotary pair (dims 15 and 31 of a 32-dim head): nearly position-free


def solid(color: tuple[int, int, int], size: int = 64) -> Image.Image:
    return Image.fromarray(np.full((size, size, 3), color, dtype=np.uint8))


def clean_image(seed: int = 0) -> Image.Image:
    rng = np.random.RandomState(seed)
    return solid((200 + rng.randint(40), rng.randint(40), rng.randint(40)))


def edited_image(seed: int = 0) -> Image.Image:
    rng = np.random.RandomState(seed + 1000)
    return solid((rng.randint(40), rng.randint(40), 200 + rng.randint(40)))


def yellow_image(seed: int = 0) -> Image.Image:
    """Red enough to be "red" for `POSITIVE`, green enough for `MISLEADING` to say "No"."""
    rng = np.random.RandomState(seed + 2000)
    return solid((210 + rng.randint(30), 190 + rng.randint(30), rng.randint(30)))


@torch.no_grad()
def plant(model: torch.nn.Module, background: float = 0.3, misleading: bool = False) -> torch.nn.Module:
    """Set the weights of a tiny LLaVA (from `vseam.core.toy_checkpoints`) as described in the module docstring."""
    vt = model.model.vision_tower
    # vision: identity encoder layers, patch embedding = mean(R) - mean(B) over the patch (normalised pixels)
    for layer in vt.encoder.layers:
        layer.self_attn.out_proj.weight.zero_()
        layer.self_attn.out_proj.bias.zero_()
        layer.mlp.fc2.weight.zero_()
        layer.mlp.fc2.bias.zero_()
    pe = vt.embeddings.patch_embedding.weight  # [C, 3, p, p]
    pe.zero_()
    npx = pe.shape[2] * pe.shape[3]
    pe[0, 0] = 1.0 / npx
    pe[0, 2] = -1.0 / npx
    pe[1] = -pe[0]
    vt.embeddings.class_embedding.zero_()
    vt.embeddings.position_embedding.weight.zero_()
    vt.embeddings.position_embedding.weight[:, 2] = 1.0  # constant channel -> the image flag
    vt.pre_layrnorm.weight.fill_(1.0)
    vt.pre_layrnorm.bias.zero_()
    proj = model.model.multi_modal_projector
    for lin in (proj.linear_1, proj.linear_2):
        lin.weight.zero_()
        lin.bias.zero_()
    proj.linear_1.weight[0, 0] = 2.0  # redness (GELU keeps the positive side)
    proj.linear_1.weight[1, 0] = -2.0  # blueness
    proj.linear_1.weight[2, 2] = 1.0  # image flag
    proj.linear_2.weight[RED, 0] = 1.0
    proj.linear_2.weight[BLUE, 1] = 1.0
    proj.linear_2.weight[IMG, 2] = 1.0
    if misleading:  # channel 3: greenness = mean(G) - (mean(R) + mean(B)) / 2
        pe[3, 1] = 1.0 / npx
        pe[3, 0] = pe[3, 2] = -0.5 / npx
        proj.linear_1.weight[3, 3] = 2.0
        proj.linear_2.weight[GREEN, 3] = 1.0

    lm = model.model.language_model
    reserved = [RED, BLUE, IMG, CONST, ANS] + ([GREEN] if misleading else [])
    emb = lm.embed_tokens.weight
    emb[:, reserved] = 0.0
    emb[:, CONST] = 1.0
    head_dim = lm.config.head_dim
    for layer in lm.layers:
        layer.self_attn.o_proj.weight.mul_(background)
        layer.self_attn.o_proj.weight[reserved, :] = 0.0
        layer.mlp.down_proj.weight.mul_(background)
        layer.mlp.down_proj.weight[reserved, :] = 0.0

    def wire(layer_idx: int, head: int, source: int, sign: float, gain: float = 0.1) -> None:
        attn = lm.layers[layer_idx].self_attn
        rows = slice(head * head_dim, (head + 1) * head_dim)
        for proj_w in (attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight):
            proj_w[rows, :] = 0.0
        attn.q_proj.weight[head * head_dim + ROPE_SLOW, CONST] = 1.5  # every text position asks ...
        attn.k_proj.weight[head * head_dim + ROPE_SLOW, IMG] = 1.5  # ... for the image tokens
        attn.v_proj.weight[head * head_dim, source] = 1.0  # and reads one colour feature
        attn.o_proj.weight[:, rows] = 0.0
        attn.o_proj.weight[ANS, head * head_dim] = sign * gain  # written along the answer direction

    wire(*POSITIVE, source=RED, sign=+1.0)
    wire(*DISTRACTOR, source=BLUE, sign=-1.0)
    if misleading:
        wire(*MISLEADING, source=GREEN, sign=-1.0, gain=MISLEADING_GAIN)

    head = model.lm_head.weight
    head[:, ANS] = 0.0
    return model


MISLEADING_GAIN = 0.3


def build_planted(out: str | pathlib.Path, seed: int = 0, misleading: bool = False) -> pathlib.Path:
    """Write the planted tiny LLaVA as a checkpoint directory (hub layout) and return its path."""
    out = pathlib.Path(out)
    model, processor = build("llava", out, seed=seed)
    plant(model, misleading=misleading)
    ids = FAMILIES["llava"].answer_token_ids(processor.tokenizer)
    set_answer_readout(model, ids["yes"], ids["no"])
    for f in out.glob("model-*.safetensors"):
        f.unlink()
    write_sharded({llava_hub_key(k): v for k, v in model.state_dict().items()}, out)
    return out


def build_misleading(out: str | pathlib.Path, seed: int = 0) -> pathlib.Path:
    """The planted model plus the `MISLEADING` head (see the module docstring)."""
    return build_planted(out, seed=seed, misleading=True)


@torch.no_grad()
def set_answer_readout(model: torch.nn.Module, yes_id: int, no_id: int, gain: float = 0.5) -> None:
    """The answer direction raises "Yes" and lowers "No"; the constant direction makes both likely answers."""
    w = model.lm_head.weight
    for tid in (yes_id, no_id):
        w[tid, :] = 0.0
        w[tid, CONST] = 3.0
    w[yes_id, ANS] = gain
    w[no_id, ANS] = -gain
