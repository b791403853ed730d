"""Per-head scaling of the language model's attention output, inside vLLM.

The edit point is `vseam.core.hooks.HEAD_OUT` (`lm.layers.{l}.attn.head_out`): the input of layer l's `o_proj`,
viewed as [tokens, heads, head_dim]. In vLLM every Llama-style decoder layer builds a `LlamaAttention` whose
`o_proj` is a `RowParallelLinear`; with tensor parallelism rank r holds the contiguous block of heads
[r * H/tp, (r + 1) * H/tp), so that is the slice of each profile this rank applies.

`install()` wraps `LlamaAttention.__init__`, so the edit reaches every model whose language model is built from
vLLM's Llama layers (LLaVA-1.5; vseam's out-of-tree InstructBLIP) and nothing else. Two modes:

* static (`--fold`): one profile is multiplied into the columns of `o_proj.weight` *while the checkpoint loads*
  (vLLM on CPU repacks `o_proj` after loading and drops `.weight`, so folding later is not possible). Zero
  run-time cost.
* per-request: each `o_proj` gets a small table `head_scales[P + 1, local_heads]` (row 0 = `none`) and reads the
  shared index buffer `token_rows` (filled every step by `vseam.patches.token_profiles` from the batch layout). Its
  input is multiplied by `head_scales[token_rows[:T]]` per token and head before the projection. Both tensors
  are static buffers updated in place, so compiled graphs and CUDA graphs see the new values.

Everything this process applies lives in one `ScalingState`, owned by the plugin (`vseam.patches.plugin`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
from typing import TYPE_CHECKING

import numpy as np
import torch

from vseam.core.hooks import column_scale, head_out_name, unscalable_weight_reason
from vseam.patches.wrap import wrap_once
from vseam.serve.protocol import NONCE_XARG, NONE, SLOT_RPC, XARG, ServeConfig, echo, scale_table

if TYPE_CHECKING:
    from vseam.patches.plugin import VseamPlugin
    from vseam.patches.token_profiles import TokenRowWriter

log = logging.getLogger("vllm.vseam.patches")

#: rows of the token -> profile buffer beyond the scheduler's token budget (`max_num_batched_tokens`). vLLM 0.32's
#: runners never put more tokens than the budget into one forward pass (both assert it), so this is a safety margin
#: for a runner that pads a step past it; rows a step does not use are reset to row 0 (`none`) by the writer.
TOKEN_ROWS_SLACK = 4096


@dataclasses.dataclass
class ScalingState:
    """What this process applies: the profile table, the modules it patched and the per-request bookkeeping."""

    config: ServeConfig
    table: np.ndarray  # [P + 1, L, H] float64
    rows: dict[str, int]  # profile name -> table row (`ServeConfig.rows`)
    default_row: int
    layers: dict[int, torch.nn.Module] = dataclasses.field(default_factory=dict)  # layer -> patched o_proj
    token_rows: torch.Tensor | None = None  # shared [N] int64, per-request mode
    writer: TokenRowWriter | None = None  # fills `token_rows` (made when the first step needs it)
    request_rows: dict[str, int] = dataclasses.field(default_factory=dict)  # V2 runner: request id -> row
    warned: set[str] = dataclasses.field(default_factory=set)
    startup_digest: str | None = None

    @property
    def num_layers(self) -> int:
        return self.table.shape[1]

    @property
    def num_heads(self) -> int:
        return self.table.shape[2]

    def digest(self) -> str:
        """Identifies what this process computes (mode + scale table at startup) for vLLM's compile-cache key."""
        if self.startup_digest is None:
            h = hashlib.sha256(self.config.mode.encode())
            h.update(np.ascontiguousarray(self.table).tobytes())
            self.startup_digest = h.hexdigest()
        return self.startup_digest

    def warn_once(self, msg: str) -> None:
        if msg not in self.warned:
            if len(self.warned) < 256:  # distinct messages remembered (request-supplied names make them unbounded)
                self.warned.add(msg)
            log.warning("vseam: %s", msg)

    def set_slot(self, row: int, name: str | None, scales: list | None) -> str:
        """Write row `row` of the scale table in place (a profile loaded at run time: `name` and its [L, H]
        `scales`), or free it (`name` None: identity scales, the name forgotten). Compiled graphs read the same
        buffers, so no recompile; every tensor-parallel rank gets the call and applies its own block of heads."""
        if self.config.static:
            raise RuntimeError("vseam: profiles cannot be loaded at run time with --fold")
        if not 0 < row < self.table.shape[0]:
            raise RuntimeError(f"vseam: profile slot {row} is outside the table (1..{self.table.shape[0] - 1})")
        values = np.ones(self.table.shape[1:]) if scales is None else np.asarray(scales, dtype=np.float64)
        if values.shape != self.table.shape[1:]:
            raise RuntimeError(f"vseam: profile scales of shape {values.shape}, table rows are {self.table.shape[1:]}")
        for old in [n for n, r in self.rows.items() if r == row]:
            del self.rows[old]
        self.table[row] = values
        for layer, o_proj in self.layers.items():
            first, last = o_proj.vseam_heads
            buf = o_proj.vseam_head_scales
            buf[row].copy_(torch.as_tensor(values[layer, first:last], dtype=buf.dtype, device=buf.device))
        if name is not None:
            self.rows[name] = row
        return f"slot {row} -> {name or 'free'}"

    def row_of(self, extra_args: dict | None) -> int:
        """Table row of a request from its `SamplingParams.extra_args` (set by serve's middleware).

        A profile named without this server's nonce did not pass the middleware (so its prefix cache is not
        salted for it): such requests, like requests that name nothing, get the default profile.
        """
        extra = extra_args or {}
        name = extra.get(XARG)
        if name is None:
            return self.default_row
        if self.config.nonce and extra.get(NONCE_XARG) != self.config.nonce:
            self.warn_once(f"a request names head profile '{echo(name)}' on a route vseam serve does not resolve; "
                           f"applying the default ('{self.config.default}')")
            return self.default_row
        row = self.rows.get(name)
        if row is None:  # only when a request bypassed serve's middleware
            self.warn_once(f"request names head profile '{echo(name)}', which is not loaded; applying the default")
            return self.default_row
        return row


def build_state(config: ServeConfig) -> ScalingState:
    profiles = config.load_profiles()
    rows = config.rows()
    if config.static and len(profiles) != 1:
        raise RuntimeError(f"static (--fold) mode folds exactly one profile, got {len(profiles)}")
    default = config.default if config.default in rows else NONE
    table = scale_table(profiles, rows=1 if config.static else config.table_rows())
    return ScalingState(config=config, table=table, rows=rows, default_row=rows[default])


def install(plugin: VseamPlugin, config: ServeConfig) -> ScalingState:
    """Make every LlamaAttention built from now on apply `config` (idempotent; the last config wins)."""
    from vllm.config import VllmConfig
    from vllm.model_executor.models.llama import LlamaAttention

    plugin.scaling = build_state(config)

    def make_init(original):
        def __init__(self, *args, **kwargs):
            original(self, *args, **kwargs)
            if plugin.scaling is not None:
                patch_attention(self, plugin.scaling)

        return __init__

    def make_compute_hash(original):
        # vLLM reloads a cached compiled model without re-checking guards: a graph traced without the head scaling
        # (or with another profile table shape) must never be reused for a patched model, nor the other way round
        def compute_hash(self) -> str:
            base = original(self)
            if plugin.scaling is None:
                return base
            return hashlib.sha256(f"{base}|vseam:{plugin.scaling.digest()}".encode()).hexdigest()[: len(base)]

        return compute_hash

    wrap_once(LlamaAttention, "__init__", make_init)
    wrap_once(VllmConfig, "compute_hash", make_compute_hash)
    if not config.static:
        install_slot_rpc(plugin)
    return plugin.scaling


def install_slot_rpc(plugin: VseamPlugin) -> None:
    """Give vLLM's workers the method the admin routes call through `collective_rpc` (`SLOT_RPC`)."""
    from vllm.v1.worker.worker_base import WorkerBase

    def set_profile_slot(worker, row: int, name: str | None, scales: list | None) -> str:
        if plugin.scaling is None:
            raise RuntimeError("vseam: this worker applies no head profiles")
        return plugin.scaling.set_slot(row, name, scales)

    setattr(WorkerBase, SLOT_RPC, set_profile_slot)


# ---------------------------------------------------------------------------------------------------------------
# one attention layer


def patch_attention(attn: torch.nn.Module, state: ScalingState) -> None:
    from vllm.model_executor.models.utils import extract_layer_index

    o_proj = attn.o_proj
    layer = extract_layer_index(o_proj.prefix)
    where = f"{head_out_name(layer)} ({o_proj.prefix})"
    if attn.total_num_heads != state.num_heads or layer >= state.num_layers:
        raise RuntimeError(
            f"vseam: {where}: model has {attn.total_num_heads} heads per layer, layer index {layer}; the head "
            f"profiles are for {state.num_layers} layers x {state.num_heads} heads"
        )
    tp_rank, tp_size = int(getattr(o_proj, "tp_rank", 0)), int(getattr(o_proj, "tp_size", 1))
    local = attn.num_heads
    if local * tp_size != attn.total_num_heads:
        raise RuntimeError(f"vseam: {where}: {attn.total_num_heads} heads do not split evenly over {tp_size} ranks")
    first = tp_rank * local
    local_table = state.table[:, layer, first : first + local]  # [P + 1, local]
    if state.config.static:
        _fold_into_weight(o_proj, torch.as_tensor(local_table[1]), attn.head_dim, where)
    else:
        _scale_per_token(o_proj, torch.as_tensor(local_table), state)
    o_proj.vseam_layer = layer
    o_proj.vseam_heads = (first, first + local)
    state.layers[layer] = o_proj


# ---- static: fold into the weights while they load -----------------------------------------------------------


def _fold_into_weight(o_proj: torch.nn.Module, head_scales: torch.Tensor, head_dim: int, where: str) -> None:
    weight = getattr(o_proj, "weight", None)
    if weight is None or getattr(weight, "input_dim", 1) != 1 or weight.dim() != 2:
        raise RuntimeError(f"vseam: {where}: --fold needs an unquantized o_proj weight [out, in]; serve without --fold")
    reason = unscalable_weight_reason(weight.dtype)
    online = getattr(getattr(o_proj, "quant_method", None), "uses_meta_device", False)
    if reason is None and (weight.device.type == "meta" or online):
        # vLLM's online quantization (--quantization fp8 on an fp16 checkpoint) creates the weight on the meta device
        # and quantizes each shard as it loads: the fold would multiply into a weight that is then quantized
        reason = ("o_proj is quantized while the checkpoint loads (online quantization, e.g. --quantization fp8); "
                  "a folded scale would be rounded with it. Serve the profile per request instead (without --fold)")
    if reason:
        raise RuntimeError(f"vseam: {where}: --fold: {reason}")
    cols = column_scale(head_scales, head_dim)  # [local_heads * head_dim]
    if weight.shape[1] != cols.numel():
        raise RuntimeError(f"vseam: {where}: o_proj has {weight.shape[1]} input columns, expected {cols.numel()}")
    load = weight.weight_loader
    o_proj.vseam_folded = False

    def load_and_fold(param, loaded_weight, *args, **kwargs):
        out = load(param, loaded_weight, *args, **kwargs)
        # the loader wrote this rank's slice of the checkpoint; scale its columns (each call starts from fresh data)
        param.data.mul_(cols.to(device=param.device, dtype=param.dtype)[None, :])
        o_proj.vseam_folded = True
        return out

    weight.weight_loader = load_and_fold


# ---- per request: scale the o_proj input token by token ------------------------------------------------------


class HeadScaledProjection:
    """Mixin put in front of o_proj's own class: scale each token's heads by its request's profile row."""

    vseam_head_scales: torch.Tensor  # [P + 1, local_heads]
    vseam_token_rows: torch.Tensor  # [N] int64, shared by all layers

    def forward(self, input_):
        num_tokens = input_.shape[0]
        per_token = self.vseam_head_scales[self.vseam_token_rows[:num_tokens]]  # [T, local_heads]
        heads = input_.unflatten(-1, (per_token.shape[-1], -1))  # [T, local_heads, head_dim]
        return super().forward((heads * per_token.unsqueeze(-1)).flatten(-2))


@functools.cache
def _scaled_class(cls: type) -> type:
    """o_proj's class with `HeadScaledProjection` in front (one per class, so isinstance checks keep working)."""
    return type(f"HeadScaled{cls.__name__}", (HeadScaledProjection, cls), {})


def token_rows_size() -> int:
    """Length of the token -> row buffer: every token a forward pass can carry, plus `TOKEN_ROWS_SLACK`."""
    from vllm.config import get_current_vllm_config

    sched = get_current_vllm_config().scheduler_config
    return int(sched.max_num_batched_tokens) + TOKEN_ROWS_SLACK


def buffer_device(o_proj: torch.nn.Module) -> torch.device:
    """Where o_proj's scale buffers live: beside its weights, or, when the weights are still on the meta device
    (vLLM's online quantization materializes them shard by shard while loading), on the engine's device."""
    params = list(o_proj.parameters())
    device = params[0].device if params else torch.get_default_device()
    if device.type != "meta":
        return device
    from vllm.config import get_current_vllm_config

    engine_device = getattr(get_current_vllm_config().device_config, "device", None)
    if engine_device is None or torch.device(engine_device).type == "meta":
        raise RuntimeError("vseam: o_proj weights are on the meta device and vLLM names no device for the engine; "
                           "per-request head scaling cannot place its buffers (serve without online quantization)")
    return torch.device(engine_device)


def _scale_per_token(o_proj: torch.nn.Module, local_table: torch.Tensor, state: ScalingState) -> None:
    device = buffer_device(o_proj)
    params = list(o_proj.parameters())
    dtype = getattr(o_proj, "params_dtype", None) or (params[0].dtype if params else torch.float32)
    if state.token_rows is None:
        state.token_rows = torch.zeros(token_rows_size(), dtype=torch.long, device=device)
    o_proj.register_buffer("vseam_head_scales", local_table.to(device=device, dtype=dtype), persistent=False)
    o_proj.register_buffer("vseam_token_rows", state.token_rows, persistent=False)
    o_proj.__class__ = _scaled_class(type(o_proj))


# ---------------------------------------------------------------------------------------------------------------
# after the model loaded


def check_loaded(state: ScalingState) -> str:
    """Fail loudly if the model did not take the profiles; return a one-line summary for the log."""
    if not state.layers:
        raise RuntimeError(
            "vseam: head profiles are configured but the model built no vLLM LlamaAttention layer; "
            "this model's language model is not supported"
        )
    if state.config.static:
        missing = sorted(l for l, m in state.layers.items() if not getattr(m, "vseam_folded", False))
        if missing:
            raise RuntimeError(f"vseam: --fold: o_proj weights of layers {missing} were never loaded, nothing folded")
        return f"vseam: folded profile '{state.config.names[0]}' into o_proj of {len(state.layers)} layers"
    for layer, m in state.layers.items():
        if m.vseam_token_rows.data_ptr() != state.token_rows.data_ptr():
            raise RuntimeError(f"vseam: layer {layer} lost the shared token->profile buffer (moved after build?)")
    return (
        f"vseam: per-request head scaling on {len(state.layers)} layers, profiles "
        f"{['none', *state.config.names]}, default '{state.config.default}'"
    )
