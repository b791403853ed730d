"""The plugin's pieces without a running server: registration, version pin, token rows, scaling and folding math."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from vseam.serve.protocol import ENV_VAR, ProfileEntry, ServeConfig, scale_table
from vseam.patches.plugin import UnsupportedVllmVersion, check_vllm_version
from vllm_server import write_profile


@pytest.fixture(scope="module")
def profiles(tiny_llava_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("plugin-unit")
    return [
        write_profile(tiny_llava_dir, out, "colors", "attribute", "L0.H1=0.9", "L1.H2=1"),
        write_profile(tiny_llava_dir, out, "where", "relation", "L1.H3=1,L0.H3=0.5", "L0.H0=0.7"),
    ]


def config_of(profiles, mode="per-request") -> ServeConfig:
    from vseam.head_profiles import load_profile

    return ServeConfig(mode=mode, profiles=[ProfileEntry.of(load_profile(p)) for p in profiles])


def test_version_pin():
    assert check_vllm_version().startswith("0.32.")
    assert check_vllm_version("0.32.7+cpu") == "0.32.7+cpu"
    for other in ("0.33.0", "0.31.2", "1.32.0"):
        with pytest.raises(UnsupportedVllmVersion, match=f"written for vLLM 0.32.x, but vLLM {other}"):
            check_vllm_version(other)


def test_scale_table_rows_follow_the_config(profiles):
    from vseam.head_profiles import load_profile

    config = config_of(profiles)
    table = scale_table(config.load_profiles())
    assert table.shape == (3, 2, 4)
    assert (table[0] == 1).all()
    np.testing.assert_array_equal(table[1], load_profile(profiles[0]).scales())
    np.testing.assert_array_equal(table[2], load_profile(profiles[1]).scales())
    assert config.rows() == {"none": 0, "colors": 1, "where": 2}


def test_tables_honour_the_profile_strength(profiles, tmp_path):
    """Per-request rows and the folded row both come from the profile's scales: 1 + αλ and 1 − αλ."""
    from vseam.head_profiles import load_profile
    from vseam.patches.head_scaling import build_state

    half = load_profile(profiles[1]).model_copy(update={"strength": 0.5}).save(tmp_path / "where.json")
    for mode in ("per-request", "static"):
        state = build_state(config_of([half], mode=mode))
        s = state.table[1]
        assert s[1, 3] == 1.5 and s[0, 3] == 1.25 and s[0, 0] == pytest.approx(1 - 0.35)
        assert np.count_nonzero(s != 1) == 3


def test_runner_honours_only_profiles_the_middleware_resolved(profiles):
    from vseam.patches.head_scaling import build_state

    config = config_of(profiles).model_copy(update={"default": "colors", "nonce": "abc"})
    state = build_state(config)
    assert state.row_of(None) == state.row_of({}) == 1  # default
    assert state.row_of({"head_profile": "where", "vseam_nonce": "abc"}) == 2
    assert state.row_of({"head_profile": "none", "vseam_nonce": "abc"}) == 0
    # a profile chosen on a route the middleware does not resolve (no/forged nonce): default, never unsalted 'where'
    assert state.row_of({"head_profile": "where"}) == 1
    assert state.row_of({"head_profile": "where", "vseam_nonce": "guess"}) == 1


REGISTER_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import vseam.patches.plugin as plugin
    from vllm.model_executor.models.llama import LlamaAttention
    from vllm.config import VllmConfig
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner
    original = LlamaAttention.__init__
    plugin.register(); plugin.register()
    out = {"wrapped": LlamaAttention.__init__ is not original,
           "double": hasattr(getattr(LlamaAttention.__init__, "__wrapped__", None), "__wrapped__"),
           "runner_hooked": getattr(GPUModelRunner._prepare_inputs, "__vseam__", False),
           "hash_keyed": hasattr(VllmConfig.compute_hash, "__wrapped__")}
    print("RESULT" + json.dumps(out))
    """
)


def run_register(env_value: str | None) -> dict:
    import json
    import os

    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    if env_value is not None:
        env[ENV_VAR] = env_value
    proc = subprocess.run([sys.executable, "-c", REGISTER_SCRIPT], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


def test_register_is_a_no_op_without_config():
    assert run_register(None) == {"wrapped": False, "double": False, "runner_hooked": False, "hash_keyed": False}


def test_register_installs_once_with_config(profiles):
    assert run_register(config_of(profiles).to_env()) == {
        "wrapped": True, "double": False, "runner_hooked": True, "hash_keyed": True
    }


def test_register_refuses_a_broken_config():
    proc = subprocess.run([sys.executable, "-c", "import vseam.patches.plugin as p; p.register()"], capture_output=True,
                          text=True, env={**__import__("os").environ, ENV_VAR: "{not json"}, timeout=300)
    assert proc.returncode != 0 and f"{ENV_VAR} is set but is not a valid vseam serve config" in proc.stderr


def test_token_rows_expand_requests_and_reset_padding():
    from vseam.patches.token_profiles import TokenRowWriter

    buf = torch.full((16,), 7, dtype=torch.long)
    w = TokenRowWriter(buf)
    assert w.write(np.array([1, 0, 2]), np.array([2, 3, 1])) == 6
    assert buf[:6].tolist() == [1, 1, 0, 0, 0, 2]
    w.write(np.array([2]), np.array([1]))  # a smaller step: the stale tail goes back to row 0
    assert buf[:6].tolist() == [2, 0, 0, 0, 0, 0]
    with pytest.raises(RuntimeError, match="step has 17 tokens"):
        w.write(np.array([1]), np.array([17]))


class PlainProjection(torch.nn.Linear):
    """Stands in for o_proj's own class (RowParallelLinear): forward(input) -> (output, bias)."""

    def forward(self, input_):
        return super().forward(input_), None


def test_per_token_scaling_matches_the_reference_engine(profiles):
    """Mixed batch: every token gets its own request's scales; equals the HF engine's per-row head edits."""
    from vseam.patches.head_scaling import _scaled_class
    from vseam.core.engine import HeadEdits, apply_head_edits

    table = torch.as_tensor(scale_table(config_of(profiles).load_profiles()), dtype=torch.float32)  # [3, L, H]
    layer, heads, head_dim = 1, 4, 32
    torch.manual_seed(0)
    proj = PlainProjection(heads * head_dim, 16, bias=False)
    plain = PlainProjection(heads * head_dim, 16, bias=False)
    plain.load_state_dict(proj.state_dict())
    rows = torch.zeros(64, dtype=torch.long)
    proj.register_buffer("vseam_head_scales", table[:, layer].clone(), persistent=False)
    proj.register_buffer("vseam_token_rows", rows, persistent=False)
    proj.__class__ = _scaled_class(PlainProjection)

    requests = [(1, 3), (0, 2), (2, 4)]  # (profile row, tokens)
    x = torch.randn(sum(n for _, n in requests), heads * head_dim)
    rows[: x.shape[0]] = torch.tensor([r for r, n in requests for _ in range(n)])
    got, _ = proj(x)
    start = 0
    for row, n in requests:
        edits = HeadEdits.from_scales(table[row].numpy(), 1)
        want, _ = plain(apply_head_edits(x[None, start : start + n], layer, edits, heads)[0])
        torch.testing.assert_close(got[start : start + n], want, rtol=0, atol=1e-6)
        start += n
    assert not torch.allclose(got[:3], plain(x[:3])[0], atol=1e-3)  # the profile really changed something


def test_folding_scales_weight_columns_while_loading(profiles):
    from vseam.patches.head_scaling import _fold_into_weight

    scales = torch.tensor([1.9, 1.0, 0.0, 0.5])
    head_dim = 32
    proj = PlainProjection(4 * head_dim, 16, bias=False)
    calls = []

    def loader(param, loaded):
        calls.append(1)
        param.data.copy_(loaded)

    proj.weight.weight_loader = loader
    proj.weight.input_dim = 1
    _fold_into_weight(proj, scales, head_dim, "test")
    checkpoint = torch.randn(16, 4 * head_dim)
    proj.weight.weight_loader(proj.weight, checkpoint)
    proj.weight.weight_loader(proj.weight, checkpoint)  # loading twice must not scale twice
    assert calls == [1, 1] and proj.vseam_folded
    x = torch.randn(5, 4 * head_dim)
    want = torch.nn.functional.linear((x.view(5, 4, head_dim) * scales[:, None]).view(5, -1), checkpoint)
    torch.testing.assert_close(proj(x)[0], want, rtol=1e-5, atol=1e-5)


def test_a_profile_changed_in_transit_is_refused(profiles):
    """vLLM processes apply exactly what `vseam serve` validated: content and sha256 travel together."""
    from vseam.patches.head_scaling import build_state

    config = config_of(profiles)
    tampered = config.model_copy(deep=True)
    tampered.profiles[0].profile["positive"][0]["lambda"] = 0.1
    with pytest.raises(RuntimeError, match="does not match the content vseam serve validated"):
        build_state(tampered)
    assert build_state(config).table.shape == (3, 2, 4)
