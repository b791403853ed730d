"""Portable profiles (`vseam profile bake` / `export-lora`), checked on tiny real-layout checkpoints (fp32).

* The baked checkpoint, loaded by plain transformers, and the LoRA adapter, loaded by PEFT onto the unedited
  transformers model, give the next-token logprobs of the HF reference engine applying the profile (<= 1e-4).
* The baked directory keeps the input's files and key names; only shards with a changed o_proj are rewritten.
* Quantized o_proj weights (int8, fp8) are refused by bake, export-lora and the vLLM plugin's fold, naming the dtype;
  nothing is written. A LoRA rank above the engine's limit is refused, naming the layer and its head count.
"""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import pytest
import torch

from conftest import random_image
from vllm_server import write_profile

TOL = 1e-4
QUESTIONS = ["Is the cat red?", "Is there a dog on the table?", "What color is the car?"]


def _profile(model_dir, out_dir, name="p1"):
    # two heads in layer 0, one in layer 1, strong enough to move logprobs well past the tolerance
    return write_profile(model_dir, out_dir, name, "attribute", positive="L0.H1=0.9,L1.H3=0.6", negative="L0.H2=1")


def _load_hf(model_dir):
    import transformers

    from vseam.core.families import read_config

    cls = getattr(transformers, read_config(model_dir)["architectures"][0])
    return cls.from_pretrained(str(model_dir), dtype=torch.float32).eval()


@torch.no_grad()
def _logprobs(model, batch) -> torch.Tensor:
    return torch.log_softmax(model(**batch, use_cache=False).logits[:, -1].float(), -1)


@pytest.fixture(scope="module", params=["llava", "instructblip"])
def case(request, tiny_llava_dir, tiny_instructblip_dir, tmp_path_factory):
    """(model dir, profile file, HF engine, batch, reference logprobs with the profile, logprobs without)."""
    from vseam.core.engine import HeadEdits, HeadEngine
    from vseam.head_profiles import load_profile

    model_dir = {"llava": tiny_llava_dir, "instructblip": tiny_instructblip_dir}[request.param]
    out = tmp_path_factory.mktemp(f"portable-{request.param}")
    profile_file = _profile(model_dir, out)
    engine = HeadEngine.from_pretrained(str(model_dir))
    images = [random_image(i + 40) for i in range(len(QUESTIONS))]
    batch = engine.encode(images, [engine.family.binary_text(q) for q in QUESTIONS])
    edits = HeadEdits.from_scales(load_profile(profile_file).scales(), len(QUESTIONS))
    want = engine.next_token_logprobs(batch, edits)
    plain = engine.next_token_logprobs(batch)
    assert (want - plain).abs().max() > 1e-2, "the profile must move the logprobs (else the check is vacuous)"
    yield dict(model_dir=model_dir, profile=profile_file, engine=engine, batch=engine._forward_inputs(batch),
               want=want, out=out)
    engine.close()


def test_baked_checkpoint_loads_in_transformers_and_matches_the_engine(case):
    from vseam.head_profiles.portable import BAKED_FILE, bake

    out = case["out"] / "baked"
    report = bake(case["profile"], case["model_dir"], out)
    got = _logprobs(_load_hf(out), case["batch"])
    gap = float((got - case["want"]).abs().max())
    print(f"\nbaked checkpoint vs HF engine with the profile: max |Δ logprob| = {gap:.2e}")
    assert gap <= TOL

    def files(d):
        return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())

    src = files(case["model_dir"])
    assert files(out) == sorted(src + [BAKED_FILE])
    assert report.changed_layers == [0, 1]
    index = json.loads((case["model_dir"] / "model.safetensors.index.json").read_text())["weight_map"]
    holding = sorted({index[k] for k in index if k.endswith("self_attn.o_proj.weight")})
    assert report.rewritten == holding
    for name in src:  # unchanged files are hard links of the input's (same inode), rewritten ones are new files
        same = os.stat(out / name).st_ino == os.stat(case["model_dir"] / name).st_ino
        assert same == (name not in holding), name
    from safetensors import safe_open

    for shard in holding:
        with safe_open(str(out / shard), "pt") as a, safe_open(str(case["model_dir"] / shard), "pt") as b:
            assert sorted(a.keys()) == sorted(b.keys())
            for k in a.keys():
                changed = not torch.equal(a.get_tensor(k), b.get_tensor(k))
                assert changed == k.endswith("self_attn.o_proj.weight"), k
    doc = json.loads((out / BAKED_FILE).read_text())
    from vseam.head_profiles import load_profile

    assert doc["profile"] == "p1" and doc["profile_sha256"] == load_profile(case["profile"]).content_hash()
    assert doc["strength"] == 1.0


def test_lora_adapter_loaded_by_peft_matches_the_engine(case):
    from peft import PeftModel

    from vseam.head_profiles.portable import export_lora

    out = case["out"] / "lora"
    report = export_lora(case["profile"], case["model_dir"], out)
    head_dim = case["engine"].model.config.text_config.head_dim
    assert report.rank == 2 * head_dim and report.layer_ranks == {0: 2 * head_dim, 1: head_dim}
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == cfg["lora_alpha"] == report.rank
    model = PeftModel.from_pretrained(_load_hf(case["model_dir"]), str(out)).eval()
    got = _logprobs(model, case["batch"])
    gap = float((got - case["want"]).abs().max())
    print(f"\nPEFT LoRA adapter vs HF engine with the profile: max |Δ logprob| = {gap:.2e}")
    assert gap <= TOL


def test_lora_rank_above_the_engine_limit_is_refused(case):
    from vseam.head_profiles import ProfileError
    from vseam.head_profiles.portable import export_lora

    out = case["out"] / "lora-too-big"
    with pytest.raises(ProfileError, match=r"layer 0 changes 2 heads x head_dim 32 = LoRA rank 64, above .* \(32"):
        export_lora(case["profile"], case["model_dir"], out, max_rank=32)
    assert not out.exists()


def _quantized_copy(model_dir: pathlib.Path, dest: pathlib.Path, dtype: torch.dtype) -> pathlib.Path:
    """A copy of `model_dir` whose layer-1 o_proj weight is stored as `dtype`, as a quantized checkpoint's is."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    import shutil

    shutil.copytree(model_dir, dest)
    for src in model_dir.glob("*.safetensors"):
        with safe_open(str(src), "pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        for k in tensors:
            if k.endswith("layers.1.self_attn.o_proj.weight"):
                tensors[k] = tensors[k].clamp(-1, 1).mul(100).to(dtype)
        save_file(tensors, str(dest / src.name), metadata={"format": "pt"})
    return dest


@pytest.mark.parametrize("dtype, shown", [(torch.int8, "int8"), (torch.float8_e4m3fn, "float8_e4m3fn")])
def test_quantized_weights_are_refused_and_nothing_is_written(case, dtype, shown):
    from vseam.head_profiles import ProfileError
    from vseam.head_profiles.portable import bake, export_lora

    q = _quantized_copy(case["model_dir"], case["out"] / f"q-{shown}", dtype)
    for action, out in ((bake, case["out"] / f"baked-{shown}"), (export_lora, case["out"] / f"lora-{shown}")):
        with pytest.raises(ProfileError, match=rf"layers\.1\.self_attn\.o_proj\.weight: o_proj weight is stored as "
                                               rf"{shown} .*per request"):
            action(case["profile"], q, out)
        assert not out.exists() and not list(out.parent.glob(f".{out.name}.partial-*"))


def test_bake_refuses_an_existing_output_and_a_profile_for_another_model(case, tiny_llava_dir, tiny_instructblip_dir):
    from vseam.head_profiles import ProfileError
    from vseam.head_profiles.portable import bake

    busy = case["out"] / "busy"
    busy.mkdir(exist_ok=True)
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(ProfileError, match="exists and is not an empty directory"):
        bake(case["profile"], case["model_dir"], busy)
    assert (busy / "keep.txt").read_text() == "mine"
    other = tiny_instructblip_dir if case["model_dir"] == tiny_llava_dir else tiny_llava_dir
    with pytest.raises(ProfileError, match="does not fit"):
        bake(case["profile"], other, case["out"] / "wrong-model")


def test_cli_bake_and_export_lora(case, capsys):
    from vseam.cli import main

    out = case["out"] / "cli"
    assert main(["profile", "bake", str(case["profile"]), "--model", str(case["model_dir"]), "--out", str(out / "b")]) == 0
    assert main(["profile", "export-lora", str(case["profile"]), "--model", str(case["model_dir"]),
                 "--out", str(out / "l")]) == 0
    text = capsys.readouterr().out
    assert "scaled in" in text and "LoRA adapter of rank 64" in text
    assert main(["profile", "export-lora", str(case["profile"]), "--model", str(case["model_dir"]),
                 "--out", str(out / "l2"), "--max-rank", "8"]) == 1
    assert "layer 0 changes 2 heads" in capsys.readouterr().err


# ---- the vLLM plugin's fold and per-request buffers --------------------------------------------------------------


class _Projection(torch.nn.Module):
    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = torch.nn.Parameter(weight, requires_grad=False)
        self.weight.input_dim = 1
        self.weight.weight_loader = lambda p, w: p.data.copy_(w)


@pytest.mark.parametrize("dtype, shown", [(torch.int8, "int8"), (torch.float8_e4m3fn, "float8_e4m3fn")])
def test_fold_refuses_quantized_weights(dtype, shown):
    from vseam.patches.head_scaling import _fold_into_weight

    proj = _Projection(torch.zeros(16, 4 * 32, dtype=dtype))
    with pytest.raises(RuntimeError, match=rf"--fold: o_proj weight is stored as {shown}.*per request"):
        _fold_into_weight(proj, torch.tensor([0.9, 0.5, 0.7, 1.3]), 32, "layer 0")


def test_fold_refuses_online_quantization_and_per_request_buffers_avoid_the_meta_device():
    from vllm.config import VllmConfig, set_current_vllm_config

    from vseam.patches.head_scaling import _fold_into_weight, buffer_device

    proj = _Projection(torch.empty(16, 4 * 32, device="meta"))
    with pytest.raises(RuntimeError, match="online quantization"):
        _fold_into_weight(proj, torch.tensor([0.9, 0.5, 0.7, 1.3]), 32, "layer 0")
    with set_current_vllm_config(VllmConfig()):
        assert buffer_device(proj).type == "cpu"
    assert buffer_device(_Projection(torch.zeros(2, 2))).type == "cpu"
