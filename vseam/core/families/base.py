"""What the rest of vseam needs to know about a model family, in one place per family.

The HF reference engine, calibration, the vLLM plugin and evaluation all ask the family adapter for: where the
language-model layers live, the prompt templates of the paper's Table 8, the yes/no answer tokens, and where the
image tokens sit in the input. Nothing else in vseam tests model names.
"""

from __future__ import annotations

import json
import pathlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from vseam.head_profiles import Fingerprint

#: The instruction of Table 8 for binary (yes/no) tasks; the two families differ only in the case of "Yes or No".
BINARY_SUFFIX = "Please answer the question using {yes} or {no}."


@dataclass(frozen=True)
class PromptParts:
    """A user turn as sent through the OpenAI chat API: one image followed by this text."""

    text: str


class ModelFamily(ABC):
    """Adapter for one VLM family (LLaVA-1.5, InstructBLIP)."""

    name: str
    architectures: tuple[str, ...]
    model_types: tuple[str, ...]
    #: the answer words this family is prompted to produce, in the case its Table 8 prompt asks for
    yes_word: str
    no_word: str

    # ---- config ------------------------------------------------------------------------------------------------
    @staticmethod
    def text_config(cfg: dict) -> dict:
        return cfg.get("text_config") or {}

    def fingerprint(self, cfg: dict, model_id: str) -> Fingerprint:
        tc = self.text_config(cfg)
        hidden = int(tc.get("hidden_size", 4096))
        heads = int(tc.get("num_attention_heads", 32))
        head_dim = int(tc.get("head_dim") or hidden // heads)
        return Fingerprint(
            architecture=cfg.get("architectures", [self.architectures[0]])[0],
            model_id=model_id,
            num_layers=int(tc.get("num_hidden_layers", 32)),
            num_heads=heads,
            head_dim=head_dim,
            hidden_size=hidden,
            vocab_size=int(tc.get("vocab_size") or cfg.get("vocab_size") or 32000),
        )

    # ---- modules -----------------------------------------------------------------------------------------------
    @abstractmethod
    def language_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The decoder stack (a LlamaModel: embed_tokens, layers, norm)."""

    @abstractmethod
    def lm_head(self, model: torch.nn.Module) -> torch.nn.Module: ...

    def lm_layers(self, model: torch.nn.Module) -> Sequence[torch.nn.Module]:
        return self.language_model(model).layers

    def o_proj(self, layer: torch.nn.Module) -> torch.nn.Linear:
        return layer.self_attn.o_proj

    def mlp(self, layer: torch.nn.Module) -> torch.nn.Module:
        """The MLP block of a decoder layer (its output is added to the residual stream)."""
        return layer.mlp

    def image_grid(self, config: Any) -> tuple[int, int] | None:
        """(rows, cols) of the patch grid the image tokens come from, row-major; None if they have no layout."""
        return None

    @abstractmethod
    def vision_embedding(self, model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
        """A global image feature from the model's own vision encoder, [B, D] (used for edit quality checks)."""

    # ---- prompts (Table 8) ---------------------------------------------------------------------------------------
    def binary_text(self, question: str) -> str:
        q = question.strip()
        return f"Question: {q} " + BINARY_SUFFIX.format(yes=self.yes_word, no=self.no_word)

    @abstractmethod
    def short_answer_text(self, question: str) -> str: ...

    @abstractmethod
    def render_prompt(self, processor: Any, user_text: str) -> str:
        """The text handed to the HF processor for one image + `user_text` (what vLLM's chat template renders)."""

    def chat_messages(self, user_text: str, image_url: str) -> list[dict]:
        """The same turn as OpenAI chat messages (image first, as in Table 8)."""
        return [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": image_url}},
                    {"type": "text", "text": user_text},
                ],
            }
        ]

    #: extra fields every chat request needs so the server tokenizes exactly like `render_prompt` + processor
    chat_extra_body: dict = {"add_special_tokens": True}

    # ---- tokens ------------------------------------------------------------------------------------------------
    def answer_token_ids(self, tokenizer: Any, prompt: str | None = None) -> dict[str, int]:
        """Token id of the first token of each answer word when it follows the prompt."""
        prompt = prompt if prompt is not None else "ASSISTANT:"
        base = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        out = {}
        for key, word in (("yes", self.yes_word), ("no", self.no_word)):
            ids = tokenizer(prompt + " " + word, add_special_tokens=False)["input_ids"]
            k = 0
            while k < min(len(base), len(ids)) and base[k] == ids[k]:
                k += 1
            if k >= len(ids):
                raise ValueError(f"tokenizer produced no token for answer word {word!r}")
            out[key] = ids[k]
        return out

    @abstractmethod
    def image_token_id(self, config: Any) -> int: ...

    def image_positions(self, input_ids: torch.Tensor, config: Any) -> torch.Tensor:
        """Boolean mask [B, T] of positions that carry image features in the language model."""
        return input_ids == self.image_token_id(config)


def read_config(model_dir: str | pathlib.Path) -> dict:
    path = pathlib.Path(model_dir) / "config.json"
    try:
        return json.loads(path.read_text())
    except OSError as e:
        raise FileNotFoundError(f"{path}: cannot read model config ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg})") from None
