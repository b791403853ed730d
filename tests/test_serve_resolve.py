"""Request -> profile resolution and the ASGI middleware, without vLLM (a stub app stands in for vLLM's server)."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from vseam.head_profiles import load_profile
from vseam.serve.protocol import ENV_VAR, ProfileEntry, ServeConfig
from vseam.serve.middleware import HeadProfileMiddleware
from vseam.serve.resolve import MAX_SALT, ProfileTable, RequestError, profile_salt
from vllm_server import write_profile

MODEL = "org/tiny-llava"


@pytest.fixture(scope="module")
def profile_files(tiny_llava_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("profiles")
    return {
        "colors": write_profile(tiny_llava_dir, out, "colors", "attribute", "L0.H1=0.9", "L1.H2=1"),
        "where": write_profile(tiny_llava_dir, out, "where", "relation", "L1.H3=1", "L0.H0=0.7"),
    }


def make_table(profile_files, mode="per-request", default="none", names=("colors", "where"), served=(MODEL,)):
    refs = [ProfileEntry.of(load_profile(profile_files[n])) for n in names]
    config = ServeConfig(mode=mode, profiles=refs, default=default, served_model_names=list(served), nonce="n0nce")
    return ProfileTable.from_config(config)


def chat(text="Is the cat red?", **extra):
    return {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}], **extra}


# ---- resolution ------------------------------------------------------------------------------------------------


def test_resolution_by_xargs_model_name_default_and_auto(profile_files):
    t = make_table(profile_files, default="where")
    assert t.resolve(chat(vllm_xargs={"head_profile": "colors"})).profile == "colors"
    assert t.resolve(chat(vllm_xargs={"head_profile": "none"})).profile == "none"
    r = t.resolve({**chat(), "model": f"{MODEL}:colors"})
    assert (r.profile, r.via) == ("colors", "model")
    r = t.resolve(chat())
    assert (r.profile, r.via) == ("where", "default")
    r = t.resolve(chat("Is the dog behind the car?", vllm_xargs={"head_profile": "auto"}))
    assert (r.profile, r.level) == ("where", "relation")
    assert t.resolve(chat("Is the car blue?", model=f"{MODEL}:auto")).profile == "colors"
    assert t.resolve(chat("Is there a dog?", vllm_xargs={"head_profile": "auto"})).profile == "none"  # no object/all


def test_unknown_profile_names_it_and_lists_the_valid_ones(profile_files):
    t = make_table(profile_files)
    with pytest.raises(RequestError) as e:
        t.resolve(chat(vllm_xargs={"head_profile": "colour"}))
    assert "'colour'" in e.value.message and all(n in e.value.message for n in ("none", "colors", "where", "auto"))
    assert e.value.param == "vllm_xargs.head_profile" and e.value.status == 400
    assert e.value.body()["error"]["code"] == 400
    with pytest.raises(RequestError, match="'nope'") as e:
        t.resolve({**chat(), "model": f"{MODEL}:nope"})
    assert e.value.param == "model"
    with pytest.raises(RequestError, match="'colors' in vllm_xargs but 'where'"):
        t.resolve({**chat(vllm_xargs={"head_profile": "colors"}), "model": f"{MODEL}:where"})
    with pytest.raises(RequestError, match="must be a string"):
        t.resolve(chat(vllm_xargs={"head_profile": 3}))


def test_static_mode_serves_only_the_folded_profile(profile_files):
    t = make_table(profile_files, mode="static", names=("colors",))
    assert t.resolve(chat()).profile == "colors"
    assert t.resolve(chat(vllm_xargs={"head_profile": "colors"})).profile == "colors"
    for name in ("none", "where", "auto"):
        with pytest.raises(RequestError, match="folded into its weights") as e:
            t.resolve(chat(vllm_xargs={"head_profile": name}))
        assert e.value.reason == "static_mode"
    body = t.apply(chat(vllm_xargs={"head_profile": "colors", "vseam_nonce": "x"}), t.resolve(chat()))
    assert "cache_salt" not in body and body["vllm_xargs"] == {}


def test_apply_rewrites_model_xargs_and_salts_the_prefix_cache_per_profile(profile_files):
    t = make_table(profile_files)
    body = {**chat(), "model": f"{MODEL}:where", "vllm_xargs": {"other": 1}}
    out = t.apply(body, t.resolve(body))
    assert out["model"] == MODEL
    assert out["vllm_xargs"] == {"other": 1, "head_profile": "where", "vseam_nonce": "n0nce"}
    assert out["cache_salt"] == "vseam-where"
    salts = {p: t.apply(chat(), t.resolve(chat(vllm_xargs={"head_profile": p})))["cache_salt"]
             for p in ("none", "colors", "where")}
    assert len(set(salts.values())) == 3
    # a client's own salt is kept (combined), and stays within vLLM's limit
    assert profile_salt("where", "tenant7") == "tenant7|vseam-where"
    long = profile_salt("where", "x" * 200)
    assert len(long) <= MAX_SALT and long != profile_salt("colors", "x" * 200)
    # a served model name that contains ':' is not split
    t2 = make_table(profile_files, served=("my:model",))
    assert t2.resolve({**chat(), "model": "my:model"}).profile == "none"


def test_listing(profile_files):
    listing = make_table(profile_files, default="colors").listing()
    assert listing["mode"] == "per-request" and listing["default"] == "colors"
    assert listing["selectable"] == ["none", "colors", "where", "auto"]
    first = listing["data"][0]
    assert first["name"] == "colors" and first["scope"]["level"] == "attribute" and first["num_heads"] == 2
    assert first["positive"] == ["L0.H1"] and first["negative"] == ["L1.H2"]
    assert first["fingerprint"]["num_heads"] == 4


# ---- middleware ------------------------------------------------------------------------------------------------


async def echo_app(scope, receive, send):
    """Stands in for vLLM: answers with the body and headers it received."""
    chunks = []
    while True:
        m = await receive()
        chunks.append(m.get("body", b""))
        if not m.get("more_body"):
            break
    raw = b"".join(chunks)
    try:
        body = json.loads(raw)
    except json.JSONDecodeError:
        body = raw.decode()
    headers = {k.decode(): v.decode() for k, v in scope["headers"]}
    payload = json.dumps({"path": scope["path"], "body": body, "content_length": headers.get("content-length")})
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": payload.encode()})


@pytest.fixture
def client(profile_files):
    return TestClient(HeadProfileMiddleware(echo_app, table=make_table(profile_files)))


def sample(name: str, **labels) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_middleware_rewrites_generation_requests(client):
    r = client.post("/v1/chat/completions", json={**chat(), "model": f"{MODEL}:colors"})
    assert r.status_code == 200 and r.headers["x-vseam-head-profile"] == "colors"
    seen = r.json()
    assert seen["body"]["model"] == MODEL and seen["body"]["vllm_xargs"]["head_profile"] == "colors"
    assert int(seen["content_length"]) == len(json.dumps(seen["body"]).encode())
    r = client.post("/v1/completions", json={"model": MODEL, "prompt": "Where is the cat?",
                                              "vllm_xargs": {"head_profile": "auto"}})
    assert r.headers["x-vseam-head-profile"] == "where"
    # other routes and non-JSON bodies pass through untouched
    assert client.post("/v1/embeddings", json={"model": f"{MODEL}:colors"}).json()["body"]["model"] == f"{MODEL}:colors"
    assert client.post("/v1/chat/completions", content=b"not json").json()["body"] == "not json"


def test_middleware_refuses_unknown_profiles_and_counts(client):
    rejected = sample("vseam_head_profile_rejections_total", reason="unknown_profile")
    served = sample("vseam_head_profile_requests_total", profile="none", via="default")
    r = client.post("/v1/chat/completions", json=chat(vllm_xargs={"head_profile": "colour"}))
    assert r.status_code == 400
    err = r.json()["error"]
    assert "unknown head profile 'colour'" in err["message"] and "colors" in err["message"]
    assert err["type"] == "BadRequestError" and err["param"] == "vllm_xargs.head_profile"
    assert client.post("/v1/chat/completions", json=chat()).status_code == 200  # still answering
    assert sample("vseam_head_profile_rejections_total", reason="unknown_profile") == rejected + 1
    assert sample("vseam_head_profile_requests_total", profile="none", via="default") == served + 1


def test_middleware_lists_profiles(client):
    r = client.get("/v1/head_profiles")
    assert r.status_code == 200
    assert [p["name"] for p in r.json()["data"]] == ["colors", "where"]


def test_middleware_passes_through_without_config(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    c = TestClient(HeadProfileMiddleware(echo_app))
    body = {**chat(), "model": f"{MODEL}:colors"}
    assert c.post("/v1/chat/completions", json=body).json()["body"] == body
    assert c.get("/v1/head_profiles").json()["path"] == "/v1/head_profiles"


def test_middleware_defers_unauthenticated_requests_to_vllm(profile_files):
    refs = [ProfileEntry.of(load_profile(profile_files["colors"]))]
    table = ProfileTable.from_config(ServeConfig(mode="per-request", profiles=refs, api_keys=["sekret"]))
    c = TestClient(HeadProfileMiddleware(echo_app, table=table))
    bad = chat(vllm_xargs={"head_profile": "nope"})
    assert c.post("/v1/chat/completions", json=bad).json()["body"] == bad  # vLLM's auth refuses it
    r = c.post("/v1/chat/completions", json=bad, headers={"Authorization": "Bearer sekret"})
    assert r.status_code == 400


def test_huge_names_come_back_and_are_logged_cut_short(client, caplog):
    """A 1 MB profile name is echoed (error body, log line) as a short prefix plus its length, never whole."""
    import logging

    huge = "x" * 1_000_000
    serve_log = logging.getLogger("vllm.vseam.serve")  # vLLM's loggers may not propagate to the root
    serve_log.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="vllm.vseam.serve"):
            r = client.post("/v1/chat/completions", json=chat(vllm_xargs={"head_profile": huge}))
            r2 = client.post("/v1/chat/completions", json={**chat(vllm_xargs={"head_profile": "colors"}),
                                                            "model": f"{MODEL}:{huge}"})
    finally:
        serve_log.removeHandler(caplog.handler)
    assert r.status_code == 400 and r2.status_code == 400
    for resp in (r, r2):
        assert len(resp.content) < 1_000, len(resp.content)
    msg = r.json()["error"]["message"]
    assert f"'{'x' * 64}... (1,000,000 characters)'" in msg
    assert "1,000,000 characters" in r2.json()["error"]["message"]
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "1,000,000 characters" in logged and len(logged) < 2_000
