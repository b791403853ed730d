"""`vseam serve`: every profile is validated against the model before vLLM starts; errors name file and field."""

from __future__ import annotations

import json
import pathlib
import shlex
import subprocess
import sys
import time

import pytest

from vseam.head_profiles import load_profile
from vseam.serve.protocol import ENV_VAR, ServeConfig, content_hash
from vseam.serve.cli import MIDDLEWARE, main
from vllm_server import write_profile


@pytest.fixture(scope="module")
def files(tiny_llava_dir, tiny_instructblip_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("serve-cli")
    good = write_profile(tiny_llava_dir, out, "colors", "attribute", "L0.H1=0.9", "L1.H2=1")
    other = write_profile(tiny_llava_dir, out, "where", "relation", "L1.H3=1")
    foreign = write_profile(tiny_instructblip_dir, out / "ib", "colors-ib", "attribute", "L0.H1=0.5")
    bad_lambda = out / "bad-lambda.json"
    doc = json.loads(good.read_text())
    doc["positive"][0]["lambda"] = 1.5
    bad_lambda.write_text(json.dumps(doc))
    truncated = out / "truncated.json"
    truncated.write_text(good.read_text()[:200])
    dup = out / "dup.json"
    dup.write_text(good.read_text())
    return dict(good=good, other=other, foreign=foreign, bad_lambda=bad_lambda, truncated=truncated, dup=dup)


def run_main(capsys, *argv):
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_dry_run_builds_the_vllm_command_and_env(tiny_llava_dir, files, capsys):
    code, out, _ = run_main(capsys, tiny_llava_dir, "--head-profile", files["good"], "--head-profile", files["other"],
                            "--default-profile", "where", "--dtype", "float32", "--served-model-name", "tiny",
                            "--dry-run")
    assert code == 0
    line = out.strip().splitlines()[-1]
    env_part, *cmd = shlex.split(line)
    config = ServeConfig.model_validate_json(env_part.split("=", 1)[1])
    assert env_part.startswith(ENV_VAR + "=")
    assert config.mode == "per-request" and config.names == ["colors", "where"] and config.default == "where"
    # the profiles travel by content, with the hash of what was validated (no file is read again by vLLM)
    for entry, path in zip(config.profiles, (files["good"], files["other"])):
        assert entry.profile == json.loads(pathlib.Path(path).read_text())
        assert entry.sha256 == content_hash(load_profile(path)) and entry.load() == load_profile(path)
    assert config.served_model_names == ["tiny"]
    assert len(config.nonce) == 16  # random per start (marks profile choices the middleware resolved)
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert cmd[cmd.index("--model") + 1] == str(tiny_llava_dir)
    assert ["--dtype", "float32"] == cmd[cmd.index("--dtype"):cmd.index("--dtype") + 2]
    assert cmd[-2:] == ["--middleware", MIDDLEWARE]
    assert "--head-profile" not in cmd and "--dry-run" not in cmd


def test_fold_config(tiny_llava_dir, files, capsys):
    code, out, _ = run_main(capsys, "--model", tiny_llava_dir, "--head-profile", files["good"], "--fold", "--dry-run")
    assert code == 0 and "static mode" in out
    config = ServeConfig.model_validate_json(shlex.split(out.splitlines()[-1])[0].split("=", 1)[1])
    assert config.static and config.default == "colors"


@pytest.mark.parametrize(
    "case,expect",
    [
        ("bad_lambda", ["bad-lambda.json", "field 'positive.0.lambda'", "[0, 1]"]),
        ("truncated", ["truncated.json", "not valid JSON"]),
        ("foreign", ["colors-ib.json", "fingerprint.architecture", "InstructBlipForConditionalGeneration"]),
        ("dup", ["dup.json", "field 'name'", "'colors'"]),
        ("missing", ["missing.json", "cannot read profile"]),
    ],
)
def test_bad_profiles_exit_1_naming_file_and_field(tiny_llava_dir, files, capsys, case, expect):
    path = files.get(case, files["good"].parent / f"{case}.json")
    extra = ["--head-profile", files["good"]] if case == "dup" else []
    code, out, err = run_main(capsys, tiny_llava_dir, *extra, "--head-profile", path, "--dry-run")
    assert code == 1 and out == ""
    assert err.startswith("error: ")
    for piece in expect:
        assert piece in err, (piece, err)


@pytest.mark.parametrize(
    "flags,expect",
    [
        (["--fold", "--head-profile", "{other}"], "exactly one profile"),
        (["--default-profile", "nope"], "--default-profile nope: not a loaded profile; choose one of: none, colors"),
        (["--default-profile", "auto"], "not a loaded profile"),
        (["--fold", "--default-profile", "none"], "every request uses 'colors'"),
    ],
)
def test_bad_serve_flags(tiny_llava_dir, files, capsys, flags, expect):
    flags = [f.format(other=files["other"]) for f in flags]
    code, _, err = run_main(capsys, tiny_llava_dir, "--head-profile", files["good"], *flags, "--dry-run")
    assert code == 1 and expect in err


def test_model_must_exist(tmp_path, files, capsys):
    code, _, err = run_main(capsys, tmp_path, "--head-profile", files["good"], "--dry-run")
    assert code == 1 and str(tmp_path) in err and "config.json" in err


def test_errors_stop_vseam_serve_before_vllm_starts(tiny_llava_dir, files):
    """The real command (no --dry-run): exits 1 within seconds, one clear line, no vLLM output."""
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "vseam.cli", "serve", str(tiny_llava_dir), "--head-profile", str(files["foreign"]),
         "--dtype", "float32"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1
    assert "colors-ib.json" in proc.stderr and "fingerprint.architecture" in proc.stderr
    assert "Traceback" not in proc.stderr and "vLLM API server" not in proc.stderr + proc.stdout
    assert time.time() - t0 < 60


def test_umbrella_help_lists_serve():
    proc = subprocess.run([sys.executable, "-m", "vseam.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "serve" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "vseam.cli", "serve", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "--head-profile" in proc.stdout and "--fold" in proc.stdout
