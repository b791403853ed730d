"""Model-family adapters. `family_for(...)` is the only place that maps a checkpoint to its family."""

from __future__ import annotations

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


def resolve_model_dir(model: str | pathlib.Path) -> pathlib.Path:
    """A local checkpoint directory for `model`: the path itself, or a hub id's snapshot in the local HF cache."""
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
    raise FileNotFoundError(f"{model}: no such checkpoint directory (and not in the local Hugging Face cache)")


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
