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
    assert "head attribution on 2 Ray workers" in capsys.readouterr().out
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
