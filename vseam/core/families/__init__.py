"""Model-family adapters. `family_for(...)` is the only place that maps a checkpoint to its family."""

from __future__ import annotations

import os
import pathlib
from typing import Any

from vseam.head_profiles import Fingerprint
from vseam.core.families.base import ModelFamily, read_config
from vseam.core.families.instructblip import InstructBlipFamily
from vseam.core.families.llava import LlavaFamily

FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (LlavaFamily(), InstructBlipFamily())}

#: what `--model llava` / `--model instructblip` mean when no directory is given
DEFAULT_MODEL_IDS = {
    "llava": "llava-hf/llava-1.5-7b-hf",
    "instructblip": "Salesforce/instructblip-vicuna-7b",
}


def family_for(config: dict | Any) -> ModelFamily:
    """The family of a model config (a config.json dict or a transformers config object)."""
    if not isinstance(config, dict):
        config = config.to_dict()
    archs = config.get("architectures") or []
    mtype = config.get("model_type")
    for fam in FAMILIES.values():
        if any(a in fam.architectures for a in archs) or mtype in fam.model_types:
            return fam
    supported = ", ".join(a for f in FAMILIES.values() for a in f.architectures)
    raise ValueError(f"unsupported model (architectures={archs}, model_type={mtype!r}); vseam supports {supported}")


def model_id_of(model_dir: str | pathlib.Path, config: dict) -> str:
    name = config.get("_name_or_path") or config.get("vseam_model_id")
    return str(name) if name else pathlib.Path(model_dir).name


#: the files a checkpoint download fetches (weights as safetensors; no duplicate .bin/.pth/.h5 copies)
DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken", "*.py"]


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve_model_dir(model: str | pathlib.Path, download: bool = False) -> pathlib.Path:
    """A local checkpoint directory for `model`: the path itself, or a hub id's snapshot in the local HF cache.

    With `download`, a hub id that is not in the cache is downloaded (huggingface_hub's progress bars) unless
    HF_HUB_OFFLINE is set; then the error says how to get it."""
    path = pathlib.Path(model)
    if path.is_dir():
        return path
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(str(model), "config.json")
    except Exception:  # invalid repo id etc.
        cached = None
    if isinstance(cached, str):
        return pathlib.Path(cached).parent
    looks_like_hub_id = "/" in str(model) and not str(model).startswith((".", "/", "~")) and not path.exists()
    if not download or not looks_like_hub_id:
        raise FileNotFoundError(f"{model}: no such checkpoint directory (and not in the local Hugging Face cache)")
    if hub_offline():
        raise FileNotFoundError(f"{model}: not in the local Hugging Face cache, and HF_HUB_OFFLINE is set, so it is "
                                f"not downloaded; unset HF_HUB_OFFLINE, or fetch it first "
                                f"(huggingface-cli download {model})")
    from huggingface_hub import snapshot_download

    try:
        return pathlib.Path(snapshot_download(str(model), allow_patterns=DOWNLOAD_PATTERNS))
    except Exception as e:  # no network, unknown or gated repo, disk full: one line naming the model
        raise FileNotFoundError(f"{model}: not in the local Hugging Face cache and the download failed: "
                                f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None


def fingerprint_of(model: str | pathlib.Path) -> Fingerprint:
    """Fingerprint of a checkpoint (directory or cached hub id), from its config.json alone (no weights are read)."""
    model_dir = resolve_model_dir(model)
    cfg = read_config(model_dir)
    model_id = str(model) if not pathlib.Path(model).is_dir() else model_id_of(model_dir, cfg)
    return family_for(cfg).fingerprint(cfg, model_id)


__all__ = [
    "FAMILIES",
    "DEFAULT_MODEL_IDS",
    "ModelFamily",
    "family_for",
    "fingerprint_of",
    "read_config",
    "resolve_model_dir",
]
