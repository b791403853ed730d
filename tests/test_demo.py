"""`make demo` end to end on a small slice: calibrate the organism (K and α chosen on held-out calib questions),
serve the strategy profiles, evaluate through the API with paired tests, stop the server, and end with one JSON
line carrying every figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from vseam.organism import WEIGHTS_DIR

STRATEGIES = ("original", "w/o negative", "w/o positive", "random remove", "rescaling")
LEVELS = ("attribute", "object", "relation")
SUBTYPES = ("color", "material", "animal", "vehicle", "indoor", "spatial", "action")


def test_demo_refuses_a_claim_level_outside_0_1(capsys):
    from vseam.demo import main

    for bad in ("0", "1", "-0.5"):
        with pytest.raises(SystemExit) as e:
            main(["--claim-alpha", bad, "--out", "/nonexistent/never-made"])
        assert e.value.code == 2
        assert f"--claim-alpha {float(bad)}: expected a level in (0, 1)" in capsys.readouterr().err


def test_demo_k_grid_stays_inside_the_heads_the_organism_can_lose():
    """The demo's default K grid is the calibrator's grid cut so that a profile's positive and negative sets
    together touch at most HEAD_BUDGET heads (the removal curve's largest count within point 1), plus that K."""
    from vseam.core.defaults import DEFAULT_K_GRID
    from vseam.calibrate.cli import parse_k_grid
    from vseam.demo import demo_k_grid
    from vseam.organism.robustness import COUNTS, HEAD_BUDGET

    assert HEAD_BUDGET in COUNTS  # the budget is a measured point of the card's curve
    grid = demo_k_grid()
    assert grid == (1, 2, 4, 5)
    assert all(2 * k <= HEAD_BUDGET for k in grid) and max(grid) == HEAD_BUDGET // 2
    assert set(grid) - {HEAD_BUDGET // 2} == {k for k in DEFAULT_K_GRID if 2 * k <= HEAD_BUDGET}
    assert parse_k_grid("10,2, 4") == (2, 4, 10)  # the demo's --k-grid reads the calibrator's flag value
    import argparse

    for bad in ("", "a,2", "0,1"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_k_grid(bad)


@pytest.mark.vllm
@pytest.mark.slow
def test_demo_runs_end_to_end_on_a_small_slice(tmp_path):
    if not (WEIGHTS_DIR / "config.json").exists():
        pytest.fail("the organism's weights are not committed")
    out = tmp_path / "demo"
    env = {**os.environ, "VSEAM_CACHE": str(tmp_path / "cache")}
    res = subprocess.run(
        [sys.executable, "-m", "vseam.demo", "--out", str(out), "--calib-size", "140", "--test-size", "70",
         "--patching", "2", "--concurrency", "8", "--bench-images", "8"],
        capture_output=True, text=True, env=env, timeout=1500,
    )
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    for step in ("[1/9] model organism", "[2/9] start vseam serve in the background", "[3/9] calibrate",
                 "[5/9] vseam serve: wait until it is up, load 15 profiles", "[6/9] evaluate",
                 "[7/9] evaluate shapes-POPE", "[8/9] evaluate shapes-COCO-QA", "server stopped"):
        assert step in res.stdout
    # calibration ran its model passes on the 2 Ray workers, and every served profile went in through the admin route
    assert "K / α grid on 2 Ray workers" in res.stdout
    assert "loaded 15 profiles through POST /v1/head_profiles" in res.stdout
    log = (out / "serve.log").read_text()
    assert log.count("vseam: loaded head profile") == 15
    summary = json.loads((out / "demo.json").read_text())
    with pytest.raises(ProcessLookupError):  # the server is gone
        os.kill(summary["server_pid"], 0)

    # the last line is one JSON object with every figure
    doc = json.loads(res.stdout.strip().splitlines()[-1])
    assert doc["test_questions"] == 70 and doc["requests_failed"] == 0
    assert doc["test_split"] == "test2" and doc["k_grid"] == [1, 2, 4, 5]
    acc = doc["accuracy_pct"]
    for strategy in (*STRATEGIES, "rescaling (paper: fixed K, α=1)"):
        row = acc[strategy]
        for column in (*SUBTYPES, *LEVELS, "avg"):
            assert 0.0 <= row[column] <= 100.0, (strategy, column)
    diffs = doc["rescaling_minus_original"]
    assert set(diffs) == {*LEVELS, "Overall"}
    for cat, d in diffs.items():
        assert 0.0 <= d["mcnemar_p"] <= 1.0
        lo, hi = d["ci95_pp"]
        assert -100.0 <= lo <= d["diff_pp"] <= hi <= 100.0, cat
    for level in LEVELS:  # the difference the line reports is the table's own
        assert diffs[level]["diff_pp"] == pytest.approx(acc["rescaling"][level] - acc["original"][level], abs=0.02)

    # the verdict on the paper's claim rests on the same overall test and levels, and the log says it in words
    claim = doc["claim"]
    assert claim["alpha"] == 0.001 and claim["baseline"] == "original" and claim["n"] == 70
    assert claim["p"] == diffs["Overall"]["mcnemar_p"]
    assert (claim["fixed"], claim["broken"]) == (diffs["Overall"]["only_rescaling_right"],
                                                 diffs["Overall"]["only_original_right"])
    assert claim["behind"] == sorted(lv for lv in LEVELS if diffs[lv]["diff_pp"] < 0)
    assert claim["met"] == (claim["diff_pp"] > 0 and claim["p"] < 0.001 and not claim["behind"])
    assert "the paper's claim on the test questions: claim " in res.stdout

    # a profile per level was served, each with its chosen K and α, never worse than unedited on held-out calib data
    assert set(doc["chosen"]) == set(LEVELS)
    for level, c in doc["chosen"].items():
        prof = json.loads(open(summary["profiles"][level]).read())
        assert prof["name"] == c["profile"] and prof["positive"] + prof["negative"], level
        assert c["k"] in (1, 2, 4, 5) and c["strength"] in (0.0, 0.25, 0.5, 0.75, 1.0)
        # within the organism's redundancy: at most 10 heads scaled, none when α = 0
        assert c["heads_touched"] == (len(prof["positive"]) + len(prof["negative"]) if c["strength"] > 0 else 0)
        assert c["heads_touched"] <= 10
        held = c["held_out_calib_accuracy"]
        assert held["n"] > 0 and held["chosen"] >= held["unedited"]
        paper = json.loads(open(summary["paper_profiles"][level]).read())
        assert paper["k"] == 4 and "strength" not in paper

    report = json.loads((out / "eval" / "report.json").read_text())
    assert report["requests"]["failed"] == 0 and report["data"]["files"] == ["shapes:test2"]
    assert report["significance"]["config"]["procedure"].startswith("paper Table-18 procedure")
    md = (out / "eval" / "report.md").read_text()
    assert "McNemar" in md and "## Paper Table-18 procedure" in md

    # shapes-POPE per split and shapes-COCO-QA per type, through the same server, with every strategy
    bench = doc["benchmarks"]
    for strategy in STRATEGIES:
        for split in ("random", "popular", "adversarial", "all"):
            row = bench["pope"][strategy][split]
            assert set(row) == {"accuracy", "precision", "recall", "f1", "yes_ratio"}
            assert 0.0 <= row["accuracy"] <= 100.0 and 0.0 <= row["yes_ratio"] <= 100.0
        for kind in ("color", "object", "location"):
            assert 0.0 <= bench["cocoqa"][kind][strategy] <= 100.0
    pope_report = json.loads((out / "eval" / "pope" / "report.json").read_text())
    assert pope_report["data"]["records"] == 8 * 4 * 3 and pope_report["requests"]["failed"] == 0
    assert set(bench["pope_rescaling_minus_original"]) >= {"random", "popular", "adversarial"}
    for kind in ("color", "object", "location"):
        rep = json.loads((out / "eval" / "cocoqa" / kind / "report.json").read_text())
        assert rep["requests"]["failed"] == 0 and rep["data"]["records"] >= 7

    # the README's pictures and the prior-overlap table are drawn from this run directory
    from vseam.head_profiles import load_profile
    from vseam.organism import figures, overlap

    pics = tmp_path / "docs"
    assert figures.main(["--run", str(out), "--out", str(pics)]) == 0
    for name in ("demo-heads.png", "demo-accuracy.png"):
        data = (pics / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
    from vseam.core.engine import HeadEngine

    engine = HeadEngine.from_pretrained(str(WEIGHTS_DIR))
    pairs = overlap.prior_records(140, tmp_path / "ov")
    assert pairs and all(r.subtype in ("animal", "vehicle", "indoor") for r, _ in pairs)
    prof = load_profile(summary["paper_profiles"]["object"])
    table = overlap.overlap_table(engine, [prof], pairs)
    assert table["questions"] == len(pairs)
    for set_name, row in table["profiles"][prof.name].items():
        assert row["heads"] == len(getattr(prof, set_name))
        assert 0.0 <= row["target"] <= 100.0 and 0.0 <= row["prior"] <= 100.0
        # target and partner boxes do not overlap (objects are kept apart), so the two shares add to at most 100%
        assert row["target"] + row["prior"] <= 100.0 + 1e-6


def test_demo_calibrates_on_two_ray_workers_only_when_it_can(monkeypatch, capsys):
    """Two workers on a machine with two cores and Ray; one process (and a note saying why) without Ray or on one
    core: the demo never fails for want of Ray."""
    import importlib.util

    from vseam import demo

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(demo.os, "cpu_count", lambda: 2)
    assert demo.default_workers() == 2
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real_find_spec(name, *a))
    assert demo.default_workers() == 0
    assert "Ray is not installed" in capsys.readouterr().out
    monkeypatch.setattr(importlib.util, "find_spec", real_find_spec)
    monkeypatch.setattr(demo.os, "cpu_count", lambda: 1)
    assert demo.default_workers() == 0
