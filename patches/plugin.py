"""vLLM general-plugin entry point (`vllm.general_plugins` -> `patches.plugin:register`).

vLLM calls `register()` in every process it starts (API server, engine core, workers). It must be idempotent
and a no-op for models and requests without head profiles.
"""

_REGISTERED = False


def register() -> None:
    global _REGISTERED
    if _REGISTERED:
        return
    _REGISTERED = True
    register_models()


def register_models() -> None:
    """Out-of-tree model architectures vseam adds to vLLM's registry (InstructBLIP lands with its issue)."""
    return None
