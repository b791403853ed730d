"""LLaVA-1.5 (llava-hf layout): CLIP vision tower -> 2-layer GELU projector -> Llama/Vicuna language model."""

from __future__ import annotations

from typing import Any

import torch

from vseam.core.families.base import ModelFamily

SHORT_ANSWER_SYSTEM = "A chat between a curious user and an artificial intelligence assistant."


class LlavaFamily(ModelFamily):
    name = "llava"
    architectures = ("LlavaForConditionalGeneration",)
    model_types = ("llava",)
    yes_word = "Yes"
    no_word = "No"
    short_answer_system = SHORT_ANSWER_SYSTEM

    def language_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.model.language_model

    def lm_head(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.lm_head

    def vision_embedding(self, model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
        out = model.model.vision_tower(pixel_values=pixel_values.to(model.dtype))
        return out.pooler_output

    def short_answer_text(self, question: str) -> str:
        return f"Question: {question.strip()} Context: N/A Answer the question using a single word or phrase."

    def render_prompt(self, processor: Any, user_text: str, system: str | None = None) -> str:
        messages = []
        if system:
            messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
        messages.append({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": user_text}]})
        return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def image_token_id(self, config: Any) -> int:
        return int(getattr(config, "image_token_id", None) or config.image_token_index)

    def image_grid(self, config: Any) -> tuple[int, int] | None:
        # LLaVA-1.5 ("default" feature selection drops CLS): one token per vision patch of the square input crop
        vc = config.vision_config
        side = int(vc.image_size) // int(vc.patch_size)
        return (side, side)
