"""A head profile in two engine-independent forms: a baked checkpoint and a PEFT LoRA adapter.

Scaling head h of language-model layer l by s_h is the same as multiplying the columns of that layer's `o_proj`
weight that read head h by s_h (`vseam.core.hooks`): W' = W·diag(s) = W + W·(diag(s) − I). So

* **bake** writes W' into a copy of the checkpoint (same files, same key names, only the shards that hold a
  changed `o_proj` rewritten): any engine or version that loads the original loads the edited model;
* **export-lora** writes the difference W·(diag(s) − I) as a LoRA pair B·A on `o_proj`. For layer l with n_l
  changed heads, A [r, d_in] picks the n_l·head_dim changed input columns (entries 1) and B [d_out, r] holds
  those columns of W times (s − 1), so B·A is exactly the difference; r is the largest n_l·head_dim over layers
  (a layer's rows past its own rank are zero) and lora_alpha = r, so the LoRA scaling factor alpha/r is 1.

Both read the weights from the checkpoint's safetensors files and refuse quantized `o_proj` weights (int8, fp8,
...): a scale multiplied into them would be truncated or rounded; per-request serving scales activations instead.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import shutil
import tempfile

import numpy as np
import torch

from vseam.head_profiles.model import Fingerprint, HeadProfile, ProfileError, load_profile

#: a language-model layer's o_proj weight in the hub layouts vseam serves: `language_model.model.layers.N...`
#: (LLaVA-1.5 as published, InstructBLIP) and `model.language_model.layers.N...` (LLaVA saved by transformers >= 4.52)
O_PROJ_KEY = re.compile(r"(?:^|\.)language_model\.(?:model\.)?layers\.(\d+)\.self_attn\.o_proj\.weight$")

#: name of the provenance file a baked checkpoint carries beside its config.json
BAKED_FILE = "vseam_baked_profile.json"

#: the largest LoRA rank vLLM 0.32 accepts (`--max-lora-rank`)
VLLM_MAX_LORA_RANK = 512


@dataclasses.dataclass
class WeightRef:
    layer: int
    file: pathlib.Path  # safetensors file holding it
    key: str
    shape: tuple[int, ...]
    dtype: torch.dtype


def _dtype_of(name: str) -> torch.dtype:
    table = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
             "I8": torch.int8, "U8": torch.uint8, "I16": torch.int16, "I32": torch.int32, "I64": torch.int64,
             "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}
    return table.get(name, torch.uint8)


def _safetensors_header(path: pathlib.Path) -> dict:
    """The JSON header of a safetensors file (tensor names, dtypes, shapes) without reading any tensor."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        if size <= 0 or size > 100_000_000:
            raise ProfileError(f"{path}: not a safetensors file (header size {size})")
        try:
            return json.loads(f.read(size))
        except ValueError as e:
            raise ProfileError(f"{path}: unreadable safetensors header: {e}") from None


def o_proj_weights(model_dir: pathlib.Path, fp: Fingerprint) -> dict[int, WeightRef]:
    """Every language-model layer's o_proj weight in the checkpoint (checked: one per layer, [d_out, H·head_dim])."""
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        found = sorted(p.name for p in model_dir.glob("*.bin"))
        hint = f" (found {', '.join(found[:3])}: convert them to safetensors first)" if found else ""
        raise ProfileError(f"{model_dir}: no *.safetensors weight files{hint}")
    refs: dict[int, WeightRef] = {}
    for path in files:
        for key, info in _safetensors_header(path).items():
            m = O_PROJ_KEY.search(key)
            if key == "__metadata__" or m is None:
                continue
            layer = int(m.group(1))
            if layer in refs:
                raise ProfileError(f"{model_dir}: layer {layer}'s o_proj weight appears twice ({refs[layer].key}, {key})")
            refs[layer] = WeightRef(layer, path, key, tuple(info["shape"]), _dtype_of(info["dtype"]))
    want_cols = fp.num_heads * fp.head_dim
    missing = sorted(set(range(fp.num_layers)) - set(refs))
    if missing:
        raise ProfileError(f"{model_dir}: no o_proj weight for language-model layers {missing} in its safetensors files")
    for ref in refs.values():
        if len(ref.shape) != 2 or ref.shape[1] != want_cols:
            raise ProfileError(f"{ref.file.name}: {ref.key} has shape {list(ref.shape)}; expected [d_out, {want_cols}] "
                               f"({fp.num_heads} heads x {fp.head_dim})")
    return refs


def _check_dtypes(refs: dict[int, WeightRef], layers) -> None:
    from vseam.core.hooks import unscalable_weight_reason

    for layer in layers:
        reason = unscalable_weight_reason(refs[layer].dtype)
        if reason:
            raise ProfileError(f"{refs[layer].file.name}: {refs[layer].key}: {reason}")


def _load_fitting(profile_file: str | pathlib.Path, model: str | pathlib.Path):
    from vseam.core.families import fingerprint_of, resolve_model_dir

    profile = load_profile(profile_file)
    try:
        model_dir = resolve_model_dir(model)
        fp = fingerprint_of(model)
    except (OSError, ValueError) as e:
        raise ProfileError(f"--model {model}: {e}") from None
    profile.check_fits(fp, source=str(profile_file))
    return profile, model_dir, fp


def _column_factors(scales_row: np.ndarray, head_dim: int) -> torch.Tensor:
    return torch.as_tensor(np.repeat(scales_row, head_dim), dtype=torch.float32)


def _fresh_output(out: pathlib.Path, model_dir: pathlib.Path) -> pathlib.Path:
    """A temporary folder beside `out` to build into (renamed to `out` when complete, so no half output remains)."""
    out = out.absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ProfileError(f"--out {out}: exists and is not an empty directory; choose a new path")
    if out.resolve() == model_dir.resolve():
        raise ProfileError(f"--out {out}: is the input checkpoint")
    out.parent.mkdir(parents=True, exist_ok=True)
    return pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))


def _finish(tmp: pathlib.Path, out: pathlib.Path) -> None:
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)


def _link_or_copy(src: pathlib.Path, dst: pathlib.Path) -> str:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src.resolve(), dst)
        return "linked"
    except OSError:
        shutil.copy2(src.resolve(), dst)
        return "copied"


def _provenance(profile: HeadProfile, fp: Fingerprint, model_dir: pathlib.Path, **extra) -> dict:
    from vseam import __version__

    return {
        "profile": profile.name,
        "profile_sha256": profile.content_hash(),
        "strength": profile.alpha,
        "scales": [[l, h, s] for l, h, s in profile.scale_entries()],
        "model_id": fp.model_id,
        "source": str(model_dir),
        "tool_version": __version__,
        **extra,
    }


# ---- bake ------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class BakeReport:
    out: pathlib.Path
    rewritten: list[str]  # safetensors files with at least one changed o_proj
    changed_layers: list[int]
    linked: int
    copied: int


def bake(profile_file: str | pathlib.Path, model: str | pathlib.Path, out: str | pathlib.Path) -> BakeReport:
    """Write `model` with `profile` multiplied into its o_proj weights to the new directory `out`."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    profile, model_dir, fp = _load_fitting(profile_file, model)
    out = pathlib.Path(out)
    scales = profile.scales()
    changed = [l for l in range(fp.num_layers) if np.any(scales[l] != 1.0)]
    refs = o_proj_weights(model_dir, fp)
    _check_dtypes(refs, changed)
    by_file: dict[pathlib.Path, list[WeightRef]] = {}
    for layer in changed:
        by_file.setdefault(refs[layer].file, []).append(refs[layer])

    tmp = _fresh_output(out, model_dir)
    counts = {"linked": 0, "copied": 0}
    try:
        for src in sorted(p for p in model_dir.rglob("*") if p.is_file() and not p.name.startswith(".")):
            rel = src.relative_to(model_dir)
            if src in by_file:
                with safe_open(str(src), framework="pt") as f:
                    tensors = {k: f.get_tensor(k) for k in f.keys()}
                    meta = f.metadata()
                for ref in by_file[src]:
                    w = tensors[ref.key]
                    cols = _column_factors(scales[ref.layer], fp.head_dim)
                    tensors[ref.key] = (w.float() * cols[None, :]).to(w.dtype).contiguous()
                save_file(tensors, str(tmp / rel), metadata=meta)
            else:
                counts[_link_or_copy(src, tmp / rel)] += 1
        doc = _provenance(profile, fp, model_dir, form="baked checkpoint",
                          rewritten=sorted(p.name for p in by_file), changed_layers=changed)
        (tmp / BAKED_FILE).write_text(json.dumps(doc, indent=2) + "\n")
        _finish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return BakeReport(out, sorted(p.name for p in by_file), changed, counts["linked"], counts["copied"])


# ---- LoRA --------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class LoraReport:
    out: pathlib.Path
    rank: int
    layer_ranks: dict[int, int]
    modules: list[str]
    bytes: int


def hf_o_proj_modules(model_dir: pathlib.Path, num_layers: int) -> dict[int, str]:
    """Layer -> module name of the language model's o_proj in the transformers model class (as PEFT names it)."""
    import transformers

    config = transformers.AutoConfig.from_pretrained(str(model_dir))
    arch = (config.architectures or [None])[0]
    cls = getattr(transformers, arch or "", None)
    if cls is None:
        raise ProfileError(f"{model_dir}/config.json: architecture {arch!r} is not a transformers model class")
    with torch.device("meta"):
        skeleton = cls._from_config(config)
    names = {}
    for name, _ in skeleton.named_modules():
        m = re.search(r"language_model\.(?:model\.)?layers\.(\d+)\.self_attn\.o_proj$", name)
        if m:
            names[int(m.group(1))] = name
    if sorted(names) != list(range(num_layers)):
        raise ProfileError(f"{model_dir}: {arch} has language-model o_proj modules for layers {sorted(names)}, "
                           f"expected 0..{num_layers - 1}")
    return names


def lora_ranks(scales: np.ndarray, head_dim: int) -> dict[int, int]:
    """Per layer: the LoRA rank that represents its head scales exactly (changed heads x head_dim)."""
    return {l: int(np.count_nonzero(scales[l] != 1.0)) * head_dim for l in range(scales.shape[0])}


def export_lora(profile_file: str | pathlib.Path, model: str | pathlib.Path, out: str | pathlib.Path,
                max_rank: int = VLLM_MAX_LORA_RANK, dtype: torch.dtype | None = None) -> LoraReport:
    """Write a PEFT LoRA adapter on the language model's o_proj equal to the profile's head scaling."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    profile, model_dir, fp = _load_fitting(profile_file, model)
    out = pathlib.Path(out)
    scales = profile.scales()
    ranks = lora_ranks(scales, fp.head_dim)
    rank = max(ranks.values())
    if rank == 0:
        raise ProfileError(f"{profile_file}: profile '{profile.name}' changes no head; there is nothing to export")
    if rank > max_rank:
        worst = max(ranks, key=ranks.get)
        raise ProfileError(
            f"{profile_file}: layer {worst} changes {ranks[worst] // fp.head_dim} heads x head_dim {fp.head_dim} = "
            f"LoRA rank {ranks[worst]}, above the largest rank the target engine accepts ({max_rank}; vLLM's "
            f"limit is {VLLM_MAX_LORA_RANK}). Bake the profile into a checkpoint instead (vseam profile bake)")
    refs = o_proj_weights(model_dir, fp)
    _check_dtypes(refs, [l for l, r in ranks.items() if r])
    modules = hf_o_proj_modules(model_dir, fp.num_layers)

    tensors: dict[str, torch.Tensor] = {}
    for layer in range(fp.num_layers):
        ref = refs[layer]
        d_out, d_in = ref.shape
        store = dtype or ref.dtype
        a = torch.zeros(rank, d_in, dtype=torch.float32)
        b = torch.zeros(d_out, rank, dtype=torch.float32)
        if ranks[layer]:
            factors = _column_factors(scales[layer], fp.head_dim)
            cols = torch.nonzero(factors != 1.0).flatten()
            with safe_open(str(ref.file), framework="pt") as f:
                w = f.get_tensor(ref.key).float()
            a[torch.arange(len(cols)), cols] = 1.0
            b[:, : len(cols)] = w[:, cols] * (factors[cols] - 1.0)[None, :]
        name = f"base_model.model.{modules[layer]}"
        tensors[f"{name}.lora_A.weight"] = a.to(store).contiguous()
        tensors[f"{name}.lora_B.weight"] = b.to(store).contiguous()

    config = {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": fp.model_id,
        "r": rank,
        "lora_alpha": rank,  # scaling = lora_alpha / r = 1: B·A is the whole weight change
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": False,
        "target_modules": sorted(set(modules.values())),
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
    }
    tmp = _fresh_output(out, model_dir)
    try:
        save_file(tensors, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
        doc = _provenance(profile, fp, model_dir, form="LoRA adapter", rank=rank,
                          layer_ranks={str(k): v for k, v in ranks.items()})
        (tmp / BAKED_FILE).write_text(json.dumps(doc, indent=2) + "\n")
        _finish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    return LoraReport(out, rank, ranks, [modules[l] for l in range(fp.num_layers)], size)
