"""Tiny checkpoints: the real hub layout (files, key names, config fields), loadable by transformers and vLLM."""

from __future__ import annotations

import json
import re

import pytest
import torch

from conftest import random_image

LLAVA_KEY_PATTERNS = [
    r"language_model\.model\.embed_tokens\.weight",
    r"language_model\.model\.layers\.\d+\.self_attn\.(q|k|v|o)_proj\.weight",
    r"language_model\.model\.layers\.\d+\.mlp\.(gate|up|down)_proj\.weight",
    r"language_model\.model\.layers\.\d+\.(input|post_attention)_layernorm\.weight",
    r"language_model\.model\.norm\.weight",
    r"language_model\.lm_head\.weight",
    r"multi_modal_projector\.linear_(1|2)\.(weight|bias)",
    r"vision_tower\.vision_model\.embeddings\.(class_embedding|patch_embedding\.weight|position_embedding\.weight)",
    r"vision_tower\.vision_model\.(pre_layrnorm|post_layernorm)\.(weight|bias)",
    r"vision_tower\.vision_model\.encoder\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|mlp\.fc(1|2)|layer_norm(1|2))\.(weight|bias)",
]
INSTRUCTBLIP_KEY_PATTERNS = [
    r"language_model\.model\..*",
    r"language_model\.lm_head\.weight",
    r"language_projection\.(weight|bias)",
    r"query_tokens",
    r"qformer\.embeddings\.(word_embeddings|position_embeddings)\.weight",
    r"qformer\.embeddings\.layernorm\.(weight|bias)",
    r"qformer\.encoder\.layer\.\d+\.(attention|crossattention)\.(attention\.(query|key|value)|output\.(dense|LayerNorm))\.(weight|bias)",
    r"qformer\.encoder\.layer\.\d+\.(intermediate|intermediate_query|output|output_query)\.(dense|LayerNorm)\.(weight|bias)",
    r"vision_model\.embeddings\.(class_embedding|patch_embedding\.(weight|bias)|position_embedding)",
    r"vision_model\.encoder\.layers\.\d+\.(self_attn\.(qkv|projection)|mlp\.fc(1|2)|layer_norm(1|2))\.(weight|bias)",
    r"vision_model\.post_layernorm\.(weight|bias)",
]


def index_keys(d):
    index = json.loads((d / "model.safetensors.index.json").read_text())
    files = set(index["weight_map"].values())
    assert files == {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}
    assert all((d / f).exists() for f in files)
    return set(index["weight_map"])


def test_llava_layout(tiny_llava_dir):
    d = tiny_llava_dir
    for name in ["config.json", "generation_config.json", "preprocessor_config.json", "processor_config.json",
                 "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]:
        assert (d / name).exists(), name
    keys = index_keys(d)
    for k in keys:
        assert any(re.fullmatch(p, k) for p in LLAVA_KEY_PATTERNS), f"unexpected key {k}"
    for p in LLAVA_KEY_PATTERNS:
        assert any(re.fullmatch(p, k) for k in keys), f"no key for {p}"
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["architectures"] == ["LlavaForConditionalGeneration"] and cfg["model_type"] == "llava"
    assert cfg["vision_feature_layer"] == -2 and cfg["vision_feature_select_strategy"] == "default"
    assert cfg["projector_hidden_act"] == "gelu" and cfg["vision_config"]["model_type"] == "clip_vision_model"
    tc = cfg["text_config"]
    assert tc["model_type"] == "llama" and tc["head_dim"] == 32
    assert tc["hidden_size"] // tc["num_attention_heads"] == 32
    assert cfg["image_token_index"] == json.loads((d / "tokenizer.json").read_text())["added_tokens"][-2]["id"]


def test_instructblip_layout(tiny_instructblip_dir):
    d = tiny_instructblip_dir
    keys = index_keys(d)
    for k in keys:
        assert any(re.fullmatch(p, k) for p in INSTRUCTBLIP_KEY_PATTERNS), f"unexpected key {k}"
    for p in INSTRUCTBLIP_KEY_PATTERNS:
        assert any(re.fullmatch(p, k) for k in keys), f"no key for {p}"
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["architectures"] == ["InstructBlipForConditionalGeneration"]
    assert cfg["qformer_config"]["model_type"] == "instructblip_qformer"
    assert cfg["text_config"]["head_dim"] == 32
    assert (d / "qformer_tokenizer" / "tokenizer.json").exists() and (d / "preprocessor_config.json").exists()
    assert json.loads((d / "processor_config.json").read_text())["num_query_tokens"] == cfg["num_query_tokens"]


def test_loads_with_from_pretrained_without_missing_keys(tiny_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model, info = AutoModelForImageTextToText.from_pretrained(str(tiny_dir), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    from vseam.core.families import family_for

    processor = AutoProcessor.from_pretrained(str(tiny_dir))
    assert processor.tokenizer.convert_tokens_to_ids("<image>") != processor.tokenizer.unk_token_id
    assert processor.image_processor.size  # preprocessor_config.json was read
    text = family_for(model.config).render_prompt(processor, "Question: Is it red?")
    batch = processor(images=[random_image(0)], text=[text], return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert torch.isfinite(logits).all()


def test_builder_is_deterministic(tmp_path):
    from safetensors.torch import load_file

    from vseam.core.toy_checkpoints import build

    build("llava", tmp_path / "a", seed=3)
    build("llava", tmp_path / "b", seed=3)
    for f in ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]:
        a, b = load_file(tmp_path / "a" / f), load_file(tmp_path / "b" / f)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "a" / "tokenizer.json").read_text() == (tmp_path / "b" / "tokenizer.json").read_text()
