"""The one intervention point vseam edits, named once.

`HEAD_OUT` — the output of every attention head of language-model layer l, i.e. the *input* of that layer's
`o_proj`, viewed as [tokens, heads, head_dim] (concatenated heads, before the output projection mixes them).
Scaling head h there by s is the same as scaling columns [h*head_dim, (h+1)*head_dim) of `o_proj.weight` by s;
that identity is what lets the vLLM plugin fold a static profile into the weights.

Names follow TransformerLens' `blocks.{l}.attn.hook_z` convention; the HF engine (`vseam.core.engine`), the vLLM
patch (`vseam.patches.head_scaling`) and the docs all use this name.
"""

from __future__ import annotations

import torch

HEAD_OUT = "lm.layers.{layer}.attn.head_out"


def head_out_name(layer: int) -> str:
    return HEAD_OUT.format(layer=layer)


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[..., H*D] -> [..., H, D] (a view)."""
    return x.view(*x.shape[:-1], num_heads, x.shape[-1] // num_heads)


def mean_of_other_heads(a: torch.Tensor) -> torch.Tensor:
    """Eq 5: for every head h, the average of the other H-1 heads' outputs. a: [..., H, D] -> [..., H, D]."""
    num_heads = a.shape[-2]
    if num_heads < 2:
        raise ValueError("mean-of-other-heads ablation needs at least 2 heads")
    total = a.sum(dim=-2, keepdim=True)
    return (total - a) / (num_heads - 1)


def column_scale(scales: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Per-head scales [..., H] -> per-column scales [..., H*head_dim] of the o_proj input (for weight folding)."""
    return scales.repeat_interleave(head_dim, dim=-1)


#: weight dtypes a head scale can be multiplied into without losing it. An int8 or fp8 weight would truncate or
#: round the product (int8: 0.9 -> 0, heads silently zeroed); such checkpoints need activation-side scaling
#: (vseam serve's per-request mode).
SCALABLE_WEIGHT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def unscalable_weight_reason(dtype: torch.dtype) -> str | None:
    """Why head scales cannot be folded into an o_proj weight of `dtype` (None when they can)."""
    if dtype in SCALABLE_WEIGHT_DTYPES:
        return None
    return (f"o_proj weight is stored as {str(dtype).removeprefix('torch.')} (quantized); multiplying head scales "
            f"into it would truncate or round them. Serve the profile per request instead (vseam serve without "
            f"--fold), which scales the attention outputs and is right for quantized checkpoints")
