"""The evaluation client against a fake OpenAI server that counts what it is asked.

Covers: request bodies (Table-8 prompt, image data URL, profile selection, family extras), bounded concurrency,
retries with backoff, failures that are reported and retried on the next run, the answer cache (a re-run asks
nothing), an interrupted run (a killed process) resuming without re-asking answered items, the server checks,
family detection, and strategies + significance in the report.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from vseam.benchmarks.client import Endpoint, ResponseCache
from vseam.benchmarks.run import Arm, EvalConfig, detect_family, evaluate
from vseam.calibrate.records import VQARecord
from vseam.core.errors import UserError
from vseam.core.families import FAMILIES

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "eval"
MODEL = "tiny-llava"
LLAVA = FAMILIES["llava"]


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):  # a killed client hung up
            super().handle_error(request, client_address)


class FakeOpenAI:
    """A threaded HTTP server speaking enough of the OpenAI API; `answer(body) -> (status, reply)` decides."""

    def __init__(self, answer, profiles: list[str] | None = None, delay: float = 0.0, model_root: str | None = None):
        self.answer = answer
        self.profiles = profiles  # None: no /v1/head_profiles (a plain server)
        self.delay = delay
        self.model_root = model_root
        self.requests: list[dict] = []
        self.attempts: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, doc) -> None:
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path == "/v1/models":
                    return self._send(200, {"object": "list", "data": [
                        {"id": MODEL, "object": "model", "root": fake.model_root or MODEL}]})
                if self.path == "/v1/head_profiles" and fake.profiles is not None:
                    return self._send(200, {"object": "list", "selectable": ["none", *fake.profiles, "auto"],
                                            "data": [{"name": p, "fingerprint": {
                                                "architecture": "LlavaForConditionalGeneration"}}
                                                     for p in fake.profiles]})
                return self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                    text = body["messages"][-1]["content"][-1]["text"]
                    k = f"{profile_of(body)}|{text}|{hash(json.dumps(body['messages']))}"
                    fake.attempts[k] = fake.attempts.get(k, 0) + 1
                    attempt = fake.attempts[k]
                try:
                    time.sleep(fake.delay)
                    status, reply = fake.answer(body, attempt)
                    with fake.lock:
                        fake.requests.append(body | {"_status": status})
                    if status != 200:
                        return self._send(status, {"error": {"message": reply, "type": "BadRequestError"}})
                    self._send(200, {
                        "id": "cmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": reply}}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
                finally:
                    with fake.lock:
                        fake.in_flight -= 1

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def ok(self) -> list[dict]:
        return [r for r in self.requests if r["_status"] == 200]


def profile_of(body: dict) -> str:
    xargs = (body.get("vllm_xargs") or {}).get("head_profile")
    if xargs:
        return xargs
    return body["model"].split(":", 1)[1] if ":" in body["model"] else "default"


def question_of(body: dict) -> str:
    text = body["messages"][-1]["content"][-1]["text"]
    return text.removeprefix("Question: ").split("?")[0] + "?"


def pope_records() -> list[VQARecord]:
    """The POPE fixture's questions, loaded by `vseam.calibrate.datasets` as `vseam eval pope` does."""
    from vseam.benchmarks.run import load_records

    records, excluded, skipped = load_records("pope", [str(FIXTURE)], str(FIXTURE / "images"))
    assert len(records) == 24 and not excluded and not skipped
    return records


GOLD = {r.question + "|" + pathlib.Path(r.image).name: r.answer for r in pope_records()}
#: distinct (question, image) pairs: POPE repeats a question about an image across splits; it is asked once
UNIQUE = len(GOLD)


def image_name(body: dict) -> str:
    url = body["messages"][-1]["content"][0]["image_url"]["url"]
    data = base64.b64decode(url.split(",", 1)[1])
    for p in (FIXTURE / "images").iterdir():
        if p.read_bytes() == data:
            return p.name
    raise AssertionError("image bytes do not match any fixture image")


def truthful(body, attempt):
    """Answers correctly under profile 'good', says Yes to everything otherwise."""
    gold = GOLD[question_of(body) + "|" + image_name(body)]
    if profile_of(body) == "good":
        return 200, "Yes." if gold == "yes" else "No, there is not."
    return 200, "Yes"


def config(tmp_path, url, arms=("none",), **kw) -> EvalConfig:
    arms = [a if isinstance(a, Arm) else Arm(a, a) for a in arms]
    kw.setdefault("progress", False)
    return EvalConfig(task="pope", endpoint=Endpoint(url, MODEL, profile_via=kw.pop("via", "xargs")), arms=arms,
                      out_dir=tmp_path / "out", **kw)


def test_requests_metrics_concurrency_and_cache(tmp_path):
    records = pope_records()
    with FakeOpenAI(truthful, profiles=["good"], delay=0.05) as fake:
        rep = evaluate(config(tmp_path, fake.url, ["none", "good"], concurrency=3), records, LLAVA)
        assert UNIQUE == 14 and len(records) == 24
        assert len(fake.requests) == 2 * UNIQUE
        assert 1 < fake.max_in_flight <= 3
        body = fake.requests[0]
        assert body["temperature"] == 0 and body["max_tokens"] == 8 and body["add_special_tokens"] is True
        assert body["model"] == MODEL
        assert body["messages"][0]["content"][0]["image_url"]["url"].startswith("data:image/")
        texts = {r["messages"][-1]["content"][-1]["text"] for r in fake.requests}
        assert texts == {LLAVA.binary_text(r.question) for r in records}
        jpeg = [r for r in fake.requests if image_name(r) == "shapes_0003.jpg"]
        assert jpeg and all(r["messages"][0]["content"][0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
                            for r in jpeg)
        assert sorted(profile_of(r) for r in fake.requests) == ["good"] * UNIQUE + ["none"] * UNIQUE

        # every answer is cached: a second run asks nothing and reports the same numbers
        again = evaluate(config(tmp_path, fake.url, ["none", "good"]), records, LLAVA)
        assert len(fake.requests) == 2 * UNIQUE
        assert again["requests"]["from_cache"] == 2 * UNIQUE and again["requests"]["asked"] == 0
        assert again["metrics"] == rep["metrics"]

    good, none = rep["metrics"]["good"], rep["metrics"]["none"]
    for split in ("random", "popular", "adversarial", "all"):
        assert good[split]["accuracy"] == 1.0 and good[split]["f1"] == 1.0 and good[split]["yes_ratio"] == 0.5
        assert none[split]["accuracy"] == 0.5 and none[split]["recall"] == 1.0 and none[split]["yes_ratio"] == 1.0
    assert rep["requests"] == {"items": 48, "unique": 2 * UNIQUE, "from_cache": 0, "asked": 2 * UNIQUE, "failed": 0,
                               "first_errors": []}
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} >= {"report.json", "report.md", "report.png", "responses.jsonl",
                                               "predictions.jsonl"}
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 48 and {p["prediction"] for p in preds if p["label"] == "none"} == {"yes"}

    with FakeOpenAI(truthful, profiles=["good"]) as fake:  # --refresh asks again
        evaluate(config(tmp_path, fake.url, ["good"], refresh=True), records, LLAVA)
        assert len(fake.requests) == UNIQUE


def test_profile_by_model_name(tmp_path):
    with FakeOpenAI(truthful, profiles=["good"]) as fake:
        evaluate(config(tmp_path, fake.url, ["good"], via="model"), pope_records()[:4], LLAVA)
    assert {r["model"] for r in fake.requests} == {f"{MODEL}:good"}
    assert all("vllm_xargs" not in r for r in fake.requests)


def test_retries_with_backoff_then_success(tmp_path):
    records = pope_records()[:6]
    flaky = (records[2].question, pathlib.Path(records[2].image).name)

    def answer(body, attempt):
        if (question_of(body), image_name(body)) == flaky and attempt <= 2:
            return 503, "overloaded, try again"
        return truthful(body, attempt)

    with FakeOpenAI(answer, profiles=["good"]) as fake:
        t0 = time.time()
        rep = evaluate(config(tmp_path, fake.url, ["good"], retries=3), records, LLAVA)
        took = time.time() - t0
    tries = [r for r in fake.requests if (question_of(r), image_name(r)) == flaky]
    assert [r["_status"] for r in tries] == [503, 503, 200]
    assert took >= 0.5  # openai's backoff waits between attempts (0.5 s, then 1 s, with jitter)
    assert rep["requests"]["failed"] == 0 and rep["metrics"]["good"]["all"]["accuracy"] == 1.0


def test_failures_are_reported_and_retried_next_run(tmp_path):
    records = pope_records()[:8]
    bad = (records[5].question, pathlib.Path(records[5].image).name)
    state = {"broken": True}

    def answer(body, attempt):
        if (question_of(body), image_name(body)) == bad and state["broken"]:
            return 400, "image too large"
        return truthful(body, attempt)

    with FakeOpenAI(answer, profiles=["good"]) as fake:
        rep = evaluate(config(tmp_path, fake.url, ["good"]), records, LLAVA)
        assert rep["requests"]["failed"] == 1
        assert "image too large" in rep["requests"]["first_errors"][0] and records[5].qid in rep["requests"]["first_errors"][0]
        assert rep["metrics"]["good"]["all"]["n"] == 7 and rep["metrics"]["good"]["all"]["failed"] == 1
        assert "image too large" in (tmp_path / "out" / "report.md").read_text()
        assert len(fake.requests) == 8  # a 400 is not retried
        state["broken"] = False
        rep2 = evaluate(config(tmp_path, fake.url, ["good"]), records, LLAVA)
        assert len(fake.requests) == 9  # only the failed item was asked again
        assert rep2["requests"]["failed"] == 0 and rep2["metrics"]["good"]["all"]["n"] == 8


def test_broken_server_aborts_early(tmp_path):
    from vseam.benchmarks.client import EvalAborted

    with FakeOpenAI(lambda body, attempt: (500, "engine dead"), profiles=[]) as fake:
        with pytest.raises(EvalAborted, match="engine dead"):
            evaluate(config(tmp_path, fake.url, ["none"], retries=0, concurrency=2, max_consecutive_failures=5),
                     pope_records(), LLAVA)
        assert 5 <= len(fake.requests) <= 6 < UNIQUE  # the in-flight one may still finish


def test_server_checks(tmp_path):
    with FakeOpenAI(truthful, profiles=["good"]) as fake:
        with pytest.raises(UserError, match=r"--profile typo: not selectable .*selectable: none, good, auto"):
            evaluate(config(tmp_path, fake.url, ["typo"]), pope_records(), LLAVA)
        cfg = config(tmp_path, fake.url)
        cfg.endpoint = Endpoint(fake.url, "other-model")
        with pytest.raises(UserError, match="--model other-model: not served .*served: tiny-llava"):
            evaluate(cfg, pope_records(), LLAVA)
    with FakeOpenAI(truthful, profiles=None) as plain:
        with pytest.raises(UserError, match="does not list head profiles"):
            evaluate(config(tmp_path, plain.url, ["good"]), pope_records(), LLAVA)
        evaluate(config(tmp_path, plain.url, ["none"]), pope_records()[:2], LLAVA)  # 'none' is fine on plain vLLM
        assert len(plain.requests) == 2
    with pytest.raises(UserError, match="cannot reach"):
        evaluate(config(tmp_path, plain.url), pope_records(), LLAVA)
    with pytest.raises(UserError, match="occurs more than once"):
        evaluate(config(tmp_path, plain.url), pope_records() * 2, LLAVA)


def test_family_detection(tmp_path):
    model_dir = tmp_path / "ckpt"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps({"architectures": ["InstructBlipForConditionalGeneration"]}))
    with FakeOpenAI(truthful, profiles=None, model_root=str(model_dir)) as plain:
        assert detect_family(Endpoint(plain.url, MODEL)).name == "instructblip"
        assert detect_family(Endpoint(plain.url, MODEL), "llava").name == "llava"
    with FakeOpenAI(truthful, profiles=["good"]) as fake:
        assert detect_family(Endpoint(fake.url, MODEL)).name == "llava"  # from the profile fingerprint
    with FakeOpenAI(truthful, profiles=None) as plain:
        with pytest.raises(UserError, match="pass --family"):
            detect_family(Endpoint(plain.url, MODEL))
        with pytest.raises(UserError, match="--family qwen: unknown"):
            detect_family(Endpoint(plain.url, MODEL), "qwen")


def test_strategies_and_significance(tmp_path):
    """Five strategies through one server; the report carries Table-18 statistics for rescaling − baseline."""
    records = pope_records()
    accuracy = {"none": 0.5, "cal-wo-negative": 0.75, "cal-wo-positive": 0.25, "cal-random-remove": 0.5, "cal": 1.0}
    order = {r.question + "|" + pathlib.Path(r.image).name: i for i, r in enumerate(records)}

    def answer(body, attempt):
        key = question_of(body) + "|" + image_name(body)
        right = order[key] % 4 < 4 * accuracy[profile_of(body)]
        gold = GOLD[key]
        return 200, gold.capitalize() if right else ("No" if gold == "yes" else "Yes")

    names = list(accuracy)
    labels = ["original", "w/o negative", "w/o positive", "random remove", "rescaling"]
    arms = [Arm(lb, p) for lb, p in zip(labels, names)]
    with FakeOpenAI(answer, profiles=names[1:]) as fake:
        rep = evaluate(config(tmp_path, fake.url, arms, reference="rescaling", folds=200, fold_size=50), records, LLAVA)
    head = rep["headline"]
    assert head["rescaling"]["all"] == 1.0 and head["w/o positive"]["all"] == 0.25
    sig = rep["significance"]
    assert sig["config"]["reference"] == "rescaling" and sig["config"]["folds"] == 200
    assert set(sig["categories"]) == {"random", "popular", "adversarial", "Overall"}
    for base in ("original", "w/o negative", "w/o positive", "random remove"):
        row = sig["categories"]["Overall"][base]
        assert row["folds"] == 600 and row["mean_delta_pp"] > 0
        assert row["significance"] == "***"
    assert sig["categories"]["Overall"]["w/o positive"]["mean_delta_pp"] > sig["categories"]["Overall"]["w/o negative"]["mean_delta_pp"]
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Significance: rescaling − baseline" in md and "| Overall | w/o positive |" in md
    assert "| rescaling (`cal`) | 100.00 |" in md

    # the claim is judged against the one unedited arm (profile none), on the overall McNemar test
    over, claim = rep["paired_tests"]["categories"]["Overall"]["original"], rep["claim"]
    n = len(records)
    assert (claim["baseline"], claim["n"], claim["fixed"], claim["broken"]) == ("original", n, n // 2, 0)
    assert claim["p"] == over["p"] == pytest.approx(2 * 0.5 ** (n // 2))
    assert claim["met"] == (claim["p"] < 0.001) and claim["behind"] == []
    assert "## The paper's claim" in md and f"claim {'met' if claim['met'] else 'not met'} at p < 0.001" in md
    with FakeOpenAI(answer, profiles=names[1:]) as fake:  # a stricter level, from the cache
        strict = evaluate(config(tmp_path, fake.url, arms, reference="rescaling", folds=50, fold_size=50,
                                 claim_alpha=1e-9), records, LLAVA)
        assert not fake.requests
    assert not strict["claim"]["met"] and "is not below 1e-09" in strict["claim"]["reasons"][0]
    with FakeOpenAI(answer, profiles=names[1:]) as fake:  # no unedited arm: nothing to judge the claim against
        no_base = evaluate(config(tmp_path, fake.url, arms[1:], reference="rescaling", folds=50, fold_size=50),
                           records, LLAVA)
    assert no_base["claim"] is None and "## The paper's claim" not in (tmp_path / "out" / "report.md").read_text()
    for bad in (0.0, 1.0, 2.0):
        with pytest.raises(UserError, match="--claim-alpha must lie strictly between 0 and 1"):
            config(tmp_path, "http://unused", arms, reference="rescaling", claim_alpha=bad)


def test_torn_cache_line_is_skipped(tmp_path):
    path = tmp_path / "responses.jsonl"
    path.write_text(json.dumps({"key": "a", "reply": "Yes"}) + "\n" + '{"key": "b", "re')
    cache = ResponseCache(path)
    assert "a" in cache and "b" not in cache and cache.skipped_lines == 1
    cache.put({"key": "c", "reply": "No"})
    cache.close()
    again = ResponseCache(path)
    assert set(again.entries) == {"a", "c"} and again.skipped_lines == 1


INTERRUPTIBLE = """
import json, pathlib, sys
sys.path.insert(0, {tests!r})
from test_eval_client import pope_records, config, LLAVA
from vseam.benchmarks.run import evaluate
import pathlib
evaluate(config(pathlib.Path({tmp!r}), {url!r}, ["none", "good"], concurrency=2), pope_records(), LLAVA)
"""


def test_interrupted_eval_resumes_without_reasking(tmp_path):
    """Kill an eval mid-run (SIGKILL: no clean-up at all), then run it again: answered items are not asked again."""
    records = pope_records()
    with FakeOpenAI(truthful, profiles=["good"], delay=0.15) as fake:
        code = INTERRUPTIBLE.format(tests=str(pathlib.Path(__file__).parent), tmp=str(tmp_path), url=fake.url)
        env = {**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).parents[1])}
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        cache_file = tmp_path / "out" / "responses.jsonl"
        deadline = time.time() + 120
        while time.time() < deadline:
            if cache_file.exists() and len(cache_file.read_text().splitlines()) >= 10:
                break
            if proc.poll() is not None:
                raise AssertionError(proc.stdout.read().decode())
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        time.sleep(0.3)  # let the server finish requests that were in flight
        where = {r.qid: (r.question, pathlib.Path(r.image).name) for r in records}
        answered = {(e["profile"], *where[e["qid"]]) for e in map(json.loads, cache_file.read_text().splitlines())}
        asked_first = len(fake.requests)
        assert 10 <= len(answered) < 2 * UNIQUE and asked_first >= len(answered)

        rep = evaluate(config(tmp_path, fake.url, ["none", "good"]), records, LLAVA)
    second = fake.requests[asked_first:]
    asked_again = [(profile_of(b), question_of(b), image_name(b)) for b in second]
    assert not set(asked_again) & answered, "an answered item was asked again"
    assert len(asked_again) == len(set(asked_again)) == 2 * UNIQUE - len(answered)
    assert rep["requests"]["from_cache"] == len(answered) and rep["requests"]["failed"] == 0
    assert rep["metrics"]["good"]["all"]["accuracy"] == 1.0 and rep["metrics"]["none"]["all"]["n"] == 24


def test_constrained_replies(tmp_path):
    with FakeOpenAI(truthful, profiles=["good"]) as fake:
        evaluate(config(tmp_path, fake.url, ["good"], constrain=True), pope_records()[:2], LLAVA)
        assert [r["structured_outputs"] for r in fake.requests] == [{"choice": ["Yes", "No"]}] * 2
        cfg = config(tmp_path, fake.url, ["good"], constrain=True)
        cfg.task = "cocoqa"
        with pytest.raises(UserError, match="--constrain: cocoqa is open-ended"):
            evaluate(cfg, pope_records()[:2], LLAVA)
        evaluate(config(tmp_path, fake.url, ["good"]), pope_records()[:2], LLAVA)
        assert len(fake.requests) == 4, "constrained and free replies are cached apart"
        assert "structured_outputs" not in fake.requests[-1]


SHORT_REPLIES = {  # question -> reply of the fake model (gold in the fixture's comment)
    "what is the color of the circle": "Red.",  # red ✓
    "what is the color of the square": "The blue one",  # blue ✗ (exact match after normalisation)
    "what is the color of the triangle": "green",  # green ✓
    "where is the star": "In the corner",  # corner ✗
    "where is the orange square": "Top",  # top ✓
}
BINARY_REPLIES = {
    "Is the circle red?": "Yes",  # yes ✓
    "Is the square green?": "No, it is blue.",  # no ✓
    "Is there a triangle in this picture?": "No",  # yes ✗
    "Is there a star in this picture?": "no",  # no ✓
    "Is the square to the left of the circle?": "Yes.",  # yes ✓
    "Is the star to the right of the square?": "I cannot tell.",  # no, unparsed
    "Is the circle above the square?": "Yes",  # no ✗
}


def scripted(body, attempt):
    text = body["messages"][-1]["content"][-1]["text"]
    for q, reply in {**SHORT_REPLIES, **BINARY_REPLIES}.items():
        if f"Question: {q} " in text:
            return 200, reply
    return 400, f"unexpected question {text!r}"


def test_cli_cocoqa_and_gqa_on_fixtures(tmp_path, capsys):
    """`vseam eval cocoqa|gqa` load the fixture files through vseam.calibrate.datasets and score them as computed by hand."""
    from vseam.cli import main

    with FakeOpenAI(scripted, profiles=["good"]) as fake:
        base = fake.url.removesuffix("/v1")  # /v1 is added when missing
        code = main(["eval", "cocoqa", "--base-url", base, "--model", MODEL, "--data", str(FIXTURE / "cocoqa"),
                     "--images", str(FIXTURE / "images"), "--out", str(tmp_path / "cq"), "--no-progress"])
        assert code == 0, capsys.readouterr()
        sys_lines = [r for r in fake.requests if r["messages"][0]["role"] == "system"]
        assert len(sys_lines) == len(fake.requests) == 5  # LLaVA's short-answer system line; count type not asked
        assert fake.requests[0]["max_tokens"] == 16
        cq = json.loads((tmp_path / "cq" / "report.json").read_text())
        m = cq["metrics"]["none"]
        assert m["color"]["accuracy"] == pytest.approx(2 / 3) and m["location"]["accuracy"] == pytest.approx(1 / 2)
        assert m["all"]["accuracy"] == pytest.approx(3 / 5)
        assert m["mean of types"]["accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
        assert "object" not in m
        assert cq["data"]["excluded"] == {"number (excluded as in the paper)": 1}

        code = main(["eval", "gqa", "--base-url", fake.url, "--model", MODEL, "--data", str(FIXTURE / "gqa"),
                     "--images", str(FIXTURE / "images"), "--out", str(tmp_path / "gqa"), "--no-progress",
                     "--profile", "none", "--profile", "good", "--reference", "good", "--folds", "100",
                     "--fold-size", "20"])
        assert code == 0, capsys.readouterr()
        out = capsys.readouterr().out
    g = json.loads((tmp_path / "gqa" / "report.json").read_text())
    m = g["metrics"]["none"]
    assert {k: v["accuracy"] for k, v in m["subtypes"].items()} == pytest.approx(
        {"color": 1.0, "animal": 0.5, "spatial": 1 / 3})
    assert {k: v["accuracy"] for k, v in m["levels"].items()} == pytest.approx(
        {"attribute": 1.0, "object": 0.5, "relation": 1 / 3})
    assert m["subtypes"]["spatial"]["unparsed"] == 1
    assert m["all"]["accuracy"] == pytest.approx(4 / 7) and m["avg"] == pytest.approx((1 + 0.5 + 1 / 3) / 3)
    # the fake answers the same under both profiles: every Δ is 0 and the test is undefined, said so
    sig = g["significance"]["categories"]
    assert set(sig) == {"attribute", "object", "relation", "Overall"}
    assert all(row["none"]["mean_delta_pp"] == 0 and row["none"]["significance"] == "n/a" for row in sig.values())
    assert "| none | 100.00 | 50.00 | 33.33 | 100.00 | 50.00 | 33.33 | 61.11 |" in out


def test_cli_gqa_strategies_per_level(tmp_path, capsys):
    """Table 3 edits each level with its own heads: `--strategies LEVEL=DIR` routes each question accordingly."""
    from vseam.head_profiles import Fingerprint, HeadProfile, Provenance, Scope, now_iso, parse_heads
    from vseam.benchmarks.strategies import write_strategies
    from vseam.cli import main

    fp = Fingerprint(architecture="LlavaForConditionalGeneration", model_id="toy", num_layers=2, num_heads=4,
                     head_dim=32)
    dirs = {}
    for level, name, pos, neg in (("attribute", "att", "L1.H0=0.5", "L0.H1"), ("relation", "rel", "L0.H3=0.2", "L1.H2")):
        HeadProfile(name=name, fingerprint=fp, scope=Scope(level=level), k=1, positive=parse_heads(pos),
                    negative=parse_heads(neg), provenance=Provenance(method="test", tool_version="0",
                                                                     created=now_iso())).save(tmp_path / f"{name}.json")
        dirs[level] = write_strategies(tmp_path / f"{name}.json", tmp_path / f"st-{name}").parent
    served = [f"{n}{s}" for n in ("att", "rel") for s in ("", "-wo-negative", "-wo-positive", "-random-remove")]
    with FakeOpenAI(scripted, profiles=served) as fake:
        code = main(["eval", "gqa", "--base-url", fake.url, "--model", MODEL, "--data", str(FIXTURE / "gqa"),
                     "--images", str(FIXTURE / "images"), "--out", str(tmp_path / "out"), "--no-progress",
                     "--strategies", f"attribute={dirs['attribute']}", "--strategies", f"relation={dirs['relation']}",
                     "--folds", "50", "--fold-size", "10"])
        assert code == 0, capsys.readouterr()
    asked = {(question_of(r), profile_of(r)) for r in fake.requests}
    assert ("Is the circle red?", "att-wo-positive") in asked and ("Is the circle red?", "none") in asked
    assert ("Is the circle above the square?", "rel-random-remove") in asked
    assert not any(p.startswith("rel") for q, p in asked if q == "Is the circle red?")
    assert not any(p.startswith("att") for q, p in asked if "left of" in q or "above" in q or "right of" in q)
    assert len(fake.requests) == 5 * 5  # 5 questions (2 attribute + 3 relation) x 5 strategies; animal left out
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rep["data"]["excluded"] == {"level not in --strategies (attribute, relation)": 2}
    arms = {a["label"]: a for a in rep["arms"]}
    assert arms["rescaling"]["by_level"] == {"attribute": "att", "relation": "rel"}
    assert arms["original"]["profile"] == "none" and arms["original"]["by_level"] is None
    assert set(rep["significance"]["categories"]) == {"attribute", "relation", "Overall"}
    preds = [json.loads(x) for x in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert {p["profile"] for p in preds if p["label"] == "w/o negative"} == {"att-wo-negative", "rel-wo-negative"}
    assert main(["eval", "gqa", "--base-url", fake.url, "--model", MODEL, "--data", str(FIXTURE / "gqa"),
                 "--strategies", f"colour={dirs['attribute']}"]) == 1
    assert "level must be attribute, object or relation" in capsys.readouterr().err


def test_ctrl_c_stops_cleanly_and_the_same_command_resumes(tmp_path):
    """SIGINT to `vseam eval`: exit 130 with a resume hint; the same command then asks only the rest."""
    argv = [sys.executable, "-m", "vseam.cli", "eval", "pope", "--model", MODEL, "--data", str(FIXTURE),
            "--images", str(FIXTURE / "images"), "--out", str(tmp_path / "out"), "--profile", "good",
            "--concurrency", "1", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).parents[1])}
    # 1 s per answer: the 14 requests take ~14 s, so SIGINT lands mid-run even on a loaded machine
    with FakeOpenAI(truthful, profiles=["good"], delay=1.0) as fake:
        # a shell without job control starts background jobs with SIGINT ignored, and Python keeps that: give the
        # child the default disposition so that it gets KeyboardInterrupt however the test run was started
        proc = subprocess.Popen(argv + ["--base-url", fake.url], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        cache_file = tmp_path / "out" / "responses.jsonl"
        deadline = time.time() + 120
        while not (cache_file.exists() and len(cache_file.read_text().splitlines()) >= 3):
            assert proc.poll() is None and time.time() < deadline, proc.stdout.read() if proc.poll() is not None else ""
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 130, out
        assert "interrupted: answers so far are cached" in out
        done = len(cache_file.read_text().splitlines())
        # a request the interrupted run had in flight is recorded when the fake answers it: wait for that
        settle = time.time() + 10
        while fake.in_flight and time.time() < settle:
            time.sleep(0.05)
        first = len(fake.requests)
        assert 3 <= done < UNIQUE
        again = subprocess.run(argv + ["--base-url", fake.url], env=env, capture_output=True, text=True,
                               timeout=120)
        assert again.returncode == 0, again.stdout + again.stderr
    assert len(fake.requests) - first == UNIQUE - done
    assert f"({UNIQUE - done} asked, {done} from cache, 0 failed)" in again.stdout


def test_cli_gqa_on_the_shapes_world(tmp_path, capsys):
    """`--dataset shapes` evaluates the seven subtypes on the synthetic world (what the model organism knows)."""
    from vseam.cli import main

    with FakeOpenAI(lambda body, attempt: (200, "Yes"), profiles=[]) as fake:
        code = main(["eval", "gqa", "--dataset", "shapes", "--base-url", fake.url, "--model", MODEL, "--data", "test",
                     "--family", "llava", "--images", str(tmp_path / "img"), "--dataset-option", "size=28", "--out", str(tmp_path / "out"),
                     "--no-progress"])
        assert code == 0, capsys.readouterr()
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    preds = [json.loads(x) for x in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == len(fake.requests) == 28
    m = rep["metrics"]["none"]
    assert set(m["subtypes"]) == {"color", "material", "animal", "vehicle", "indoor", "spatial", "action"}
    for st, v in m["subtypes"].items():  # answering "Yes" to everything scores the share of yes questions
        gold = [p["gold"] for p in preds if p["category"] == st]
        assert v["n"] == 4 and v["accuracy"] == pytest.approx(gold.count("yes") / len(gold))
