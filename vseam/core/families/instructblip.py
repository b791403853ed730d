"""InstructBLIP (Vicuna): ViT -> Q-Former reading the instruction text -> projection -> Llama/Vicuna LM."""

from __future__ import annotations

from typing import Any

import torch

from vseam.core.families.base import ModelFamily


class InstructBlipFamily(ModelFamily):
    name = "instructblip"
    architectures = ("InstructBlipForConditionalGeneration",)
    model_types = ("instructblip",)
    yes_word = "yes"
    no_word = "no"
    short_answer_system = None

    def language_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.language_model.model

    def lm_head(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.language_model.lm_head

    def vision_embedding(self, model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
        out = model.vision_model(pixel_values=pixel_values.to(model.dtype))
        return out.pooler_output

    def short_answer_text(self, question: str) -> str:
        return f"Question: {question.strip()} Short Answer:"

    def render_prompt(self, processor: Any, user_text: str, system: str | None = None) -> str:
        # Table 8: "<Image> Question: ...". The HF processor puts the query-token placeholders first itself and
        # feeds the same text to the Q-Former; a system text, if any, precedes the question.
        return f"{system} {user_text}" if system else user_text

    def image_token_id(self, config: Any) -> int:
        tid = getattr(config, "image_token_id", None)
        if tid is None:
            tid = getattr(config, "image_token_index", None)
        if tid is None:
            raise ValueError("InstructBLIP config has no image_token_index; the processor cannot place query tokens")
        return int(tid)
