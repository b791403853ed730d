"""`vseam edit` end to end on real photos (V-SEAM-format fixture questions, SAM masks, editors, quality gate), its
resumability after a kill, and `vseam triples` on its output."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from vseam.calibrate.masks import load_mask
from vseam.calibrate.records import EditedPair, Triple, read_jsonl
from vseam.cli import main as vseam_main
from regions import grown

ROOT = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # SAM on real photos (and, here, several job runs)

FIXTURE = ROOT / "tests" / "fixtures" / "photos_vseam"
N_RECORDS = 8  # questions in the fixture


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory) -> pathlib.Path:
    from skimage import data

    d = tmp_path_factory.mktemp("photos")
    for name in ("coffee", "astronaut", "chelsea", "rocket"):
        Image.fromarray(getattr(data, name)()).convert("RGB").save(d / f"{name}.png")
    return d


def edit_argv(photo_dir, out, model_dir) -> list[str]:
    return ["edit", "--dataset", "gqa", "--data", str(FIXTURE), "--images", str(photo_dir), "--out", str(out),
            "--model", str(model_dir), "--no-progress"]  # fmt: skip


def run_cli(argv, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONWARNINGS="ignore", TOKENIZERS_PARALLELISM="false")
    return subprocess.Popen([sys.executable, "-m", "vseam.cli", *argv], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)  # fmt: skip


@pytest.fixture(scope="module")
def reference(photo_dir, tiny_llava_dir, tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("edit-reference")
    proc = run_cli(edit_argv(photo_dir, out, tiny_llava_dir))
    stdout, stderr = proc.communicate(timeout=1200)
    assert proc.returncode == 0, stderr[-3000:]
    return out


def lines(path: pathlib.Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_edit_job_outputs(reference):
    summary = json.loads((reference / "summary.json").read_text())
    assert summary["total"] == N_RECORDS and summary["processed_this_run"] == N_RECORDS
    assert summary["accepted_by_subtype"] == {"color": 5, "indoor": 1, "spatial": 1}
    assert summary["rejected"] == {"no editor for material edits: needs diffusion (pass --inpaint-model DIR)": 1}
    pairs = read_jsonl(reference / "edits.jsonl", EditedPair)
    assert [p.editor for p in pairs] == ["recolor"] * 5 + ["remove", "mirror"]
    assert [p.record.qid for p in pairs][:2] == ["p-cup-red", "p-helmet-black"]  # dataset order
    for p in pairs:
        clean = np.asarray(Image.open(p.clean_image).convert("RGB"))
        edited = np.asarray(Image.open(p.edited_image).convert("RGB"))
        region = load_mask(p.mask)  # the mask file, grown here (not by the editor's own `allowed`)
        changed = (clean != edited).any(-1)
        assert not (changed & ~grown(region, p.quality["dilation"])).any(), p.record.qid
        assert p.quality["passed"] and p.quality["outside_changed"] == 0.0
        assert 0.85 <= p.quality["cosine"] <= 1.0  # drift checked with the model's own vision tower
        assert p.quality["mask_sources"] == ["sam"] and p.quality["sam_scores"][0] > 0.5
        assert p.quality["counterfactual"]["question"] == p.counterfactual != p.record.question
    mirror = pairs[-1]
    assert mirror.quality["boxes"] == [0] and mirror.counterfactual == "Is the helmet to the left of the patch?"
    rejected = [json.loads(x) for x in lines(reference / "rejected.jsonl")]
    assert [(r["id"], r["stage"]) for r in rejected] == [("p-cup-porcelain", "editor")]
    sheet = Image.open(reference / "contact_sheet.png")
    assert sheet.width == 3 * 192 + 16 and sheet.height > 7 * 100


def test_interrupted_edit_resumes_to_the_same_manifest(reference, photo_dir, tiny_llava_dir, tmp_path):
    out = tmp_path / "run"
    proc = run_cli(edit_argv(photo_dir, out, tiny_llava_dir))
    deadline = time.time() + 900
    while len(lines(out / "edits.jsonl")) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the job finished before it could be interrupted"
    done_before = len(lines(out / "edits.jsonl")) + len(lines(out / "rejected.jsonl"))
    assert 2 <= done_before < N_RECORDS
    first = {p.edited_image: os.stat(p.edited_image).st_mtime_ns for p in read_jsonl(out / "edits.jsonl", EditedPair)}

    proc = run_cli(edit_argv(photo_dir, out, tiny_llava_dir))
    stdout, stderr = proc.communicate(timeout=1200)
    assert proc.returncode == 0, stderr[-3000:]
    assert f"{done_before} of {N_RECORDS} records already done" in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processed_this_run"] == N_RECORDS - done_before  # no item was done twice
    assert all(os.stat(path).st_mtime_ns == mtime for path, mtime in first.items())  # earlier edits untouched

    def normalised(run_dir: pathlib.Path) -> list[str]:
        return [x.replace(str(run_dir.resolve()), "<RUN>") for x in lines(run_dir / "edits.jsonl")]

    assert normalised(out) == normalised(reference)
    assert lines(out / "rejected.jsonl") == lines(reference / "rejected.jsonl")
    for name in sorted(os.listdir(reference / "edited")):
        assert (out / "edited" / name).read_bytes() == (reference / "edited" / name).read_bytes(), name
    assert {k: v for k, v in summary.items() if k not in ("processed_this_run", "manifest", "contact_sheet")} == {
        k: v for k, v in json.loads((reference / "summary.json").read_text()).items()
        if k not in ("processed_this_run", "manifest", "contact_sheet")
    }  # fmt: skip


def test_triples_command_on_edit_output(reference, tiny_llava_dir, tmp_path, capsys):
    out = tmp_path / "triples"
    assert vseam_main(["triples", "--edits", str(reference), "--model", str(tiny_llava_dir), "--out", str(out),
                       "--no-progress"]) == 0  # fmt: skip
    triples = read_jsonl(out / "triples.jsonl", Triple)
    summary = json.loads((out / "summary.json").read_text())
    assert sum(c["pairs"] for c in summary["per_subtype"].values()) == 7
    assert len(triples) == sum(c["kept"] for c in summary["per_subtype"].values())
    assert all(t.pred_clean == t.record.answer != t.pred_edited for t in triples)
    assert "Eq-4 triples of 7 edited pairs" in capsys.readouterr().out
    # cached: a second run scores nothing
    assert vseam_main(["triples", "--edits", str(reference), "--model", str(tiny_llava_dir), "--out", str(out),
                       "--no-progress"]) == 0  # fmt: skip
    assert json.loads((out / "summary.json").read_text())["scored_this_run"] == 0


def test_edit_user_errors(reference, photo_dir, tiny_llava_dir, tmp_path, capsys):
    assert vseam_main(["edit", "--dataset", "gqa", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 1
    assert "nope: GQA question file or directory not found" in capsys.readouterr().err
    argv = edit_argv(photo_dir, reference, tiny_llava_dir) + ["--min-cosine", "0.5"]
    assert vseam_main(argv) == 1
    assert "existing run was made with thresholds=" in capsys.readouterr().err
    assert vseam_main(["edit", "--dataset", "pope", "--data", str(ROOT / "tests/fixtures/pope"), "--out",
                       str(tmp_path / "o2"), "--dataset-option", "bogus=1"]) == 1  # fmt: skip
    assert "dataset pope:" in capsys.readouterr().err
