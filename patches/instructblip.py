"""InstructBLIP (Vicuna) as an out-of-tree vLLM model: ViT -> instruction-aware Q-Former -> projection -> Llama.

vLLM 0.32 ships BLIP-2, whose Q-Former reads only the learned query tokens. InstructBLIP's Q-Former also reads the
instruction: its input is [query tokens ; embedded instruction], every layer runs self-attention over both (masked
by the instruction's padding), cross-attends to the image features from the query part only (every
`cross_attention_frequency` layers), and sends the query part through `intermediate_query`/`output_query` and the
instruction part through `intermediate`/`output`. Only the query outputs are projected into the language model.

Data flow inside vLLM:

* The renderer tokenizes the prompt for the LM. `InstructBlipMultiModalProcessor.apply` decodes those ids back to
  text (special tokens dropped) - that is the instruction the HF processor would give the Q-Former - and carries it
  in the item's processor kwargs under `QFORMER_TEXT_KWARG`. vLLM puts processor kwargs into every multimodal
  item's hash, so the processor cache, the encoder cache and the prefix cache all key an image *together with its
  question*: the same picture asked two things never shares a Q-Former output.
* The HF `InstructBlipProcessor` turns (image, instruction) into `pixel_values`, `qformer_input_ids` and
  `qformer_attention_mask`; they travel as per-image multimodal kwargs. `num_query_tokens` `<image>` tokens are
  inserted before BOS, as the HF processor does.
* The language model is vLLM's own `LlamaForCausalLM` (via `init_vllm_registered_model`), so anything that patches
  vLLM's Llama attention (the head-scaling plugin) applies here exactly as it does for LLaVA.

Weights load from the `Salesforce/instructblip-vicuna-7b` layout (`vision_model.*` with fused qkv, `qformer.*`,
`query_tokens`, `language_projection.*`, `language_model.{model,lm_head}.*`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import BatchFeature, InstructBlipConfig, InstructBlipProcessor
from transformers.models.instructblip.configuration_instructblip import InstructBlipQFormerConfig

from vllm.config import VllmConfig
from vllm.config.multimodal import MultiModalDummyOptions
from vllm.model_executor.layers.activation import get_act_fn
from vllm.model_executor.models.blip import BlipVisionModel
from vllm.model_executor.models.interfaces import (
    MultiModalEmbeddings,
    SupportsLoRA,
    SupportsMultiModal,
    SupportsPP,
)
from vllm.model_executor.models.module_mapping import MultiModelKeys
from vllm.model_executor.models.utils import AutoWeightsLoader, init_vllm_registered_model, maybe_prefix
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import MultiModalFieldConfig, MultiModalKwargsItems
from vllm.multimodal.parse import MultiModalDataItems
from vllm.multimodal.processing import (
    BaseDummyInputsBuilder,
    BaseMultiModalProcessor,
    BaseProcessingInfo,
    PromptIndexTargets,
    PromptInsertion,
    PromptUpdate,
)
from vllm.multimodal.processing.inputs import ProcessorInputs
from vllm.multimodal.processing.processor import HFMultiModalInputs
from vllm.sequence import IntermediateTensors

from vseam.core.families import FAMILIES

#: processor kwarg carrying the Q-Former instruction of a request (part of every image item's hash)
QFORMER_TEXT_KWARG = "vseam_qformer_text"

_FAMILY = FAMILIES["instructblip"]


# ----------------------------------------------------------------------------------------------------------------
# Q-Former (parameter names follow the HF checkpoint: qformer.embeddings.*, qformer.encoder.layer.N.*)


class _QFormerMultiHeadAttention(nn.Module):
    """Scaled dot-product attention with separate query/key/value projections (keys may come from the image)."""

    def __init__(self, config: InstructBlipQFormerConfig, kv_dim: int) -> None:
        super().__init__()
        if config.hidden_size % config.num_attention_heads:
            raise ValueError(
                f"qformer_config.hidden_size ({config.hidden_size}) is not a multiple of "
                f"qformer_config.num_attention_heads ({config.num_attention_heads})"
            )
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // self.num_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(kv_dim, config.hidden_size)
        self.value = nn.Linear(kv_dim, config.hidden_size)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)  # [B, H, S, D]

    def forward(self, x: torch.Tensor, context: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        """x: [B, S, hidden]; context: [B, K, kv_dim]; key_mask: [B, K] bool (True = attend) or None."""
        mask = None if key_mask is None else key_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(
            self._heads(self.query(x)),
            self._heads(self.key(context)),
            self._heads(self.value(context)),
            attn_mask=mask,
            scale=self.head_dim**-0.5,
        )
        return out.transpose(1, 2).flatten(-2)


class _AddNorm(nn.Module):
    """LayerNorm(dense(x) + residual): BERT's attention-output and feed-forward-output block."""

    def __init__(self, in_dim: int, hidden: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(in_dim, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class _QFormerAttentionBlock(nn.Module):
    def __init__(self, config: InstructBlipQFormerConfig, kv_dim: int) -> None:
        super().__init__()
        self.attention = _QFormerMultiHeadAttention(config, kv_dim)
        self.output = _AddNorm(config.hidden_size, config.hidden_size, config.layer_norm_eps)

    def forward(self, x: torch.Tensor, context: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.attention(x, context, key_mask), x)


class _Intermediate(nn.Module):
    def __init__(self, config: InstructBlipQFormerConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = get_act_fn(config.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class _QFormerLayer(nn.Module):
    def __init__(self, config: InstructBlipQFormerConfig, index: int) -> None:
        super().__init__()
        h, eps = config.hidden_size, config.layer_norm_eps
        self.attention = _QFormerAttentionBlock(config, h)
        self.has_cross_attention = index % config.cross_attention_frequency == 0
        if self.has_cross_attention:
            self.crossattention = _QFormerAttentionBlock(config, config.encoder_hidden_size)
        # feed-forward of the instruction tokens ...
        self.intermediate = _Intermediate(config)
        self.output = _AddNorm(config.intermediate_size, h, eps)
        # ... and of the query tokens
        self.intermediate_query = _Intermediate(config)
        self.output_query = _AddNorm(config.intermediate_size, h, eps)

    def forward(
        self, hidden: torch.Tensor, key_mask: torch.Tensor, image: torch.Tensor, num_queries: int
    ) -> torch.Tensor:
        attended = self.attention(hidden, hidden, key_mask)
        queries, text = attended[:, :num_queries], attended[:, num_queries:]
        if self.has_cross_attention:
            queries = self.crossattention(queries, image, None)
        queries = self.output_query(self.intermediate_query(queries), queries)
        if text.shape[1] == 0:
            return queries
        text = self.output(self.intermediate(text), text)
        return torch.cat([queries, text], dim=1)


class _QFormerEmbeddings(nn.Module):
    def __init__(self, config: InstructBlipQFormerConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        text = self.word_embeddings(input_ids) + self.position_embeddings(positions)[None]
        return self.layernorm(torch.cat([queries, text.to(queries.dtype)], dim=1))


class _QFormerEncoder(nn.Module):
    def __init__(self, config: InstructBlipQFormerConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_QFormerLayer(config, i) for i in range(config.num_hidden_layers))


class InstructBlipQFormer(nn.Module):
    """The instruction-aware Q-Former. Returns the query tokens' outputs, [B, num_queries, hidden]."""

    def __init__(self, config: InstructBlipQFormerConfig) -> None:
        super().__init__()
        pos_type = getattr(config, "position_embedding_type", "absolute")
        if pos_type != "absolute":
            raise NotImplementedError(f"qformer_config.position_embedding_type={pos_type!r} is not supported")
        self.embeddings = _QFormerEmbeddings(config)
        self.encoder = _QFormerEncoder(config)

    def forward(
        self,
        queries: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        image: torch.Tensor,
    ) -> torch.Tensor:
        """queries: [B, Q, h]; input_ids/attention_mask: [B, T] (mask 1 = real token); image: [B, P, d]."""
        num_queries = queries.shape[1]
        hidden = self.embeddings(input_ids, queries)
        query_mask = torch.ones(queries.shape[:2], dtype=torch.bool, device=queries.device)
        key_mask = torch.cat([query_mask, attention_mask.to(torch.bool)], dim=1)
        for layer in self.encoder.layer:
            hidden = layer(hidden, key_mask, image, num_queries)
        return hidden[:, :num_queries]


# ----------------------------------------------------------------------------------------------------------------
# multimodal processing


def instruction_of(tokenizer, prompt_ids: Sequence[int]) -> str:
    """The Q-Former instruction for an LM prompt: its text without special tokens (BOS, `<image>` placeholders).

    The HF processor hands the Q-Former the same text it tokenizes for the LM; vLLM's multimodal processor only
    sees the LM token ids, so the text is recovered by decoding them. The Q-Former's BERT tokenizer lower-cases and
    splits on whitespace and punctuation, so decoding differences in spacing do not change its ids.
    """
    return tokenizer.decode(list(prompt_ids), skip_special_tokens=True)


class InstructBlipProcessingInfo(BaseProcessingInfo):
    def get_hf_config(self) -> InstructBlipConfig:
        return self.ctx.get_hf_config(InstructBlipConfig)

    def get_hf_processor(self, **kwargs: object) -> InstructBlipProcessor:
        return self.ctx.get_hf_processor(InstructBlipProcessor, **kwargs)

    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return {"image": 1}

    def get_num_image_tokens(self) -> int:
        return int(self.get_hf_config().num_query_tokens)


class InstructBlipDummyInputsBuilder(BaseDummyInputsBuilder[InstructBlipProcessingInfo]):
    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        return ""

    def get_dummy_mm_data(self, seq_len: int, mm_counts: Mapping[str, int], mm_options: MultiModalDummyOptions):
        size = self.info.get_hf_config().vision_config.image_size
        return {
            "image": self._get_dummy_images(
                width=size, height=size, num_images=mm_counts.get("image", 0), overrides=mm_options.get("image")
            )
        }


class InstructBlipMultiModalProcessor(BaseMultiModalProcessor[InstructBlipProcessingInfo]):
    def apply(self, inputs: ProcessorInputs, timing_ctx):
        # The Q-Former output depends on the instruction, so the instruction becomes a processor kwarg: vLLM then
        # includes it in the image item's hash (processor cache, encoder cache and prefix-cache keys).
        text = instruction_of(self.info.get_tokenizer(), inputs.prompt)
        kwargs = {**inputs.hf_processor_mm_kwargs, QFORMER_TEXT_KWARG: text}
        return super().apply(dataclasses.replace(inputs, hf_processor_mm_kwargs=kwargs), timing_ctx)

    def _get_hf_mm_inputs(self, mm_items: MultiModalDataItems, hf_kwargs: Mapping[str, object]):
        hf_kwargs = dict(hf_kwargs)
        text = hf_kwargs.pop(QFORMER_TEXT_KWARG, "")
        hf_data, hf_kwargs, passthrough = super()._get_hf_mm_inputs(mm_items, hf_kwargs)
        if hf_data:
            # one copy of the instruction per image, so every image item carries its own Q-Former ids
            num_images = mm_items.get_all_counts().get("image", 0)
            hf_data = {**hf_data, "text": [str(text)] * max(num_images, 1)}
        return HFMultiModalInputs(hf_data, hf_kwargs, passthrough)

    def _get_mm_fields_config(
        self, hf_inputs: BatchFeature, hf_processor_mm_kwargs: Mapping[str, object]
    ) -> Mapping[str, MultiModalFieldConfig]:
        return dict(
            pixel_values=MultiModalFieldConfig.batched("image"),
            qformer_input_ids=MultiModalFieldConfig.batched("image"),
            qformer_attention_mask=MultiModalFieldConfig.batched("image"),
        )

    def _get_prompt_updates(
        self,
        mm_items: MultiModalDataItems,
        hf_processor_mm_kwargs: Mapping[str, object],
        out_mm_kwargs: MultiModalKwargsItems,
    ) -> Sequence[PromptUpdate]:
        image_token = _FAMILY.image_token_id(self.info.get_hf_config())
        # like the HF processor: the query-token placeholders go first, before BOS
        return [
            PromptInsertion(
                modality="image",
                target=PromptIndexTargets.start(),
                insertion=[image_token] * self.info.get_num_image_tokens(),
            )
        ]


# ----------------------------------------------------------------------------------------------------------------
# the model


def _pad_rows(rows: torch.Tensor | Sequence[torch.Tensor], fill: int) -> torch.Tensor:
    """Per-image 1-D tensors (or an already stacked [N, T] tensor) -> [N, T_max], right-padded with `fill`."""
    if isinstance(rows, torch.Tensor):
        return rows.reshape(rows.shape[0], -1)
    rows = [r.reshape(-1) for r in rows]
    return nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=fill)


@MULTIMODAL_REGISTRY.register_processor(
    InstructBlipMultiModalProcessor,
    info=InstructBlipProcessingInfo,
    dummy_inputs=InstructBlipDummyInputsBuilder,
)
class InstructBlipForConditionalGeneration(nn.Module, SupportsMultiModal, SupportsPP, SupportsLoRA):
    #: LoRA adapters (e.g. `vseam profile export-lora`) target the Llama language model's layers; vLLM fuses these
    packed_modules_mapping = {
        "qkv_proj": ["q_proj", "k_proj", "v_proj"],
        "gate_up_proj": ["gate_proj", "up_proj"],
    }

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        if modality.startswith("image"):
            return None  # the processor inserts the query-token placeholders itself
        raise ValueError("InstructBLIP accepts only images")

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        config: InstructBlipConfig = vllm_config.model_config.hf_config
        quant_config = vllm_config.quant_config
        self.config = config
        qcfg = config.qformer_config

        with self._mark_tower_model(vllm_config, "image"):
            self.vision_model = BlipVisionModel(
                config.vision_config, quant_config, prefix=maybe_prefix(prefix, "vision_model")
            )
            self.query_tokens = nn.Parameter(torch.zeros(1, config.num_query_tokens, qcfg.hidden_size))
            self.qformer = InstructBlipQFormer(qcfg)
            self.language_projection = nn.Linear(qcfg.hidden_size, config.text_config.hidden_size)

        with self._mark_language_model(vllm_config):
            self.language_model = init_vllm_registered_model(
                vllm_config=vllm_config,
                hf_config=config.text_config,
                prefix=maybe_prefix(prefix, "language_model"),
            )

        self.make_empty_intermediate_tensors = self.language_model.make_empty_intermediate_tensors

    # ---- image -> LM embeddings --------------------------------------------------------------------------------
    def image_embeddings(
        self,
        pixel_values: torch.Tensor,
        qformer_input_ids: torch.Tensor,
        qformer_attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        """[N, 3, H, W] images and their instructions -> [N, num_query_tokens, LM hidden]."""
        image = self.vision_model(pixel_values)
        queries = self.query_tokens.expand(image.shape[0], -1, -1).to(image.dtype)
        out = self.qformer(queries, qformer_input_ids, qformer_attention_mask, image)
        return self.language_projection(out)

    def embed_multimodal(self, **kwargs: object) -> MultiModalEmbeddings:
        pixel_values = kwargs.get("pixel_values")
        if pixel_values is None:
            return []
        if not isinstance(pixel_values, torch.Tensor):
            pixel_values = torch.stack(list(pixel_values))
        size = self.config.vision_config.image_size
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != (3, size, size):
            raise ValueError(f"pixel_values must be [N, 3, {size}, {size}], got {tuple(pixel_values.shape)}")
        if kwargs.get("qformer_input_ids") is None:
            raise ValueError("InstructBLIP image inputs need qformer_input_ids (the instruction for the Q-Former)")
        ids = _pad_rows(kwargs["qformer_input_ids"], int(self.config.qformer_config.pad_token_id or 0))
        mask = kwargs.get("qformer_attention_mask")
        mask = torch.ones_like(ids) if mask is None else _pad_rows(mask, 0)
        if ids.shape[0] != pixel_values.shape[0]:
            raise ValueError(f"{pixel_values.shape[0]} images but {ids.shape[0]} Q-Former instructions")
        device = pixel_values.device
        return self.image_embeddings(pixel_values, ids.to(device), mask.to(device))

    # ---- language model ----------------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: object,
    ) -> torch.Tensor | IntermediateTensors:
        if intermediate_tensors is not None:
            inputs_embeds = None
        return self.language_model.model(input_ids, positions, intermediate_tensors, inputs_embeds=inputs_embeds)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        return self.language_model.compute_logits(hidden_states)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        # older exports of the hub checkpoint carry the Q-Former's position_ids buffer; it is recomputed here
        loader = AutoWeightsLoader(self, ignore_unexpected_suffixes=["embeddings.position_ids"])
        return loader.load_weights(weights)

    def get_mm_mapping(self) -> MultiModelKeys:
        return MultiModelKeys.from_string_field(
            language_model="language_model",
            connector=["query_tokens", "qformer", "language_projection"],
            tower_model="vision_model",
        )
