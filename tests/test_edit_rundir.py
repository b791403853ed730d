"""Resumable run directories: append-only done-logs that survive a kill mid-write, and config pinning."""

from __future__ import annotations

import json

import pytest

from vseam.calibrate.rundir import DoneLog, RunDir
from vseam.core.files import atomic_write_json
from vseam.core.errors import UserError


def test_done_log_appends_skips_and_survives_a_torn_last_line(tmp_path):
    log = DoneLog(tmp_path / "done.jsonl")
    log.append({"id": "a", "v": 1})
    log.append({"id": "b", "v": 2})
    with pytest.raises(ValueError, match="already logged"):
        log.append({"id": "a", "v": 3})
    # a kill in the middle of writing a row leaves a partial line
    with open(tmp_path / "done.jsonl", "a") as fh:
        fh.write('{"id": "c", "v"')
    again = DoneLog(tmp_path / "done.jsonl")
    assert again.keys() == ["a", "b"] and "c" not in again and again.get("b")["v"] == 2
    again.append({"id": "c", "v": 3})
    lines = (tmp_path / "done.jsonl").read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["a", "b", "c"]  # the torn line was cut off, not kept


def test_done_log_dotted_keys_and_corrupt_rows(tmp_path):
    log = DoneLog(tmp_path / "m.jsonl", key="record.qid")
    log.append({"record": {"qid": "q1"}, "x": 1})
    assert "q1" in DoneLog(tmp_path / "m.jsonl", key="record.qid")
    with pytest.raises(ValueError, match="no 'record.qid'"):
        log.append({"x": 2})
    (tmp_path / "bad.jsonl").write_text('{"id": 1}\nnot json\n')
    with pytest.raises(UserError, match="bad.jsonl: line is not JSON"):
        DoneLog(tmp_path / "bad.jsonl")


def test_run_dir_pins_its_config(tmp_path):
    run = RunDir(tmp_path / "run", {"model": "a", "k": 3})
    run.log("items").append({"id": "x"})
    same = RunDir(tmp_path / "run", {"k": 3, "model": "a"})
    assert "x" in same.log("items")
    with pytest.raises(UserError, match="model='a'.*model='b'.*--restart"):
        RunDir(tmp_path / "run", {"model": "b", "k": 3})
    fresh = RunDir(tmp_path / "run", {"model": "b", "k": 3}, restart=True)
    assert len(fresh.log("items")) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == {"model": "b", "k": 3}
    atomic_write_json(tmp_path / "run" / "x.json", {"a": 1})
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]
