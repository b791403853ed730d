"""Counterfactual questions through an LLM: `LLMRewriter` against a local fake OpenAI-compatible server.

fastapi (a dependency of vLLM, optional for the offline rules) serves the fake; without it only this module skips.
"""

from __future__ import annotations

import re
import socket
import threading
import time

import pytest

from vseam.calibrate.counterfactual import PROMPT_VERSION, CounterfactualError, LLMRewriter
from vseam.calibrate.records import VQARecord

fastapi = pytest.importorskip("fastapi")
FastAPI, Request = fastapi.FastAPI, fastapi.Request  # module level: the route's annotation must resolve here


def rec(question, answer="yes", subtype="color", full=None, qid="q1"):
    return VQARecord(qid=qid, dataset="t", question=question, answer=answer, image="x", subtype=subtype, full_answer=full)


SWAPS = {"red": "green", "left": "right", "dog": "cat", "wood": "metal"}


def _fake_app(calls: list):
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        calls.append(body)
        prompt = body["messages"][-1]["content"]
        question = re.findall(r"Question: (.*)", prompt)[-1]
        words = question.rstrip("?").split()
        reply = " ".join(SWAPS.get(w, w) for w in words) + "?"
        if "broken" in question:
            reply = "Sure! Here is a completely different question about something else entirely?"
        return {
            "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": f"New question: {reply}"}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }  # fmt: skip

    return app


@pytest.fixture(scope="module")
def fake_llm():
    import uvicorn

    calls: list = []
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(_fake_app(calls), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}/v1", calls
    server.should_exit = True
    thread.join(timeout=10)


def test_llm_rewriter_parses_reply_and_caches_on_disk(fake_llm, tmp_path, monkeypatch):
    url, calls = fake_llm
    monkeypatch.setenv("VSEAM_TEST_KEY", "sk-test")
    rw = LLMRewriter(url, "fake-gpt", tmp_path, api_key_env="VSEAM_TEST_KEY")
    n0 = len(calls)
    cf = rw(rec("Is the sofa red?", full="The sofa is red."))
    assert (cf.question, cf.source, cf.target, cf.method) == ("Is the sofa green?", "red", "green", "llm:fake-gpt")
    assert cf.prompt == "a green sofa"
    sp = rw(rec("Is the cat to the left of the sofa?", subtype="spatial"))
    assert (sp.source, sp.target) == ("left", "right")
    no = rw(rec("Is there a dog in this picture?", answer="no", subtype="animal", full="There is a cat."))
    assert (no.question, no.source, no.target) == ("Is there a cat in this picture?", "cat", "dog")
    assert len(calls) - n0 == 3
    body = calls[-1]
    assert body["model"] == "fake-gpt" and body["temperature"] == 0
    assert "Example 1" in body["messages"][0]["content"]
    # a new rewriter on the same cache dir answers from disk: no request
    again = LLMRewriter(url, "fake-gpt", tmp_path, api_key_env="VSEAM_TEST_KEY")
    assert again(rec("Is the sofa red?", full="The sofa is red.")) == cf
    assert len(calls) - n0 == 3 and again.requests == 0
    # the key includes the model and the prompt version
    other = LLMRewriter(url, "other-model", tmp_path, api_key_env="VSEAM_TEST_KEY")
    other(rec("Is the sofa red?", full="The sofa is red."))
    assert len(calls) - n0 == 4
    rows = (tmp_path / "counterfactuals.jsonl").read_text().splitlines()
    assert len(rows) == 4 and all(f'"prompt_version": "{PROMPT_VERSION}"' in r for r in rows)
    with pytest.raises(CounterfactualError, match="more than one semantic unit"):
        rw(rec("Is the broken sofa red?"))


def test_llm_unreachable_is_not_cached(tmp_path):
    from vseam.calibrate.counterfactual import LLMUnavailable

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rw = LLMRewriter(f"http://127.0.0.1:{port}/v1", "m", tmp_path, max_retries=0, timeout=5)
    with pytest.raises(LLMUnavailable, match="request failed"):
        rw(rec("Is the sofa red?"))
    assert not (tmp_path / "counterfactuals.jsonl").exists()
