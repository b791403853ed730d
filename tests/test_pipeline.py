"""The `calibrate` pipeline, stage 2 end to end: planted heads -> profiles, resume after kill, refusals.

The planted heads are found with `--attribute-on eq4-pairs` (clean red vs edited blue images, both against "yes":
`POSITIVE` reads the clean answer, `DISTRACTOR` the edit); the default split is tested in `test_eq7_split.py`.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from vseam.calibrate.cli import main
from vseam.calibrate.config import Stage2Config
from vseam.calibrate.inputs import subsample
from vseam.calibrate.profiles import write_profiles
from vseam.calibrate.rundir import RunDir
from vseam.calibrate.profiles import HeadScores
from vseam.calibrate.records import Box, EditedPair, Triple, VQARecord, read_jsonl, write_jsonl
from conftest import random_image
from vseam.head_profiles import load_profile
from vseam.core.errors import UserError
from planted_heads import DISTRACTOR, POSITIVE, build_planted, clean_image, edited_image

ROOT = pathlib.Path(__file__).resolve().parents[1]
SUBTYPES = ["color", "material", "animal", "vehicle", "spatial", "action"]


def make_triples(out: pathlib.Path, n: int, clean=clean_image, edited=edited_image) -> pathlib.Path:
    out.mkdir(parents=True, exist_ok=True)
    triples = []
    for i in range(n):
        c, e = out / f"clean_{i}.png", out / f"edited_{i}.png"
        clean(i).save(c)
        edited(i).save(e)
        rec = VQARecord(
            qid=f"q{i:03d}", dataset="gqa", question=f"Is the object number {i} red?", answer="yes", image=str(c),
            subtype=SUBTYPES[i % len(SUBTYPES)], boxes=[Box(8, 8, 24, 24 + i)],
        )
        pair = EditedPair(rec, "Is the object blue?", str(c), str(e), editor="recolor")
        triples.append(Triple(pair, 0.9, 0.1, "yes", "no"))
    write_jsonl(out / "triples.jsonl", triples)
    return out / "triples.jsonl"


@pytest.fixture(scope="module")
def planted_dir(tmp_path_factory):
    return build_planted(tmp_path_factory.mktemp("planted"))


@pytest.fixture(scope="module")
def triples_file(tmp_path_factory):
    return make_triples(tmp_path_factory.mktemp("triples"), 12)


def calibrate_argv(model, triples, out, *extra):
    return ["--dataset", "gqa", "--model", str(model), "--triples", str(triples), "--out", str(out), *extra]


def test_planted_heads_end_to_end(planted_dir, triples_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(calibrate_argv(planted_dir, triples_file, out, "--patching", "3", "-k", "3",
                               "--attribute-on", "eq4-pairs")) == 0
    names = sorted(p.name for p in (out / "profiles").iterdir())
    assert names == ["gqa-all.json", "gqa-attribute.json", "gqa-object.json", "gqa-relation.json"]
    for name in names:
        prof = load_profile(out / "profiles" / name)
        assert prof.positive[0].key == POSITIVE and prof.negative[0].key == DISTRACTOR
        assert prof.k == 3 and len(prof.positive) <= 3 and len(prof.negative) <= 3
        assert prof.provenance.method == "mean-ablation exact" and "D_incorrect" in prof.provenance.notes
        assert prof.provenance.created == json.loads((out / "run.json").read_text())["created"]
        assert json.loads((out / "config.json").read_text())["k"] == 3
    allp = load_profile(out / "profiles" / "gqa-all.json")
    assert (allp.provenance.n_correct, allp.provenance.n_incorrect) == (12, 12)
    assert allp.scope.subtypes == sorted(SUBTYPES)
    assert load_profile(out / "profiles" / "gqa-attribute.json").scope.subtypes == ["color", "material"]

    from vseam.cli import main as vseam_main

    capsys.readouterr()
    for name in names:
        assert vseam_main(["profile", "validate", str(out / "profiles" / name), "--model", str(planted_dir)]) == 0
    assert "fits" in capsys.readouterr().out

    report = json.loads((out / "report.json").read_text())
    assert report["overlap"]["available"] and report["overlap"]["grid"] == [4, 4]
    assert set(report["overlap"]["profiles"]) == {n[:-5] for n in names}
    assert report["patching"]["all"]["att"]["row"] == "ASSISTANT:"
    assert (out / "report.md").read_text().startswith("# Calibration run")
    arrays = np.load(out / "patching" / "all.npz")
    assert arrays["s"].shape[:2] == (2, 2) and len(arrays["triples"]) == 3
    for png in ("all.png", "attribute.png", "lens_0.png"):
        assert (out / "patching" / png).read_bytes()[:4] == b"\x89PNG"
    assert len((out / "patching" / "logit_lens.tsv").read_text().splitlines()) == 1 + 3 * 2 * 2 * 5


def test_atp_screen_with_exact_refine(planted_dir, triples_file, tmp_path):
    out = tmp_path / "run"
    argv = calibrate_argv(planted_dir, triples_file, out, "--method", "atp", "--refine", "2", "--patching", "0",
                          "-k", "2", "--per-subtype", "--attribute-on", "eq4-pairs")
    assert main(argv) == 0
    cands = [tuple(h) for h in json.loads((out / "candidates.json").read_text())["heads"]]
    assert POSITIVE in cands and DISTRACTOR in cands
    prof = load_profile(out / "profiles" / "gqa-all.json")
    assert prof.positive[0].key == POSITIVE and prof.negative[0].key == DISTRACTOR
    assert prof.provenance.method == "mean-ablation atp screen + exact refine of top 2"
    assert {h.key for h in prof.positive + prof.negative} <= set(cands)
    # refined scores are the exact engine's numbers
    exact_out = tmp_path / "exact"
    assert main(calibrate_argv(planted_dir, triples_file, exact_out, "--patching", "0", "-k", "2",
                               "--attribute-on", "eq4-pairs")) == 0
    ex = load_profile(exact_out / "profiles" / "gqa-all.json")
    assert prof.positive[0].score == pytest.approx(ex.positive[0].score, abs=1e-9)
    assert (out / "profiles" / "gqa-attribute-color.json").exists()  # --per-subtype (Table 13)


@pytest.fixture
def one_thread():
    """Torch on one thread in this process, restored afterwards. Byte identity is a claim about the same
    arithmetic: with several threads a matmul's reduction may be split differently in another process (the thread
    count left by an earlier test in this one, or MKL's dynamic threading under load), which can change a score's
    last digit. The killed run's subprocess is started with one thread too."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_killed_run_resumes_to_byte_identical_profiles(planted_dir, triples_file, tmp_path, one_thread):
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    opts = ("--patching", "0", "--batch", "1", "--attribute-on", "clean+edited")  # 12 questions, 24 inputs
    assert main(calibrate_argv(planted_dir, triples_file, ref, *opts)) == 0
    killed.mkdir()
    shutil.copy(ref / "run.json", killed / "run.json")  # same creation time, as for a resumed run
    shutil.copy(ref / "config.json", killed / "config.json")

    argv = [sys.executable, "-m", "vseam.calibrate.cli",
            *calibrate_argv(planted_dir, triples_file, killed, *opts)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = killed / "attribution-exact.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and log.read_text().count("\n") >= 2:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = log.read_text().count("\n")
    assert 2 <= done < 24, f"the kill should land mid-attribution ({done} of 24 inputs done)"
    assert not (killed / "profiles").exists()
    with open(log, "a") as fh:  # a write torn by the kill
        fh.write('{"key": "gqa:q011:cle')

    assert main(calibrate_argv(planted_dir, triples_file, killed, *opts)) == 0
    assert log.read_text().count("\n") == 24
    assert len({json.loads(l)["key"] for l in log.read_text().splitlines()}) == 24
    for name in ("gqa-all.json", "gqa-attribute.json", "gqa-object.json", "gqa-relation.json"):
        assert (killed / "profiles" / name).read_bytes() == (ref / "profiles" / name).read_bytes(), name


def test_resume_refuses_other_options_and_empty_inputs(planted_dir, triples_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(calibrate_argv(planted_dir, triples_file, out, "--patching", "0", "--fraction", "0.5")) == 0
    kept = read_jsonl(out / "triples.jsonl", Triple)
    assert len(kept) == 6
    assert [t.record.qid for t in kept] == [t.record.qid for t in subsample(read_jsonl(triples_file, Triple), 0.5, 0)]
    assert load_profile(out / "profiles" / "gqa-all.json").provenance.fraction == 0.5

    capsys.readouterr()
    assert main(calibrate_argv(planted_dir, triples_file, out, "--patching", "0", "--fraction", "0.5", "-k", "4")) == 1
    err = capsys.readouterr().err
    assert "existing run was made with k=10, this one has k=4" in err
    assert main(calibrate_argv(planted_dir, triples_file, out, "--patching", "0", "-k", "4", "--restart")) == 0
    assert len(read_jsonl(out / "triples.jsonl", Triple)) == 12  # --restart: the new options, all triples
    assert load_profile(out / "profiles" / "gqa-all.json").k == 4

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(calibrate_argv(planted_dir, empty, tmp_path / "e")) == 1
    assert "no yes/no calibration questions to attribute" in capsys.readouterr().err
    assert main(calibrate_argv(planted_dir, empty, tmp_path / "e4", "--attribute-on", "eq4-pairs")) == 1
    assert "no Eq-4 triples" in capsys.readouterr().err
    assert main(calibrate_argv(planted_dir, tmp_path / "missing.jsonl", tmp_path / "m")) == 1
    assert "no such file" in capsys.readouterr().err
    assert main(calibrate_argv(tmp_path / "no-model", triples_file, tmp_path / "x")) == 1
    assert "--model" in capsys.readouterr().err


def test_one_sided_data_and_refusal_to_write_empty_profiles(planted_dir, tmp_path):
    """Only wrongly answered inputs: a negative-only profile; no qualifying head at all: nothing is written."""
    blue = make_triples(tmp_path / "t", 2, clean=edited_image, edited=edited_image)  # blue "red?" questions, "yes"
    assert main(calibrate_argv(planted_dir, blue, tmp_path / "run", "--patching", "0")) == 0
    prof = load_profile(tmp_path / "run" / "profiles" / "gqa-all.json")
    assert prof.positive == [] and prof.negative[0].key == DISTRACTOR
    assert (prof.provenance.n_correct, prof.provenance.n_incorrect) == (0, 2)

    run = RunDir(tmp_path / "empty-run", {"k": 10})
    flat = HeadScores(np.full((2, 4), 0.01), np.full((2, 4), -0.01), 3, 3)
    fp = load_profile(tmp_path / "run" / "profiles" / "gqa-all.json").fingerprint
    with pytest.raises(UserError, match="no profile written: profile 'gqa-all': no head qualifies"):
        write_profiles(run, {"all": (flat, [])}, fp, Stage2Config(), "mean-ablation exact", "gqa", None, print)
    assert not (run.root / "profiles").exists()


def test_instructblip_directory_runs(tiny_instructblip_dir, tmp_path):
    triples = make_triples(tmp_path / "t", 3, clean=random_image, edited=lambda i: random_image(100 + i))
    out = tmp_path / "run"
    assert main(calibrate_argv(tiny_instructblip_dir, triples, out, "--patching", "1", "-k", "2")) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["overlap"]["available"] is False and "spatial layout" in report["overlap"]["reason"]
    prof = load_profile(out / "profiles" / "gqa-all.json")
    assert prof.fingerprint.architecture == "InstructBlipForConditionalGeneration"
    assert prof.provenance.n_correct + prof.provenance.n_incorrect == 3  # the three clean images
    assert prof.positive or prof.negative
    # the scores are Eq 7 of the logged per-input effects (recomputed here from attribution-exact.jsonl)
    rows = [json.loads(l) for l in (out / "attribution-exact.jsonl").read_text().splitlines()]
    shape = (prof.fingerprint.num_layers, prof.fingerprint.num_heads)
    for set_name, correct, sign in (("positive", True, -1.0), ("negative", False, 1.0)):
        deltas = [np.asarray(r["delta"]).reshape(shape) for r in rows if r["correct"] == correct]
        for h in getattr(prof, set_name):
            assert h.score == pytest.approx(sign * np.mean([d[h.layer, h.head] for d in deltas]), rel=1e-9)
