"""`make demo` end to end on a small slice: calibrate the organism, serve the strategy profiles, evaluate through
the API with significance tests, stop the server."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from vseam.organism import WEIGHTS_DIR


@pytest.mark.vllm
@pytest.mark.slow
def test_demo_runs_end_to_end_on_a_small_slice(tmp_path):
    if not (WEIGHTS_DIR / "config.json").exists():
        pytest.fail("the organism's weights are not committed")
    out = tmp_path / "demo"
    env = {**os.environ, "VSEAM_CACHE": str(tmp_path / "cache")}
    res = subprocess.run(
        [sys.executable, "-m", "vseam.demo", "--out", str(out), "--calib-size", "140", "--test-size", "70",
         "--patching", "2", "--concurrency", "8"],
        capture_output=True, text=True, env=env, timeout=1500,
    )
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    for step in ("[1/6] model organism", "[2/6] calibrate", "[4/6] vseam serve", "[5/6] evaluate", "server stopped"):
        assert step in res.stdout
    summary = json.loads((out / "demo.json").read_text())
    # the server is gone
    with pytest.raises(ProcessLookupError):
        os.kill(summary["server_pid"], 0)
    # one calibrated profile per level, each with positive and negative heads
    for level, path in summary["profiles"].items():
        prof = json.loads(open(path).read())
        assert prof["positive"] and prof["negative"], level
    report = json.loads((out / "eval" / "report.json").read_text())
    text = json.dumps(report)
    for strategy in ("original", "w/o negative", "w/o positive", "random remove", "rescaling"):
        assert strategy in text
    # every held-out question was answered under every strategy, and the table shows bootstrap p-values
    assert report["requests"]["failed"] == 0
    md = (out / "eval" / "report.md").read_text()
    assert "rescaling" in md and "p" in md
    assert "| original |" in md or "original" in md
