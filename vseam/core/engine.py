"""HF reference head engine: edit individual attention-head outputs of a Hugging Face VLM's language model.

Everything vseam computes offline (triple selection, patching, attribution) and every fidelity test of the vLLM
plugin goes through this module. It supports, at the `HEAD_OUT` point of each layer (see `vseam.core.hooks`):

* per-head multiplicative scales (profile application, Eq 10; zeroing = scale 0),
* mean-of-other-heads replacement of chosen heads (Eq 5),

with **different settings per batch row**, so many ablations can share one forward pass.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from vseam.core.families import ModelFamily, family_for
from vseam.core.hooks import mean_of_other_heads, split_heads


@dataclasses.dataclass
class HeadEdits:
    """Edits of head outputs for a batch. Shapes are [B, L, H]; None means "no edit of this kind".

    scale:        multiply head h of layer l in row b by scale[b, l, h]
    mean_ablate:  replace head h of layer l in row b by the mean of the layer's other heads (Eq 5), before scaling
    """

    scale: torch.Tensor | None = None
    mean_ablate: torch.Tensor | None = None

    @staticmethod
    def from_scales(scales: np.ndarray | torch.Tensor, batch: int) -> "HeadEdits":
        s = torch.as_tensor(np.asarray(scales), dtype=torch.float32)
        if s.dim() == 2:
            s = s.unsqueeze(0).expand(batch, -1, -1)
        return HeadEdits(scale=s)

    def layer_active(self, layer: int) -> bool:
        if self.scale is not None and bool((self.scale[:, layer] != 1).any()):
            return True
        return self.mean_ablate is not None and bool(self.mean_ablate[:, layer].any())


def apply_head_edits(x: torch.Tensor, layer: int, edits: HeadEdits, num_heads: int) -> torch.Tensor:
    """Apply `edits` for one layer to an o_proj input x: [B, T, H*D] -> edited copy (x itself is not modified)."""
    a = split_heads(x, num_heads)  # [B, T, H, D]
    if edits.mean_ablate is not None:
        mask = edits.mean_ablate[:, layer].to(x.device)  # [B, H]
        if bool(mask.any()):
            a = torch.where(mask[:, None, :, None], mean_of_other_heads(a), a)
    if edits.scale is not None:
        s = edits.scale[:, layer].to(device=x.device, dtype=x.dtype)  # [B, H]
        a = a * s[:, None, :, None]
    return a.reshape(x.shape)


class HeadEngine:
    """Wraps a loaded HF VLM (LLaVA-1.5 or InstructBLIP) with head-output editing and answer scoring."""

    def __init__(self, model: torch.nn.Module, processor: Any, family: ModelFamily | None = None):
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.family = family or family_for(model.config)
        self.layers = list(self.family.lm_layers(model))
        text_cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.num_layers = len(self.layers)
        self.num_heads = int(text_cfg.num_attention_heads)
        self.head_dim = int(getattr(text_cfg, "head_dim", None) or text_cfg.hidden_size // self.num_heads)
        self._edits: HeadEdits | None = None
        self._captures: dict[int, torch.Tensor] | None = None
        self._handles = [
            self.family.o_proj(layer).register_forward_pre_hook(self._make_hook(i))
            for i, layer in enumerate(self.layers)
        ]

    # ---- loading -----------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, model_dir: str, dtype: torch.dtype = torch.float32, device: str = "cpu") -> "HeadEngine":
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

        config = AutoConfig.from_pretrained(model_dir)
        family = family_for(config)
        model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=dtype).to(device)
        processor = AutoProcessor.from_pretrained(model_dir)
        return cls(model, processor, family)

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    # ---- hooks -------------------------------------------------------------------------------------------------
    def _make_hook(self, layer: int):
        def hook(module, args):
            x = args[0]
            if self._captures is not None:
                self._captures[layer] = x.detach().clone()
            if self._edits is not None and self._edits.layer_active(layer):
                return (apply_head_edits(x, layer, self._edits, self.num_heads),) + tuple(args[1:])
            return None

        return hook

    @contextlib.contextmanager
    def edits(self, edits: HeadEdits | None) -> Iterator[None]:
        """Apply `edits` to every forward pass inside the block."""
        prev, self._edits = self._edits, edits
        try:
            yield
        finally:
            self._edits = prev

    @contextlib.contextmanager
    def capture_head_out(self) -> Iterator[dict[int, torch.Tensor]]:
        """Record each layer's o_proj input ([B, T, H*D], before edits) during the block."""
        prev, self._captures = self._captures, {}
        try:
            yield self._captures
        finally:
            self._captures = prev

    # ---- inputs ------------------------------------------------------------------------------------------------
    def encode(self, images: Sequence[Image.Image], user_texts: Sequence[str], system: str | None = None) -> dict:
        """Processor inputs for (image, user text) pairs, rendered exactly as the chat API renders them.

        Rows are left-padded, and position ids follow the attention mask, so every row computes what it would
        compute alone.
        """
        if len(images) != len(user_texts):
            raise ValueError(f"{len(images)} images but {len(user_texts)} texts")
        prompts = [self.family.render_prompt(self.processor, t, system=system) for t in user_texts]
        old_side = self.tokenizer.padding_side
        self.tokenizer.padding_side = "left"
        try:
            batch = self.processor(images=list(images), text=prompts, return_tensors="pt", padding=True)
        finally:
            self.tokenizer.padding_side = old_side
        mask = batch["attention_mask"]
        batch["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
        return dict(batch)

    def _forward_inputs(self, batch: dict) -> dict:
        device = next(self.model.parameters()).device
        out = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
        if "pixel_values" in out:
            out["pixel_values"] = out["pixel_values"].to(self.model.dtype)
        return out

    # ---- scoring -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def next_token_logprobs(self, batch: dict, edits: HeadEdits | None = None) -> torch.Tensor:
        """Log-probabilities of the next token after each row's prompt, [B, V] (float32)."""
        with self.edits(edits):
            out = self.model(**self._forward_inputs(batch), use_cache=False, logits_to_keep=1)
        return torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)

    def answer_ids(self) -> dict[str, int]:
        return self.family.answer_token_ids(self.tokenizer)

    @torch.no_grad()
    def answer_probs(self, batch: dict, edits: HeadEdits | None = None) -> dict[str, torch.Tensor]:
        """P(yes) and P(no) at the answer position for each row, plus the full next-token log-probs."""
        lp = self.next_token_logprobs(batch, edits)
        ids = self.answer_ids()
        return {"yes": lp[:, ids["yes"]].exp(), "no": lp[:, ids["no"]].exp(), "logprobs": lp}

    def binary(self, images: Sequence[Image.Image], questions: Sequence[str], scales: np.ndarray | None = None):
        """Convenience: Table-8 yes/no prompts for (image, question) pairs under optional per-head scales [L, H]."""
        batch = self.encode(images, [self.family.binary_text(q) for q in questions])
        edits = HeadEdits.from_scales(scales, len(images)) if scales is not None else None
        return self.answer_probs(batch, edits)
