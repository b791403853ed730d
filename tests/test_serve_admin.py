"""Admin routes of `vseam serve` (load / retire head profiles at run time), on the middleware with a stand-in app.

The worker side (`ScalingState.set_slot` through vLLM's `collective_rpc`) is checked against real vLLM servers in
`test_plugin_vllm.py::TestAdmin`; here the `update_workers` hook records the calls.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest

from vseam.core.families import fingerprint_of
from vseam.head_profiles import load_profile
from vseam.serve.middleware import HeadProfileMiddleware
from vseam.serve.protocol import ProfileEntry, ServeConfig
from vseam.serve.resolve import ProfileTable
from vllm_server import write_profile

MODEL = "org/tiny-llava"


@pytest.fixture(scope="module")
def files(tiny_llava_dir, tiny_instructblip_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("admin-profiles")
    return {
        "colors": write_profile(tiny_llava_dir, out, "colors", "attribute", "L0.H1=0.9", "L1.H2=1"),
        "where": write_profile(tiny_llava_dir, out, "where", "relation", "L1.H3=1", "L0.H0=0.7"),
        "extra": write_profile(tiny_llava_dir, out, "extra", "object", "L0.H2=0.5", ""),
        "foreign": write_profile(tiny_instructblip_dir, out, "foreign", "object", "L0.H2=0.5", ""),
    }


class Gate:
    """A stand-in for vLLM whose responses wait until released (so requests can be 'running')."""

    def __init__(self):
        self.release = asyncio.Event()
        self.running = 0

    async def __call__(self, scope, receive, send):
        self.running += 1
        await self.release.wait()
        self.running -= 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def make(files, tiny_llava_dir, capacity=3, admin=True, keys=("k",), admin_keys=()):
    refs = [ProfileEntry.of(load_profile(files["colors"]))]
    config = ServeConfig(mode="per-request", profiles=refs, served_model_names=[MODEL], nonce="n", capacity=capacity,
                         admin=admin, api_keys=list(keys), admin_keys=list(admin_keys),
                         fingerprint=fingerprint_of(tiny_llava_dir).model_dump())
    calls = []

    async def update(scope, row, name, scales):
        calls.append((row, name, None if scales is None else np.asarray(scales)))

    gate = Gate()
    return HeadProfileMiddleware(gate, table=ProfileTable.from_config(config), update_workers=update), gate, calls


def chat(profile):
    return {"model": MODEL, "messages": [{"role": "user", "content": "Is the cat red?"}],
            "vllm_xargs": {"head_profile": profile}}


AUTH = {"Authorization": "Bearer k"}


def test_load_serve_retire_while_running(files, tiny_llava_dir):
    mw, gate, calls = make(files, tiny_llava_dir)

    async def scenario():
        transport = httpx.ASGITransport(app=mw)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            doc = json.loads(files["where"].read_text())
            r = await c.post("/v1/head_profiles", json=doc, headers=AUTH)
            assert r.status_code == 200 and r.json()["row"] == 2, r.text
            row, name, scales = calls[-1]
            assert (row, name) == (2, "where")
            np.testing.assert_array_equal(scales, load_profile(files["where"]).scales())
            listing = (await c.get("/v1/head_profiles", headers=AUTH)).json()
            assert [p["name"] for p in listing["data"]] == ["colors", "where"] and listing["free_slots"] == 1

            running = asyncio.create_task(c.post("/v1/chat/completions", json=chat("where"), headers=AUTH))
            while gate.running < 1:
                await asyncio.sleep(0.01)
            r = await c.delete("/v1/head_profiles/where", headers=AUTH)
            assert r.json() == {"object": "head_profile", "name": "where", "status": "retiring"}
            r = await c.post("/v1/chat/completions", json=chat("where"), headers=AUTH)
            assert r.status_code == 400 and "unknown head profile 'where'" in r.json()["error"]["message"]
            assert len(calls) == 1  # the slot is still in use by the running request
            gate.release.set()
            assert (await running).status_code == 200  # the running request finished on its profile
            assert calls[-1][:2] == (2, None)  # ... then the slot was cleared in the workers
            listing = (await c.get("/v1/head_profiles", headers=AUTH)).json()
            assert [p["name"] for p in listing["data"]] == ["colors"] and listing["free_slots"] == 2

            # the freed slot takes the next profile; retiring an idle profile frees it at once
            doc = json.loads(files["extra"].read_text())
            assert (await c.post("/v1/head_profiles", json=doc, headers=AUTH)).json()["row"] == 2
            r = await c.delete("/v1/head_profiles/extra", headers=AUTH)
            assert r.json()["status"] == "retired" and calls[-1][:2] == (2, None)

    asyncio.run(scenario())


def test_admin_refusals_name_the_problem(files, tiny_llava_dir):
    mw, gate, calls = make(files, tiny_llava_dir, capacity=2)
    gate.release.set()

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=mw), base_url="http://t") as c:
            doc = json.loads(files["where"].read_text())
            assert (await c.post("/v1/head_profiles", json=doc)).status_code == 401  # no key
            r = await c.post("/v1/head_profiles", json=doc, headers={"Authorization": "Bearer wrong"})
            assert r.status_code == 401 and "admin key" in r.json()["error"]["message"]
            r = await c.post("/v1/head_profiles", json=json.loads(files["foreign"].read_text()), headers=AUTH)
            err = r.json()["error"]
            assert r.status_code == 400 and err["param"] == "fingerprint" and "does not fit" in err["message"]
            r = await c.post("/v1/head_profiles", json={**doc, "positive": [{"layer": 99, "head": 0, "lam": 1}]},
                             headers=AUTH)
            assert r.status_code == 400 and "99" in r.json()["error"]["message"]
            r = await c.post("/v1/head_profiles", content=b"{not json", headers=AUTH)
            assert r.status_code == 400 and "not JSON" in r.json()["error"]["message"]
            r = await c.post("/v1/head_profiles", json=json.loads(files["colors"].read_text()), headers=AUTH)
            assert r.status_code == 409 and "is loaded" in r.json()["error"]["message"]
            assert (await c.post("/v1/head_profiles", json=doc, headers=AUTH)).status_code == 200
            r = await c.post("/v1/head_profiles", json=json.loads(files["extra"].read_text()), headers=AUTH)
            assert r.status_code == 409 and "slots are in use" in r.json()["error"]["message"]
            r = await c.delete("/v1/head_profiles/" + "x" * 10_000, headers=AUTH)
            assert r.status_code == 404 and len(r.content) < 1_000
            assert calls and all(name != "extra" for _, name, _ in calls)

    asyncio.run(scenario())


def test_admin_is_off_without_a_key_unless_enabled(files, tiny_llava_dir):
    mw, gate, _ = make(files, tiny_llava_dir, admin=False, keys=())

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=mw), base_url="http://t") as c:
            r = await c.post("/v1/head_profiles", json=json.loads(files["where"].read_text()))
            assert r.status_code == 403 and "--enable-profile-admin" in r.json()["error"]["message"]

    asyncio.run(scenario())
    mw, _, calls = make(files, tiny_llava_dir, admin=True, keys=())  # --enable-profile-admin, no key

    async def open_scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=mw), base_url="http://t") as c:
            r = await c.post("/v1/head_profiles", json=json.loads(files["where"].read_text()))
            assert r.status_code == 200 and calls

    asyncio.run(open_scenario())


def test_a_failed_engine_update_gives_the_slot_back(files, tiny_llava_dir):
    mw, _, _ = make(files, tiny_llava_dir)

    async def broken(scope, row, name, scales):
        raise RuntimeError("engine gone")

    mw.update_workers = broken

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=mw), base_url="http://t") as c:
            r = await c.post("/v1/head_profiles", json=json.loads(files["where"].read_text()), headers=AUTH)
            assert r.status_code == 500 and "engine gone" in r.json()["error"]["message"]
            listing = (await c.get("/v1/head_profiles", headers=AUTH)).json()
            assert listing["free_slots"] == 2 and "where" not in listing["selectable"]

    asyncio.run(scenario())


def test_cli_flags(tiny_llava_dir, files):
    from vseam.core.errors import UserError
    from vseam.serve.cli import build_config

    f = [str(files["colors"])]
    c = build_config(str(tiny_llava_dir), f, False, None, ["--api-key", "k"], 4)
    assert c.capacity == 4 and c.admin and c.table_rows() == 5 and c.fingerprint["num_heads"] == 4
    assert not build_config(str(tiny_llava_dir), f, False, None, [], 4).admin  # no key: off
    assert build_config(str(tiny_llava_dir), f, False, None, [], 4, enable_admin=True).admin
    with pytest.raises(UserError, match="--fold"):
        build_config(str(tiny_llava_dir), f, True, None, [], 4)
    with pytest.raises(UserError, match="give --max-head-profiles N"):
        build_config(str(tiny_llava_dir), f, False, None, [], 0, admin_key="a")
