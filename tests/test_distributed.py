"""Head attribution on Ray workers (`calibrate --workers N`): same profile as one process, survives a killed worker.

Both tests run a small calibration of the planted-head model twice — once in this process, once on 2 local Ray
workers — from the same run.json (same creation time), and compare the profile files byte for byte.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time

import pytest

from test_pipeline import calibrate_argv, make_triples
from planted_heads import build_planted

#: eq4-pairs: both images of each triple against the clean answer, so the planted model gives both head sets
OPTS = ("--patching", "0", "--batch", "1", "--attribute-on", "eq4-pairs", "-k", "2")
PROFILES = ("gqa-all.json", "gqa-attribute.json", "gqa-object.json", "gqa-relation.json")


@pytest.fixture(scope="module")
def planted_dir(tmp_path_factory):
    return build_planted(tmp_path_factory.mktemp("planted"))


@pytest.fixture(scope="module")
def triples_file(tmp_path_factory):
    return make_triples(tmp_path_factory.mktemp("triples"), 30)  # 60 inputs in 60 chunks


@pytest.fixture(scope="module")
def reference(planted_dir, triples_file, tmp_path_factory):
    from vseam.calibrate.cli import main

    import torch

    out = tmp_path_factory.mktemp("ref") / "run"
    # the reference computes at the thread count each of the 2 Ray workers gets on this 2-core machine (1): float
    # reductions split over a different number of threads may differ in the last bits (seen on some CPUs)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(calibrate_argv(planted_dir, triples_file, out, *OPTS)) == 0
    finally:
        torch.set_num_threads(before)
    return out


def same_start(reference, out):
    out.mkdir()
    for name in ("run.json", "config.json"):  # same creation time and options, as for a resumed run
        shutil.copy(reference / name, out / name)


def assert_same_profiles(reference, out):
    log = [json.loads(l) for l in (out / "attribution-exact.jsonl").read_text().splitlines()]
    assert len({item["key"] for item in log}) == len(log) == 60
    for name in PROFILES:
        assert (out / "profiles" / name).read_bytes() == (reference / "profiles" / name).read_bytes(), name
    from vseam.head_profiles import load_profile

    whole = load_profile(out / "profiles" / "gqa-all.json")
    assert whole.positive and whole.negative  # both sets compared, not only one


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_ray_workers_write_byte_identical_profiles(planted_dir, triples_file, reference, tmp_path, capsys):
    from vseam.calibrate.cli import main

    out = tmp_path / "ray"
    same_start(reference, out)
    assert main(calibrate_argv(planted_dir, triples_file, out, *OPTS, "--workers", "2")) == 0
    assert "head attribution and the K / α grid on 2 Ray workers" in capsys.readouterr().out
    assert_same_profiles(reference, out)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_killed_worker_costs_one_chunk_and_the_run_finishes(planted_dir, triples_file, reference, tmp_path,
                                                              monkeypatch):
    from vseam.calibrate import distributed
    from vseam.calibrate.cli import main

    pools = []
    original = distributed.RayPool.__init__

    def record(self, *args, **kwargs):
        original(self, *args, **kwargs)
        pools.append(self)

    monkeypatch.setattr(distributed.RayPool, "__init__", record)
    out = tmp_path / "ray-kill"
    same_start(reference, out)
    log = out / "attribution-exact.jsonl"
    seen: dict = {}

    finished = threading.Event()

    def killer():  # no clock of its own: on a loaded machine starting Ray alone can take minutes
        while not finished.is_set() and not seen:
            done = log.read_text().count("\n") if log.exists() else 0
            if pools and done >= 5:
                pid = pools[0].pids()[0]
                seen["done_at_kill"], seen["pid"] = done, pid
                os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.005)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        assert main(calibrate_argv(planted_dir, triples_file, out, *OPTS, "--workers", "2")) == 0
    finally:
        finished.set()
    thread.join(5)
    assert seen, "the worker was never killed"
    assert 5 <= seen["done_at_kill"] < 60, f"the kill should land mid-attribution ({seen['done_at_kill']} of 60 done)"
    assert_same_profiles(reference, out)


def test_workers_without_ray_or_with_bad_values_say_what_to_do(planted_dir, triples_file, tmp_path, monkeypatch,
                                                              capsys):
    import builtins

    from vseam.calibrate.cli import main

    assert main(calibrate_argv(planted_dir, triples_file, tmp_path / "a", *OPTS, "--workers", "-1")) == 1
    assert "--workers -1" in capsys.readouterr().err
    assert main(calibrate_argv(planted_dir, triples_file, tmp_path / "b", *OPTS, "--ray-address", "auto")) == 1
    assert "give --workers N too" in capsys.readouterr().err
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    assert main(calibrate_argv(planted_dir, triples_file, tmp_path / "c", *OPTS, "--workers", "2")) == 1
    err = capsys.readouterr().err
    assert "pip install 'vseam[ray]'" in err
    assert not (tmp_path / "c").exists()  # refused before the run dir or any model


def _rows(path, key):
    return {row[key]: row for row in map(json.loads, path.read_text().splitlines())}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_every_model_pass_of_a_shapes_run_on_ray_workers_records_the_same_numbers(tmp_path, monkeypatch):
    """A whole run of the demo's kind on the committed organism — stage 1's Eq-4 scoring, the --max-correct answers,
    head attribution, the held-out K / α grid — once in this process at one thread and once on 2 Ray workers:
    every recorded per-input number and every profile byte (their shared creation time aside) agree."""
    import torch

    from vseam.calibrate import distributed
    from vseam.calibrate.cli import main
    from vseam.organism import WEIGHTS_DIR

    on_workers: dict[str, int] = {}  # task -> chunks the Ray workers ran
    original = distributed.RayPool.map_unordered

    def counted(self, task, jobs):
        for i, result in original(self, task, jobs):
            on_workers[task] = on_workers.get(task, 0) + 1
            yield i, result

    monkeypatch.setattr(distributed.RayPool, "map_unordered", counted)

    def argv(out, *extra):
        return ["--dataset", "shapes", "--data", "calib", "--images", str(tmp_path / "images"), "--dataset-option",
                "size=140", "--model", str(WEIGHTS_DIR), "--out", str(out), "--k", "2", "--select-on", "0.3",
                "--select-only", "attribute,object,relation", "--k-grid", "1,2", "--max-correct", "4", "--patching",
                "0", "--batch", "8", *extra]

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # what each of the 2 workers gets on a 2-core machine, as the demo's driver runs
    try:
        assert main(argv(tmp_path / "one")) == 0
    finally:
        torch.set_num_threads(before)
    ray_run = tmp_path / "ray"
    ray_run.mkdir()
    for name in ("run.json", "config.json"):
        shutil.copy(tmp_path / "one" / name, ray_run / name)
    assert main(argv(ray_run, "--workers", "2")) == 0
    assert not on_workers.keys() ^ {"binary", "baseline", "score"}, on_workers  # every kind of pass went to Ray
    eq4_chunks = -(-len(_rows(ray_run / "stage1/triples/scores.jsonl", "id")) // 8)
    assert on_workers["binary"] > eq4_chunks  # Eq-4 scoring and then the held-out grid

    one, two = tmp_path / "one", ray_run
    for log, key in (("stage1/triples/scores.jsonl", "id"), ("predictions.jsonl", "key"),
                     ("attribution-exact.jsonl", "key"), ("selection.jsonl", "key")):
        a, b = _rows(one / log, key), _rows(two / log, key)
        assert a and a == b, log
    grid = _rows(one / "selection.jsonl", "key")
    from vseam.core.defaults import STRENGTHS

    assert len(grid) == 3 * (1 + 2 * (len(STRENGTHS) - 1))  # per level: unedited + 2 K x every α > 0
    assert all(len(row["right"]) == row["n"] > 0 for row in grid.values())
    profiles = sorted(p.relative_to(one) for p in (one / "profiles").rglob("*.json"))
    assert len(profiles) >= 4
    for rel in profiles:
        assert (two / rel).read_bytes() == (one / rel).read_bytes(), rel
