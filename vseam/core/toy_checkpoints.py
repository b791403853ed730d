"""Tiny checkpoints with the real models' layout, built offline with the real transformers classes.

`llava` mirrors `llava-hf/llava-1.5-7b-hf` (CLIP vision tower, vision_feature_layer -2, "default" feature
selection, 2-layer GELU projector, Llama LM; `<image>`/`<pad>` tokens after the base vocabulary; sharded
safetensors with the hub's key names and an index; processor, image-processor and tokenizer files; a chat template).
`instructblip` mirrors `Salesforce/instructblip-vicuna-7b` (BLIP-2 ViT, Q-Former with word/position embeddings
reading the instruction through a BERT-style tokenizer, query tokens, language projection, Llama LM).

Only the sizes are small; head_dim is 32 so vLLM's CPU attention accepts the LM.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re

import torch
from safetensors.torch import save_file

# --------------------------------------------------------------------------------------------------------------
# tokenizer

_COLORS = "red green blue yellow orange purple pink brown black white gray grey silver gold tan beige dark light".split()
_MATERIALS = "wood wooden metal plastic glass brick stone concrete cloth leather paper fabric striped dotted plain checkered".split()
_OBJECTS = (
    "man woman person people boy girl child dog cat horse cow sheep bird elephant giraffe zebra bear animal "
    "car truck bus train bicycle bike motorcycle airplane boat vehicle chair table sofa couch bed lamp shelf "
    "cabinet desk mirror television laptop book cup bottle plate bowl clock pillow window door shirt pants "
    "circle square triangle star cross ring diamond heart hexagon shape object thing picture image photo"
).split()
_RELATIONS = (
    "left right above below under over behind front next to on top of in inside outside near touching holding "
    "riding wearing carrying eating feeding throwing sitting standing walking lying hanging"
).split()
_GLUE = (
    "Is Are Does Do there a an the this that of in to and or with which what where who how many color "
    "made Question: Please answer question using Yes No yes no Short Answer: Context: N/A single word phrase "
    "USER: ASSISTANT: A chat between curious user artificial intelligence assistant . , ? ! : ' \""
).split()


def tokenizer_corpus() -> list[str]:
    """A deterministic corpus covering the prompt templates and a VQA vocabulary."""
    lines = [
        "A chat between a curious user and an artificial intelligence assistant.",
        "Answer the question using a single word or phrase.",
        "Please answer the question using Yes or No.",
        "Please answer the question using yes or no.",
        "Context: N/A Short Answer:",
    ]
    for i, obj in enumerate(_OBJECTS):
        c = _COLORS[i % len(_COLORS)]
        m = _MATERIALS[i % len(_MATERIALS)]
        o2 = _OBJECTS[(i * 7 + 3) % len(_OBJECTS)]
        r = _RELATIONS[i % len(_RELATIONS)]
        lines += [
            f"USER: Question: Is the {obj} {c}? Please answer the question using Yes or No. ASSISTANT: Yes",
            f"USER: Question: Is the {obj} made of {m}? Please answer the question using Yes or No. ASSISTANT: No",
            f"Question: Is there a {obj} in this picture? Please answer the question using yes or no. yes",
            f"Question: Is the {obj} to the {('left', 'right')[i % 2]} of the {o2}? no",
            f"Is the {obj} {r} the {o2}? What color is the {obj}? Where is the {obj}? It is {c}.",
        ]
    lines.append(" ".join(_COLORS + _MATERIALS + _OBJECTS + _RELATIONS + _GLUE))
    return lines * 4


def build_llama_tokenizer(vocab_size: int = 1024, split_punctuation: bool = False):
    """A Llama-style BPE tokenizer (byte fallback, ▁ word prefix) trained on `tokenizer_corpus()`; with
    `split_punctuation` no merge joins a punctuation mark to a word."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaTokenizer

    specials = ["<unk>", "<s>", "</s>"]
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    if split_punctuation:
        tok.pre_tokenizer = pre_tokenizers.Sequence([tok.pre_tokenizer, pre_tokenizers.Punctuation("isolated")])
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials + byte_tokens,
        min_frequency=1,
        show_progress=False,
        initial_alphabet=list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,?!:;'\"-/()▁"),
    )
    tok.train_from_iterator(tokenizer_corpus(), trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    vocab = model["vocab"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return LlamaTokenizer(vocab=vocab, merges=merges, legacy=False, add_prefix_space=True, add_bos_token=True)


def build_bert_tokenizer():
    """A small uncased WordPiece tokenizer in the layout of bert-base-uncased (the Q-Former's tokenizer)."""
    from transformers import BertTokenizer

    words = sorted({w.lower().strip(".,?!:'\"") for line in tokenizer_corpus() for w in line.split()} - {""})
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,?!:;'\"-/()")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + [f"##{c}" for c in chars] + words
    seen, ordered = set(), []
    for v in vocab:
        if v not in seen:
            seen.add(v)
            ordered.append(v)
    tok = BertTokenizer(vocab={v: i for i, v in enumerate(ordered)}, do_lower_case=True)
    tok.add_special_tokens({"additional_special_tokens": ["[DEC]"]})
    return tok


#: chat template of the tiny LLaVA: "USER: <image>\n{text} ASSISTANT:" (a system text, if any, comes first)
LLAVA_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}{%- set parts = [{'type': 'text', 'text': message['content']}] -%}"
    "{%- else -%}{%- set parts = message['content'] -%}{%- endif -%}"
    "{%- if message['role'] != 'system' -%}{{ (message['role'] | upper) ~ ': ' }}{%- endif -%}"
    "{%- for p in parts if p['type'] != 'text' -%}{{ '<image>\\n' }}{%- endfor -%}"
    "{%- for p in parts if p['type'] == 'text' -%}{{ p['text'] ~ ' ' }}{%- endfor -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
)

# --------------------------------------------------------------------------------------------------------------
# configs


@dataclasses.dataclass
class ToySpec:
    """Sizes of a tiny checkpoint. Defaults give ~1M parameters."""

    image_size: int = 64
    patch_size: int = 16
    vision_hidden: int = 64
    vision_layers: int = 2
    vision_heads: int = 2
    text_hidden: int = 128
    text_layers: int = 2
    text_heads: int = 4
    text_kv_heads: int = 4
    text_intermediate: int = 256
    text_head_dim: int = 0  # 0: text_hidden // text_heads (set it to decouple head count from width)
    tokenizer_vocab: int = 1024
    #: learn no BPE merges across punctuation, as Llama's tokenizer does ("red?" -> "▁red", "?"), so a word is the
    #: same token in a question and in running text (the model organism needs it; the random test models do not)
    tokenizer_split_punctuation: bool = False
    qformer_hidden: int = 64
    qformer_layers: int = 2
    qformer_heads: int = 2
    num_query_tokens: int = 4
    init_std: float = 0.08
    model_id: str = ""


CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def _padded_vocab(n: int, multiple: int = 64) -> int:
    return ((n + multiple - 1) // multiple) * multiple


def _llama_config(spec: ToySpec, vocab: int, pad_id: int | None):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab,
        hidden_size=spec.text_hidden,
        intermediate_size=spec.text_intermediate,
        num_hidden_layers=spec.text_layers,
        num_attention_heads=spec.text_heads,
        num_key_value_heads=spec.text_kv_heads,
        head_dim=spec.text_head_dim or spec.text_hidden // spec.text_heads,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        pad_token_id=pad_id,
        bos_token_id=1,
        eos_token_id=2,
        initializer_range=spec.init_std,
        architectures=["LlamaForCausalLM"],
    )


def _init_weights(model: torch.nn.Module, seed: int, std: float) -> None:
    """Seeded re-initialisation: N(0, std) matrices, unit norms, small biases (reproducible across machines)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if p.dim() >= 2 or name.endswith(("class_embedding", "query_tokens", "position_embedding")):
                p.copy_(torch.randn(p.shape, generator=gen) * std)
            elif "norm" in name.lower() and name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * std * 0.1)


# --------------------------------------------------------------------------------------------------------------
# writing


def llava_hub_key(name: str) -> str:
    """transformers-5 LLaVA parameter name -> key used in llava-hf/llava-1.5-7b-hf's safetensors."""
    for pat, rep in (
        (r"^model\.language_model\.", "language_model.model."),
        (r"^lm_head\.", "language_model.lm_head."),
        (r"^model\.vision_tower\.", "vision_tower.vision_model."),
        (r"^model\.multi_modal_projector\.", "multi_modal_projector."),
    ):
        if re.match(pat, name):
            return re.sub(pat, rep, name)
    raise KeyError(f"unexpected LLaVA parameter {name}")


def instructblip_hub_key(name: str) -> str:
    """transformers-5 InstructBLIP parameter name -> hub key (the layouts coincide)."""
    return name


def write_sharded(state: dict[str, torch.Tensor], out: pathlib.Path, num_shards: int = 2) -> None:
    """Write safetensors shards `model-0000k-of-0000n.safetensors` plus `model.safetensors.index.json`."""
    keys = sorted(state)
    per = (len(keys) + num_shards - 1) // num_shards
    weight_map, total = {}, 0
    for k in range(num_shards):
        fname = f"model-{k + 1:05d}-of-{num_shards:05d}.safetensors"
        part = {key: state[key].contiguous() for key in keys[k * per : (k + 1) * per]}
        save_file(part, str(out / fname), metadata={"format": "pt"})
        for key, t in part.items():
            weight_map[key] = fname
            total += t.numel() * t.element_size()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def _finish_config(out: pathlib.Path, model_id: str, extra: dict | None = None) -> None:
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["_name_or_path"] = model_id
    cfg.update(extra or {})
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def split_processor_config(out: pathlib.Path, processor_class: str) -> None:
    """Write the hub layout: image-processor settings in preprocessor_config.json, the rest in processor_config.json."""
    path = out / "processor_config.json"
    cfg = json.loads(path.read_text())
    image_cfg = cfg.pop("image_processor", None)
    if image_cfg is not None:
        image_cfg["processor_class"] = processor_class
        (out / "preprocessor_config.json").write_text(json.dumps(image_cfg, indent=2, sort_keys=True) + "\n")
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def _lm_tokenizer(spec: ToySpec, added: tuple[str, ...]):
    """The toy LLaMA tokenizer with `added` special tokens appended in this order ("<pad>" becomes the pad token).

    Returns (tokenizer, {token: id}, padded LM vocab size); the ids follow the base vocabulary in `added` order,
    as in the real checkpoints (LLaVA-1.5: <image> then <pad>; InstructBLIP-Vicuna: <pad> then <image>).
    """
    tok = build_llama_tokenizer(spec.tokenizer_vocab, spec.tokenizer_split_punctuation)
    base = len(tok)
    for t in added:
        tok.add_special_tokens({"pad_token": t} if t == "<pad>" else {"additional_special_tokens": [t]})
    ids = {t: tok.convert_tokens_to_ids(t) for t in added}
    assert list(ids.values()) == list(range(base, base + len(added))), (ids, base)
    return tok, ids, _padded_vocab(len(tok))


def _vision_tower_size(spec: ToySpec) -> dict:
    """The ViT size both families' vision configs take from the spec (MLP 4x wide)."""
    return dict(hidden_size=spec.vision_hidden, intermediate_size=spec.vision_hidden * 4,
                num_hidden_layers=spec.vision_layers, num_attention_heads=spec.vision_heads,
                image_size=spec.image_size, patch_size=spec.patch_size)


#: the CLIP-normalised RGB preprocessing both families' image processors share (bicubic resize, rescale, normalise)
CLIP_PREPROCESSING = dict(do_resize=True, do_normalize=True, do_rescale=True, do_convert_rgb=True,
                          image_mean=CLIP_MEAN, image_std=CLIP_STD, resample=3)


def _save(model, processor, out: pathlib.Path, model_id: str, hub_key) -> None:
    """Write model (config, generation config, sharded hub-named weights) and processor in the hub layout."""
    model.config.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    write_sharded({hub_key(k): v for k, v in model.state_dict().items()}, out)
    _finish_config(out, model_id)
    processor.save_pretrained(out)
    split_processor_config(out, type(processor).__name__)


def build_llava(out: str | pathlib.Path, seed: int = 0, spec: ToySpec | None = None):
    """Write a tiny llava-1.5-layout checkpoint to `out`; returns (model, processor)."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    spec = spec or ToySpec()
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok, ids, vocab = _lm_tokenizer(spec, ("<image>", "<pad>"))
    image_id, pad_id = ids["<image>"], ids["<pad>"]

    vision = CLIPVisionConfig(
        **_vision_tower_size(spec),
        projection_dim=spec.vision_hidden,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )
    n_img = (spec.image_size // spec.patch_size) ** 2
    config = LlavaConfig(
        vision_config=vision,
        text_config=_llama_config(spec, vocab, pad_id),
        image_token_index=image_id,
        projector_hidden_act="gelu",
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=n_img,
        tie_word_embeddings=False,
    )
    config.pad_token_id = pad_id
    config.architectures = ["LlavaForConditionalGeneration"]
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    _init_weights(model, seed, spec.init_std)

    image_processor = CLIPImageProcessor(
        size={"shortest_edge": spec.image_size},
        crop_size={"height": spec.image_size, "width": spec.image_size},
        do_center_crop=True,
        **CLIP_PREPROCESSING,
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=spec.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    _save(model, processor, out, spec.model_id or f"vseam/tiny-llava-1.5-s{seed}", llava_hub_key)
    return model, processor


def build_instructblip(out: str | pathlib.Path, seed: int = 0, spec: ToySpec | None = None):
    """Write a tiny instructblip-vicuna layout checkpoint to `out`; returns (model, processor)."""
    from transformers import (
        BlipImageProcessor,
        InstructBlipConfig,
        InstructBlipForConditionalGeneration,
        InstructBlipProcessor,
        InstructBlipQFormerConfig,
        InstructBlipVisionConfig,
    )

    spec = spec or ToySpec()
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok, ids, vocab = _lm_tokenizer(spec, ("<pad>", "<image>"))
    pad_id, image_id = ids["<pad>"], ids["<image>"]
    tok.image_token = "<image>"
    qtok = build_bert_tokenizer()

    vision = InstructBlipVisionConfig(
        **_vision_tower_size(spec),
        layer_norm_eps=1e-6,
        qkv_bias=True,
    )
    qformer = InstructBlipQFormerConfig(
        vocab_size=len(qtok),
        hidden_size=spec.qformer_hidden,
        num_hidden_layers=spec.qformer_layers,
        num_attention_heads=spec.qformer_heads,
        intermediate_size=spec.qformer_hidden * 4,
        encoder_hidden_size=spec.vision_hidden,
        cross_attention_frequency=2,
        max_position_embeddings=512,
        pad_token_id=qtok.pad_token_id,
    )
    config = InstructBlipConfig(
        vision_config=vision.to_dict(),
        qformer_config=qformer.to_dict(),
        text_config=_llama_config(spec, vocab, pad_id).to_dict(),
        num_query_tokens=spec.num_query_tokens,
        image_token_index=image_id,
    )
    config.architectures = ["InstructBlipForConditionalGeneration"]
    torch.manual_seed(seed)
    model = InstructBlipForConditionalGeneration(config).eval()
    _init_weights(model, seed, spec.init_std)
    with torch.no_grad():  # BLIP-2 ViT has q and v biases only: the k third of qkv.bias is zero in real checkpoints
        for layer in model.vision_model.encoder.layers:
            d = spec.vision_hidden
            layer.self_attn.qkv.bias[d : 2 * d].zero_()

    image_processor = BlipImageProcessor(
        size={"height": spec.image_size, "width": spec.image_size},
        **CLIP_PREPROCESSING,
    )
    processor = InstructBlipProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        qformer_tokenizer=qtok,
        num_query_tokens=spec.num_query_tokens,
    )
    _save(model, processor, out, spec.model_id or f"vseam/tiny-instructblip-vicuna-s{seed}", instructblip_hub_key)
    return model, processor


BUILDERS = {"llava": build_llava, "instructblip": build_instructblip}


def build(arch: str, out: str | pathlib.Path, seed: int = 0, spec: ToySpec | None = None):
    if arch not in BUILDERS:
        raise ValueError(f"unknown --arch {arch!r}; choose from {sorted(BUILDERS)}")
    return BUILDERS[arch](out, seed=seed, spec=spec)
