"""The newcomer's `calibrate` path: bad inputs are refused before any model loads, naming the flag that fixes
them; hub models download unless HF_HUB_OFFLINE is set; a stage 1 without accepted edits names the real cause."""

from __future__ import annotations

import pathlib
import types

import pytest

from vseam.calibrate.cli import main
from vseam.core.errors import UserError

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if anything loads a model."""
    from vseam.core import engine

    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the inputs were checked")

    monkeypatch.setattr(engine.HeadEngine, "from_pretrained", classmethod(refuse))


@pytest.mark.parametrize("extra, expected", [
    ([], "--dataset gqa needs --data"),
    (["--data", "no/such/file.json"], "--data no/such/file.json: no such file or directory"),
    (["--data", str(ROOT / "tests")], "needs --images DIR"),
    (["--data", str(ROOT / "tests"), "--images", "no/such/dir"], "--images no/such/dir: not a directory"),
    (["--questions", "no/such.jsonl"], "--questions no/such.jsonl: no such file"),
])
def test_inputs_are_checked_before_any_model_loads(tiny_llava_dir, tmp_path, capsys, no_model_load, extra, expected):
    out = tmp_path / "run"
    assert main(["--dataset", "gqa", "--model", str(tiny_llava_dir), "--out", str(out), *extra]) == 1
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and "positional argument" not in err
    assert not out.exists()


def test_hub_model_offline_says_how_to_get_it(tmp_path, capsys, monkeypatch, no_model_load):
    from vseam.core.families import resolve_model_dir

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE is set, so it is not downloaded"):
        resolve_model_dir("some-org/not-cached-model", download=True)
    questions = tmp_path / "q.jsonl"
    questions.write_text("")
    assert main(["--dataset", "gqa", "--model", "some-org/not-cached-model", "--questions", str(questions),
                 "--out", str(tmp_path / "run")]) == 1
    assert "--model some-org/not-cached-model: " in capsys.readouterr().err


def test_hub_model_online_downloads_with_the_hub_client(tmp_path, monkeypatch, tiny_llava_dir):
    import huggingface_hub

    from vseam.core.families import DOWNLOAD_PATTERNS, resolve_model_dir

    calls = []

    def fake_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(tiny_llava_dir)

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    assert resolve_model_dir("some-org/not-cached-model", download=True) == tiny_llava_dir
    assert calls == [("some-org/not-cached-model", {"allow_patterns": DOWNLOAD_PATTERNS})]
    with pytest.raises(FileNotFoundError, match="no such checkpoint directory"):
        resolve_model_dir("some-org/not-cached-model")  # only calibrate asks for downloads

    def offline(repo_id, **kwargs):
        raise OSError("Cannot reach https://huggingface.co\nmore lines")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(FileNotFoundError, match=r"download failed: OSError: Cannot reach https://huggingface.co$"):
        resolve_model_dir("some-org/not-cached-model", download=True)


def _config(attribute_on="clean", images="imgs"):
    from vseam.calibrate.config import CalibrateConfig, DatasetSpec, Stage2Config

    return CalibrateConfig(model="m", dataset=DatasetSpec(name="gqa", data="d", images=images),
                           stage2=Stage2Config(attribute_on=attribute_on))


def _summary(pending=None, rejected=None, accepted=0, total=12):
    return types.SimpleNamespace(accepted=accepted, total=total, pending=pending or {}, rejected=rejected or {})


def test_a_stage_1_without_edits_names_the_real_cause():
    from vseam.calibrate.pipeline import check_edits

    with pytest.raises(UserError, match=r"accepted no edit of the 12 records \(12 x unreadable image\): check "
                                        r"--images imgs"):
        check_edits(_summary(pending={"unreadable image": 12}), _config())
    need = "no editor for material edits: needs diffusion (pass --inpaint-model DIR)"
    with pytest.raises(UserError, match="pass --inpaint-model DIR, or keep other subtypes with --subtypes"):
        check_edits(_summary(rejected={need: 12}), _config())
    with pytest.raises(UserError, match=r"accepted no edit of the 12 records \(12 x quality gate\)$"):
        check_edits(_summary(rejected={"quality gate": 12}), _config("eq4-pairs"))
    check_edits(_summary(rejected={"quality gate": 12}), _config())  # the default split needs no edit
    check_edits(_summary(accepted=3, pending={"unreadable image": 9}), _config())  # some edits: carry on
