"""A test-only vLLM logits processor that holds the engine's decoding while a file exists, so an end-to-end test
can keep requests in flight for as long as it needs, on any machine load (no race against decode speed).

Start a server with `--logits-processors hold_requests:HoldWhileFileExists` and HOLD_REQUESTS_FILE=<path> in its
environment (with this directory on PYTHONPATH); create the file to hold, remove it to release. The logits pass
through unchanged, so the answers are the ones the server gives without it."""

from __future__ import annotations

import os
import pathlib
import time

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor

#: longest hold, so a test that forgets to release fails on its own timeout instead of hanging the server
MAX_HOLD_S = 300.0


class HoldWhileFileExists(LogitsProcessor):
    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool) -> None:
        name = os.environ.get("HOLD_REQUESTS_FILE")
        self.path = pathlib.Path(name) if name else None

    def is_argmax_invariant(self) -> bool:
        return False  # so vLLM applies it to greedy requests too

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        return None

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        deadline = time.monotonic() + MAX_HOLD_S
        while self.path is not None and self.path.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return logits
