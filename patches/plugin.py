"""vLLM general-plugin entry point (`vllm.general_plugins` -> `patches.plugin:register`)."""


def register() -> None:
    """Called by vLLM in every process. A no-op until head profiles are configured."""
    return None
