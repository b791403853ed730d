"""Resume a language-model forward pass from a cached layer input.

Stage 2 of calibration evaluates many small interventions (one ablated head, one patched module) on the same
input. Everything before the intervened layer is identical across them, so we run the full model once, record
what each decoder layer received (hidden states + the keyword arguments the model passed: causal mask, rotary
position embeddings, position ids), and later push a batch of rows through layers l..L-1 only, computing the LM
head at the last (answer) position alone.

Rows of a replay are copies of rows of the recorded batch (`rows[i]` = which recorded row row i starts from), so
one replay can mix inputs and interventions. Interventions are applied by the caller's hooks (e.g. the
`HeadEngine` o_proj hooks with per-row `HeadEdits`); replaying with no hooks active reproduces the recorded run.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Iterator, Sequence

import torch

from vseam.engine import HeadEngine


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

    @property
    def logprobs(self) -> torch.Tensor:
        return torch.log_softmax(self.logits, dim=-1)


class Replayer:
    """Records full forward passes of a `HeadEngine` and resumes them from any layer."""

    def __init__(self, engine: HeadEngine):
        self.engine = engine
        self.family = engine.family
        self.lm = self.family.language_model(engine.model)
        self.layers = list(self.family.lm_layers(engine.model))
        self.norm = self.lm.norm
        self.lm_head = self.family.lm_head(engine.model)

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
    def record(self, batch: dict) -> Recording:
        """Run the full model on `batch` (no edits) and keep every decoder layer's input."""
        engine = self.engine
        with self._record_layer_inputs() as (inputs, kwargs), engine.edits(None):
            out = engine.model(**engine._forward_inputs(batch), use_cache=False, logits_to_keep=1)
        logits = out.logits[:, -1, :].float()
        return Recording(list(inputs), list(kwargs), logits, batch=logits.shape[0])

    # ---- resuming ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def resume(self, rec: Recording, start: int, rows: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Logits [R, V] (float32) at the last position after running layers start..L-1 on recorded rows `rows`.

        Whatever hooks are active (head edits, patches) apply to the replayed layers only.
        """
        rows = torch.as_tensor(rows, dtype=torch.long)
        hidden = rec.layer_inputs[start].index_select(0, rows.to(rec.layer_inputs[start].device))
        for i in range(start, len(self.layers)):
            kw = take_rows(rec.layer_kwargs[i], rows, rec.batch)
            hidden = self.layers[i](hidden, **kw)
            if isinstance(hidden, tuple):  # older decoder layers return (hidden, ...)
                hidden = hidden[0]
        last = self.norm(hidden[:, -1:, :])
        return self.lm_head(last)[:, -1, :].float()
