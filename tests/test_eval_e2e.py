"""End to end: `vseam eval pope` against `vseam serve` (tiny LLaVA, vLLM on CPU) on the POPE-format fixture.

One server serves the five Table-3 strategies of a hand-written "calibrated" profile per request. The report's
metrics are recounted here from the raw replies and the fixture's labels, a re-run is answered from the cache,
and choosing profiles by model name gives the same replies as choosing them by vllm_xargs.
"""

from __future__ import annotations

import json
import pathlib
import sys

import pytest

from vllm_server import CPU_TEST_FLAGS, running_server

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "eval"
SPLITS = ("random", "popular", "adversarial")
SERVED = "tiny-llava"


@pytest.fixture(scope="module")
def served(tiny_llava_dir, tmp_path_factory):
    from vseam.head_profiles import HeadProfile, Provenance, Scope, now_iso, parse_heads
    from vseam.cli import main
    from vseam.core.families import fingerprint_of

    work = tmp_path_factory.mktemp("eval-e2e")
    cal = HeadProfile(
        name="cal", fingerprint=fingerprint_of(tiny_llava_dir), scope=Scope(level="object"), k=2,
        positive=parse_heads("L1.H0=0.8,L1.H3=0.6"), negative=parse_heads("L0.H1=0.9,L0.H2=0.7"),
        provenance=Provenance(method="hand-written", tool_version="test", created=now_iso()))
    cal.save(work / "cal.json")
    assert main(["eval", "strategies", str(work / "cal.json"), "--out", str(work / "st")]) == 0
    files = sorted(p for p in (work / "st").glob("*.json") if p.name != "strategies.json")
    # eager mode starts faster; compiled execution with profiles is the serve tests' business
    argv = [sys.executable, "-m", "vseam.serve.cli", str(tiny_llava_dir), *[a for f in files for a in ("--head-profile", str(f))],
            "--served-model-name", SERVED, "--enforce-eager", "--port", "{port}", "--host", "127.0.0.1", *CPU_TEST_FLAGS]
    with running_server(argv) as (base, _log):
        yield base, work


def eval_argv(base, out, *extra) -> list[str]:
    data = [a for s in SPLITS for a in ("--data", str(FIXTURE / f"coco_pope_{s}.json"))]
    return ["eval", "pope", "--base-url", f"{base}/v1", "--model", SERVED, *data, "--images", str(FIXTURE / "images"),
            "--out", str(out), "--no-progress", *extra]


def fixture_labels() -> list[tuple[str, str, str, str]]:
    """(split, question, image, label) straight from the fixture files."""
    out = []
    for s in SPLITS:
        for line in (FIXTURE / f"coco_pope_{s}.json").read_text().splitlines():
            d = json.loads(line)
            out.append((s, d["text"], d["image"], d["label"]))
    return out


def recount(preds: list[dict]) -> dict:
    """Accuracy/precision/recall/F1/yes-ratio per (label, split) from raw replies, counted the plain way."""
    out = {}
    groups: dict[tuple[str, str], list[dict]] = {}
    for p in preds:
        groups.setdefault((p["label"], p["category"]), []).append(p)
        groups.setdefault((p["label"], "all"), []).append(p)
    for key, items in groups.items():
        said_yes = [p["reply"].strip().lower() == "yes" for p in items]
        gold_yes = [p["gold"] == "yes" for p in items]
        tp = sum(s and g for s, g in zip(said_yes, gold_yes))
        fp = sum(s and not g for s, g in zip(said_yes, gold_yes))
        fn = sum(not s and g for s, g in zip(said_yes, gold_yes))
        tn = len(items) - tp - fp - fn
        prec = tp / (tp + fp) if tp + fp else None
        rec = tp / (tp + fn) if tp + fn else None
        out[key] = {"accuracy": (tp + tn) / len(items), "precision": prec, "recall": rec,
                    "f1": (2 * prec * rec / (prec + rec)) if prec and rec else 0.0, "yes_ratio": (tp + fp) / len(items)}
    return out


def test_pope_strategies_end_to_end(served, capsys):
    from vseam.benchmarks.strategies import read_manifest
    from vseam.cli import main

    base, work = served
    out = work / "out"
    code = main(eval_argv(base, out, "--strategies", str(work / "st"), "--constrain", "--folds", "200"))
    printed = capsys.readouterr().out
    assert code == 0, printed
    report = json.loads((out / "report.json").read_text())
    manifest = read_manifest(work / "st")
    assert [a["label"] for a in report["arms"]] == list(manifest)
    assert report["family"] == "llava" and report["data"]["records"] == 24
    assert report["requests"]["failed"] == 0 and report["requests"]["asked"] == report["requests"]["unique"]

    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 5 * 24
    assert {p["reply"] for p in preds} <= {"Yes", "No"}  # constrained decoding
    # the loader delivered exactly the fixture's questions and labels
    got = sorted((p["category"], p["gold"]) for p in preds if p["label"] == "original")
    assert got == sorted((s, lab) for s, _, _, lab in fixture_labels())
    # metrics: recounted from the raw replies
    want = recount(preds)
    for (label, split), w in want.items():
        m = report["metrics"][label][split]
        for k, v in w.items():
            assert m[k] == pytest.approx(v), (label, split, k)
        assert m["unparsed"] == 0
    # the profiles are really applied per request: strategies answer differently on the same items
    replies = {lb: [p["reply"] for p in preds if p["label"] == lb] for lb in manifest}
    assert sum(len(set(col)) > 1 for col in zip(*replies.values())) >= 5
    sig = report["significance"]
    assert sig["config"]["reference"] == "rescaling" and sig["config"]["procedure"].startswith("paper Table-18")
    assert set(sig["categories"]) == {*SPLITS, "Overall"}
    assert set(sig["categories"]["Overall"]) == {"original", "w/o negative", "w/o positive", "random remove"}
    tests = report["paired_tests"]["categories"]
    assert set(tests) == {*SPLITS, "Overall"}
    for base_label, t in tests["Overall"].items():  # McNemar's counts are the replies' own
        ref_ok = [p["correct"] for p in preds if p["label"] == "rescaling"]
        base_ok = [p["correct"] for p in preds if p["label"] == base_label]
        assert (t["n"], t["ref_only"], t["base_only"]) == (
            24, sum(r and not b for r, b in zip(ref_ok, base_ok)), sum(b and not r for r, b in zip(ref_ok, base_ok)))
        assert 0.0 <= t["p"] <= 1.0 and t["ci_low_pp"] <= t["diff_pp"] <= t["ci_high_pp"]
    # the verdict on the paper's claim is read from the same overall test against the unedited arm
    claim, over = report["claim"], tests["Overall"]["original"]
    assert (claim["reference"], claim["baseline"], claim["alpha"]) == ("rescaling", "original", 0.001)
    assert (claim["n"], claim["fixed"], claim["broken"], claim["p"]) == (
        over["n"], over["ref_only"], over["base_only"], over["p"])
    assert claim["behind"] == sorted(s for s in SPLITS if tests[s]["original"]["diff_pp"] < 0)
    assert claim["met"] == (over["diff_pp"] > 0 and over["p"] < 0.001 and not claim["behind"])
    md = (out / "report.md").read_text()
    assert "## POPE per split" in md and "## Significance: rescaling − baseline" in md and md in printed
    assert "## The paper's claim" in md and ("claim met at p < 0.001" in md) == claim["met"]
    assert "## Paper Table-18 procedure" in md
    assert (out / "report.png").stat().st_size > 5000

    # a re-run asks nothing and reports the same numbers
    assert main(eval_argv(base, out, "--strategies", str(work / "st"), "--constrain", "--folds", "200")) == 0
    again = json.loads((out / "report.json").read_text())
    assert again["requests"]["asked"] == 0 and again["requests"]["from_cache"] == report["requests"]["unique"]
    assert again["metrics"] == report["metrics"] and again["significance"] == report["significance"]

    # choosing the profile by model name (MODEL:NAME) gives the same replies
    assert main(eval_argv(base, work / "by-name", "--strategies", str(work / "st"), "--constrain",
                          "--profile-via", "model", "--folds", "200")) == 0
    by_name = [json.loads(x) for x in (work / "by-name" / "predictions.jsonl").read_text().splitlines()]
    assert [(p["label"], p["qid"], p["reply"]) for p in by_name] == [(p["label"], p["qid"], p["reply"]) for p in preds]
    capsys.readouterr()


def test_free_replies_and_errors(served, capsys):
    """Unconstrained, the tiny random model rambles: every reply is counted as unparsed, none is scored correct."""
    from vseam.cli import main

    base, work = served
    out = work / "free"
    assert main(eval_argv(base, out, "--profile", "none", "--profile", "cal")) == 0
    report = json.loads((out / "report.json").read_text())
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    unparsed = sum(p["prediction"] is None for p in preds if p["label"] == "none")
    m = report["metrics"]["none"]["all"]
    assert m["unparsed"] == unparsed and m["correct"] == sum(p["correct"] for p in preds if p["label"] == "none")
    assert m["answered"] + m["unparsed"] == m["n"] == 24
    # what the docstring claims, counted: all 24 replies of each profile unparsed, none correct
    for label in ("none", "cal"):
        mine = [p for p in preds if p["label"] == label]
        assert len(mine) == 24 and all(p["prediction"] is None and not p["correct"] for p in mine), label
        assert report["metrics"][label]["all"]["unparsed"] == 24 and report["metrics"][label]["all"]["correct"] == 0
        assert report["metrics"][label]["all"]["accuracy"] == 0.0
    assert report["significance"] is None  # no reference named

    assert main(eval_argv(base, work / "bad", "--profile", "nonexistent")) == 1
    err = capsys.readouterr().err
    assert "--profile nonexistent: not selectable" in err and "cal-wo-negative" in err


def test_eval_requests_are_tokenized_like_the_hf_prompt(served, tiny_llava_dir):
    """The chat requests `vseam eval` sends render, on the server, to exactly the HF processor's Table-8 prompt."""
    import httpx
    from PIL import Image
    from transformers import AutoProcessor

    from vseam.benchmarks import cocoqa, pope
    from vseam.benchmarks.client import build_messages, image_data_url
    from vseam.calibrate.records import VQARecord
    from vseam.core.families import FAMILIES

    base, _ = served
    family = FAMILIES["llava"]
    processor = AutoProcessor.from_pretrained(str(tiny_llava_dir))
    image = FIXTURE / "images" / "shapes_0002.png"
    rec = VQARecord(qid="q", dataset="x", question="Is there a star in the image?", answer="yes", image=str(image))
    for mod in (pope, cocoqa):
        prompt = mod.prompt(family, rec)
        r = httpx.post(f"{base}/tokenize", json={"model": SERVED, "messages": build_messages(family, prompt, image_data_url(image)),
                                                 "add_generation_prompt": True, **family.chat_extra_body}, timeout=60)
        assert r.status_code == 200, r.text
        text = family.render_prompt(processor, prompt.text, prompt.system)
        want = processor(images=Image.open(image).convert("RGB"), text=text, return_tensors="pt")["input_ids"][0]
        assert r.json()["tokens"] == want.tolist(), (mod.NAME, text)
