"""Resume a language-model forward pass from a cached layer input.

Stage 2 of calibration evaluates many small interventions (one ablated head, one patched module) on the same
input. Everything before the intervened layer is identical across them, so we run the full model once, record
what each decoder layer received (hidden states + the keyword arguments the model passed: causal mask, rotary
position embeddings, position ids), and later push a batch of rows through layers l..L-1 only, computing the LM
head at the last (answer) position alone.

Rows of a replay are copies of rows of the recorded batch (`rows[i]` = which recorded row row i starts from), so
one replay can mix inputs and interventions. Interventions are applied by the caller's hooks (e.g. the
`HeadEngine` o_proj hooks with per-row `HeadEdits`); replaying with no hooks active reproduces the recorded run.

`resume_from_head_out` is the head-attribution fast path for Llama-style decoder layers (pre-norm attention and
MLP blocks, as in both supported families): it starts *inside* layer l from that layer's (edited) head outputs, so
the layer's attention is not recomputed, and computes the last layer for the answer position only (its keys and
values still come from every position). A recording checks once that the fast path reproduces the full model on
its own rows and falls back to full-layer replay otherwise.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F

from vseam.core.engine import HeadEngine


def take_rows(obj: Any, rows: torch.Tensor, batch: int) -> Any:
    """Select batch rows `rows` from every tensor in `obj` whose first dimension is the batch (recursively).

    Tensors with a leading dimension of 1 are broadcast views of per-batch data (e.g. rotary tables or a causal
    mask shared by all rows) and are expanded; anything else passes through unchanged.
    """
    if torch.is_tensor(obj):
        if obj.dim() >= 1 and obj.shape[0] == batch:
            return obj.index_select(0, rows.to(obj.device))
        if obj.dim() >= 1 and obj.shape[0] == 1 and batch != 1:
            return obj.expand(len(rows), *obj.shape[1:])
        return obj
    if isinstance(obj, tuple):
        return tuple(take_rows(o, rows, batch) for o in obj)
    if isinstance(obj, list):
        return [take_rows(o, rows, batch) for o in obj]
    if isinstance(obj, dict):
        return {k: take_rows(v, rows, batch) for k, v in obj.items()}
    return obj


@dataclasses.dataclass
class Recording:
    """What one full forward pass of a batch left behind, enough to resume it at any layer."""

    layer_inputs: list[torch.Tensor]  # per layer: hidden states entering the decoder layer, [B, T, d]
    layer_kwargs: list[dict]  # per layer: keyword arguments the model passed to the layer
    logits: torch.Tensor  # [B, V] next-token logits at the last position (float32)
    batch: int
    head_out: list[torch.Tensor] | None = None  # per layer: HEAD_OUT (o_proj input), [B, T, H*D]; fast path only

    @property
    def logprobs(self) -> torch.Tensor:
        return torch.log_softmax(self.logits, dim=-1)


class Replayer:
    """Records full forward passes of a `HeadEngine` and resumes them from any layer."""

    def __init__(self, engine: HeadEngine, fast: bool = True):
        self.engine = engine
        self.family = engine.family
        self.lm = self.family.language_model(engine.model)
        self.layers = list(self.family.lm_layers(engine.model))
        self.norm = self.lm.norm
        self.lm_head = self.family.lm_head(engine.model)
        self.fast = fast and all(_llama_style(layer) for layer in self.layers)
        self._fast_checked = False
        self._head_out_checked = False

    # ---- recording -----------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _record_layer_inputs(self) -> Iterator[tuple[list, list]]:
        inputs: list = [None] * len(self.layers)
        kwargs: list = [None] * len(self.layers)

        def make(i):
            def pre_hook(module, args, kw):
                hidden = args[0] if args else kw["hidden_states"]
                inputs[i] = hidden.detach()
                rest = {k: v for k, v in kw.items() if k != "hidden_states"}
                if len(args) > 1:  # positional extras are not used by the HF models we support
                    raise RuntimeError("decoder layer called with positional arguments beyond hidden_states")
                kwargs[i] = rest
                return None

            return pre_hook

        handles = [layer.register_forward_pre_hook(make(i), with_kwargs=True) for i, layer in enumerate(self.layers)]
        try:
            yield inputs, kwargs
        finally:
            for h in handles:
                h.remove()

    @torch.no_grad()
    def record(self, batch: dict, head_out: bool = False) -> Recording:
        """Run the full model on `batch` (no edits) and keep every decoder layer's input (and HEAD_OUT if asked
        and the fast path is available)."""
        engine = self.engine
        head_out = head_out and self.fast
        with self._record_layer_inputs() as (inputs, kwargs), engine.edits(None), _maybe(
            engine.capture_head_out() if head_out else None
        ) as captured:
            out = engine.model(**engine._forward_inputs(batch), use_cache=False, logits_to_keep=1)
        logits = out.logits[:, -1, :].float()
        rec = Recording(list(inputs), list(kwargs), logits, batch=logits.shape[0])
        if head_out:
            rec.head_out = [captured[i] for i in range(len(self.layers))]
        if self.fast and (not self._fast_checked or (head_out and not self._head_out_checked)):
            self._check_fast_path(rec)
        return rec

    def _check_fast_path(self, rec: Recording) -> None:
        """The fast paths must reproduce the recorded logits (answer-only last layer; starting from the head
        outputs of every layer); otherwise they are switched off, with a warning."""
        import warnings

        rows = torch.zeros(1, dtype=torch.long)
        results = [self.resume(rec, 0, rows, answer_only=True)]
        self._fast_checked = True
        if rec.head_out is not None:
            results += [self.resume_from_head_out(rec, l, rows, rec.head_out[l][:1]) for l in range(len(self.layers))]
            self._head_out_checked = True
        worst = max(float((r - rec.logits[:1]).abs().max()) for r in results)
        if worst > 1e-3:
            warnings.warn(f"fast replay deviates by {worst:.2e} from the full model; replaying full layers instead")
            self.fast = False

    # ---- resuming ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def resume(
        self, rec: Recording, start: int, rows: Sequence[int] | torch.Tensor, answer_only: bool = False
    ) -> torch.Tensor:
        """Logits [R, V] (float32) at the last position after running layers start..L-1 on recorded rows `rows`.

        Whatever hooks are active (head edits, patches) apply to the replayed layers only. `answer_only` evaluates
        the last layer at the answer position alone (fast path; only when the replay starts before it, so hooks
        on the starting layer still see every position).
        """
        rows = torch.as_tensor(rows, dtype=torch.long)
        hidden = rec.layer_inputs[start].index_select(0, rows.to(rec.layer_inputs[start].device))
        answer_only = answer_only and self.fast and start != len(self.layers) - 1
        return self._finish(rec, rows, hidden, start, answer_only)

    def _finish(
        self, rec: Recording, rows: torch.Tensor, hidden: torch.Tensor, start: int, answer_only: bool
    ) -> torch.Tensor:
        """Run layers start..L-1 on `hidden` (rows `rows` of `rec`), then the final norm and the LM head at the
        last position: logits [R, V] (float32). With `answer_only` the last layer runs at that position alone."""
        last = len(self.layers) - 1
        for i in range(start, len(self.layers)):
            kw = take_rows(rec.layer_kwargs[i], rows, rec.batch)
            if i == last and answer_only:
                hidden = self._answer_only(self.layers[i], hidden, kw)
                continue
            hidden = self.layers[i](hidden, **kw)
            if isinstance(hidden, tuple):  # older decoder layers return (hidden, ...)
                hidden = hidden[0]
        return self.lm_head(self.norm(hidden[:, -1:, :]))[:, -1, :].float()

    # ---- fast path (Llama-style layers) -----------------------------------------------------------------------------
    @torch.no_grad()
    def resume_from_head_out(
        self, rec: Recording, layer: int, rows: Sequence[int] | torch.Tensor, head_out: torch.Tensor
    ) -> torch.Tensor:
        """Logits [R, V] at the last position when layer `layer`'s HEAD_OUT is replaced by `head_out` [R, T, H*D]
        (rows of the recording `rows`): o_proj, the MLP block, the remaining layers, the LM head. No hooks see the
        replaced layer's o_proj; later layers run as modules (so edit hooks there would apply)."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        block = self.layers[layer]
        o_proj = self.family.o_proj(block)
        x = rec.layer_inputs[layer].index_select(0, rows.to(rec.layer_inputs[layer].device))
        last = len(self.layers) - 1
        if layer == last:  # only the answer position matters from here on
            x, head_out = x[:, -1:], head_out[:, -1:]
        h = x + F.linear(head_out.to(x.dtype), o_proj.weight, o_proj.bias)
        h = h + self.family.mlp(block)(block.post_attention_layernorm(h))
        return self._finish(rec, rows, h, layer + 1, answer_only=True)

    def _answer_only(self, block: torch.nn.Module, hidden: torch.Tensor, kw: dict) -> torch.Tensor:
        """A Llama decoder layer evaluated at the last position only ([R, 1, d]); keys/values use every position."""
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, eager_attention_forward

        attn = block.self_attn
        R, T, _ = hidden.shape
        normed = block.input_layernorm(hidden)
        q = attn.q_proj(normed[:, -1:]).view(R, 1, -1, attn.head_dim).transpose(1, 2)
        k = attn.k_proj(normed).view(R, T, -1, attn.head_dim).transpose(1, 2)
        v = attn.v_proj(normed).view(R, T, -1, attn.head_dim).transpose(1, 2)
        cos, sin = kw["position_embeddings"]
        q = apply_rotary_pos_emb(q, q, cos[:, -1:], sin[:, -1:])[0]
        k = apply_rotary_pos_emb(k, k, cos, sin)[0]
        mask = kw.get("attention_mask")
        if mask is not None:
            mask = mask[:, :, -1:, :]
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(attn.config._attn_implementation, eager_attention_forward)
        out, _ = attention(attn, q, k, v, mask, dropout=0.0, scaling=attn.scaling)
        h = hidden[:, -1:] + attn.o_proj(out.reshape(R, 1, -1))
        return h + self.family.mlp(block)(block.post_attention_layernorm(h))


def _llama_style(block: torch.nn.Module) -> bool:
    attn = getattr(block, "self_attn", None)
    return (
        attn is not None
        and all(hasattr(attn, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim", "scaling", "config"))
        and all(hasattr(block, n) for n in ("input_layernorm", "post_attention_layernorm", "mlp"))
    )


@contextlib.contextmanager
def _maybe(cm):
    if cm is None:
        yield None
    else:
        with cm as value:
            yield value
