"""Soak run of `vseam serve`: many mixed requests, admin loads/retirements, malformed input, a dropped stream.

    .venv/bin/python -m vseam.benchmarks.soak [--requests 20000] [--concurrency 32] [--replay 2000] [--model DIR]

Against `vseam serve` on a tiny LLaVA checkpoint (built if --model is not given) with two startup profiles and
room for two more (`--max-head-profiles 4`, `--api-key`), the run sends `--requests` requests from `--concurrency`
clients: each picks `none`, a startup profile or a profile loaded at run time (by `vllm_xargs` or `MODEL:NAME`),
streams or not, and a few percent are malformed on purpose (unknown profile, 10 kB profile name, bad `vllm_xargs`,
invalid JSON, no messages). In the middle an admin client loads and retires the run-time profiles in a loop
(requests naming a retired one get the intended 400), and one client drops its connection mid-stream.

Reported: errors other than the intended 4xx (target 0); answers that differ from a sequential replay of the
same requests (`--replay` of them at random, 0 = all; the replay loads the run-time profiles again; target 0);
server RSS (API server + engine processes) after launch, after a 200-request warm-up (the baseline) and at the end
(growth over the baseline, target < 5%); p50/p99 latency of the
successful requests. The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import random
import statistics
import sys
import tempfile
import time

from vseam.serve.launch import cpu_flags, launch

KEY = "soak-key"
QUESTIONS = ["Is the cat red?", "Is the dog to the left of the car?", "Is there a bird in this picture?",
             "Is the table made of wood?", "Is the man riding the horse?", "Where is the cup?"]
STARTUP = {"colors": ("attribute", "L0.H1=0.9", "L1.H2=1"), "where": ("relation", "L1.H3=1", "L0.H0=0.7")}
DYNAMIC = {"dyn-a": ("object", "L0.H2=0.8", "L1.H1=0.6"), "dyn-b": ("all", "L1.H0=1", "L0.H3=0.9")}


def write_profiles(model: pathlib.Path, out: pathlib.Path) -> dict[str, pathlib.Path]:
    from vseam.core.families import fingerprint_of
    from vseam.head_profiles import HeadProfile, Provenance, Scope, parse_heads

    fp = fingerprint_of(model)
    paths = {}
    for name, (level, pos, neg) in {**STARTUP, **DYNAMIC}.items():
        p, n = parse_heads(pos), parse_heads(neg)
        paths[name] = HeadProfile(name=name, fingerprint=fp, scope=Scope(level=level), k=max(len(p), len(n)),
                                  positive=p, negative=n, provenance=Provenance.new("soak")).save(out / f"{name}.json")
    return paths


def images(n: int = 8) -> list[str]:
    import base64
    import io

    import numpy as np
    from PIL import Image

    urls = []
    for i in range(n):
        arr = (np.random.RandomState(i).rand(40, 48, 3) * 255).astype("uint8")
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        urls.append("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode())
    return urls


def make_request(i: int, rng: random.Random, model: str, urls: list[str]) -> dict:
    """One request spec: body, whether it streams, the intended outcome ('ok' or 'reject')."""
    from vseam.core.families import FAMILIES

    fam = FAMILIES["llava"]
    text = fam.binary_text(QUESTIONS[i % len(QUESTIONS)])
    body = {"model": model, "messages": fam.chat_messages(text, urls[i % len(urls)]), "max_tokens": rng.choice([1, 2, 4]),
            "temperature": 0, **fam.chat_extra_body}
    profile = rng.choice(["none", "colors", "where", "dyn-a", "dyn-b", None])
    if profile is not None:
        if rng.random() < 0.3:
            body["model"] = f"{model}:{profile}"
        else:
            body["vllm_xargs"] = {"head_profile": profile}
    spec = {"i": i, "body": body, "stream": rng.random() < 0.3, "profile": profile or "none", "malformed": None}
    r = rng.random()
    if r < 0.04:  # malformed on purpose
        kind = rng.choice(["unknown", "huge", "xargs", "json", "messages"])
        spec["malformed"] = kind
        if kind == "unknown":
            body["vllm_xargs"] = {"head_profile": "no-such-profile"}
        elif kind == "huge":
            body["vllm_xargs"] = {"head_profile": "x" * 10_000}
        elif kind == "xargs":
            body["vllm_xargs"] = ["not", "an", "object"]
        elif kind == "messages":
            body.pop("messages")
    return spec


async def send(client, base: str, spec: dict, salt: str | None = None) -> dict:
    body = dict(spec["body"])
    if salt is not None:
        body["cache_salt"] = salt
    content = b"{not json" if spec["malformed"] == "json" else json.dumps({**body, "stream": spec["stream"]}).encode()
    t0 = time.perf_counter()
    headers = {"Authorization": f"Bearer {KEY}", "content-type": "application/json"}
    try:
        if spec["stream"] and not spec["malformed"]:
            text, status = [], None
            async with client.stream("POST", f"{base}/v1/chat/completions", content=content, headers=headers) as r:
                status = r.status_code
                if status != 200:
                    return {"status": status, "text": (await r.aread()).decode(errors="replace")[:300],
                            "latency": time.perf_counter() - t0}
                async for line in r.aiter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        chunk = json.loads(line[6:])
                        if chunk.get("choices"):
                            text.append(chunk["choices"][0]["delta"].get("content") or "")
                        elif "error" in chunk:
                            status = 599
                body_text = "".join(text) if status == 200 else None
        else:
            r = await client.post(f"{base}/v1/chat/completions", content=content, headers=headers)
            status = r.status_code
            body_text = r.json()["choices"][0]["message"]["content"] if status == 200 else r.text[:300]
    except Exception as e:  # connection-level failure: always an unintended error
        return {"status": -1, "text": f"{type(e).__name__}: {e}", "latency": time.perf_counter() - t0}
    return {"status": status, "text": body_text, "latency": time.perf_counter() - t0}


def server_rss(pid: int) -> int:
    import psutil

    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])


async def admin_loop(client, base: str, docs: dict[str, str], stop: asyncio.Event, log: list) -> None:
    """Load and retire the run-time profiles in turn until `stop`."""
    headers = {"Authorization": f"Bearer {KEY}"}
    while not stop.is_set():
        if not docs:
            await asyncio.sleep(0.2)
            continue
        for name, doc in docs.items():
            r = await client.post(f"{base}/v1/head_profiles", content=doc, headers=headers)
            log.append(("load", name, r.status_code))
            await asyncio.sleep(1.5)
            r = await client.delete(f"{base}/v1/head_profiles/{name}", headers=headers)
            log.append(("retire", name, r.status_code))
            await asyncio.sleep(0.5)
            if stop.is_set():
                return


async def dropped_stream(client, base: str, spec: dict) -> str:
    """Open a long stream and close the connection after the first chunk."""
    body = {**spec["body"], "stream": True, "max_tokens": 64, "ignore_eos": True}
    body.pop("vllm_xargs", None)
    headers = {"Authorization": f"Bearer {KEY}"}
    async with client.stream("POST", f"{base}/v1/chat/completions", json=body, headers=headers) as r:
        async for _ in r.aiter_lines():
            break
    return "dropped after the first chunk"


async def soak(base: str, specs: list[dict], concurrency: int, docs: dict[str, str], pid: int,
               admin_on: bool = True) -> dict:
    import httpx

    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        results: dict[int, dict] = {}
        queue = list(specs)
        stop = asyncio.Event()
        admin_log: list = []
        rss_launch = server_rss(pid)
        # warm-up (first use of every image, compiled paths, caches), then the baseline RSS
        warm = [dict(s, malformed=None, stream=False) for s in specs[:200] if not s["malformed"]]
        await asyncio.gather(*(send(client, base, s, salt="warm-up") for s in warm))
        rss_start = server_rss(pid)

        async def worker():
            while queue:
                spec = queue.pop()
                results[spec["i"]] = await send(client, base, spec)

        t0 = time.perf_counter()
        admin = asyncio.create_task(admin_loop(client, base, docs if admin_on else {}, stop, admin_log))
        workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
        await asyncio.sleep(2)
        dropped = await dropped_stream(client, base, specs[0])
        await asyncio.gather(*workers)
        stop.set()
        await admin
        elapsed = time.perf_counter() - t0
        await asyncio.sleep(2)
        rss_end = server_rss(pid)
        # the server still answers after everything
        health = (await client.get(f"{base}/health")).status_code
    return {"results": results, "admin": admin_log, "rss_launch": rss_launch, "rss_start": rss_start,
            "rss_end": rss_end,
            "elapsed": elapsed, "dropped": dropped, "health_after": health}


async def replay(base: str, specs: list[dict], docs: dict[str, str]) -> dict[int, dict]:
    import httpx

    async with httpx.AsyncClient(timeout=600) as client:
        headers = {"Authorization": f"Bearer {KEY}"}
        for doc in docs.values():  # the run-time profiles, loaded again (the admin loop retired them)
            await client.post(f"{base}/v1/head_profiles", content=doc, headers=headers)
        out = {}
        for spec in specs:
            out[spec["i"]] = await send(client, base, spec, salt=f"replay-{spec['i']}")
        return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="LLaVA checkpoint dir (default: build the tiny test LLaVA)")
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--replay", type=int, default=2000, help="replay this many sequentially (0 = all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-admin", action="store_true", help="no profile loads/retirements during the run")
    ap.add_argument("--vllm-arg", action="append", default=[], help="extra flag for the server")
    args = ap.parse_args(argv)

    work = pathlib.Path(tempfile.mkdtemp(prefix="vseam-soak-"))
    if args.model:
        model = pathlib.Path(args.model)
    else:
        from vseam.core.toy_checkpoints import build

        model = work / "tiny-llava"
        build("llava", model, seed=0)
    files = write_profiles(model, work)
    docs = {n: files[n].read_text() for n in DYNAMIC}
    rng = random.Random(args.seed)
    urls = images()
    specs = [make_request(i, rng, str(model), urls) for i in range(args.requests)]
    argv_ = [sys.executable, "-m", "vseam.serve.cli", str(model), *[a for n in STARTUP for a in
             ("--head-profile", str(files[n]))], "--max-head-profiles", "4", "--api-key", KEY,
             *cpu_flags(kv_cache_mib=512), *args.vllm_arg, "--host", "127.0.0.1", "--port", "{port}"]
    print(f"work dir {work}; starting vseam serve ...", file=sys.stderr, flush=True)
    with launch(argv_, work / "server.log", timeout=900, grace=60) as (base, proc):
        run = asyncio.run(soak(base, specs, args.concurrency, docs, proc.pid, admin_on=not args.no_admin))
        ok = [s for s in specs if run["results"][s["i"]]["status"] == 200 and not s["malformed"]]
        pick = ok if args.replay == 0 else random.Random(1).sample(ok, min(args.replay, len(ok)))
        print(f"soak done in {run['elapsed']:.0f}s; replaying {len(pick)} requests sequentially ...",
              file=sys.stderr, flush=True)
        again = asyncio.run(replay(base, pick, docs))

    res = run["results"]
    unintended, intended = [], 0
    for s in specs:
        r = res[s["i"]]
        retired_profile = s["profile"] in DYNAMIC and r["status"] == 400 and "unknown head profile" in (r["text"] or "")
        if s["malformed"] and 400 <= r["status"] < 500 or retired_profile:
            intended += 1
        elif r["status"] != 200 or s["malformed"]:
            unintended.append({"i": s["i"], "status": r["status"], "malformed": s["malformed"],
                               "text": (r["text"] or "")[:200]})
    differ = [i for i, r in again.items() if r["status"] != 200 or r["text"] != res[i]["text"]]
    lat = sorted(res[s["i"]]["latency"] for s in ok)
    growth = run["rss_end"] / run["rss_start"] - 1
    doc = {
        "requests": len(specs), "concurrency": args.concurrency, "seconds": round(run["elapsed"], 1),
        "requests_per_s": round(len(specs) / run["elapsed"], 1),
        "ok": len(ok), "streamed_ok": sum(1 for s in ok if s["stream"]),
        "intended_4xx": intended, "unintended_errors": len(unintended), "unintended_examples": unintended[:5],
        "replayed": len(again), "replay_differs": len(differ), "replay_differs_examples": differ[:5],
        "admin_actions": len(run["admin"]),
        "admin_statuses": {f"{a} {st}": sum(1 for x in run["admin"] if x[0] == a and x[2] == st)
                           for a, st in sorted({(a, st) for a, _, st in run["admin"]})},
        "dropped_stream": run["dropped"], "health_after": run["health_after"],
        "rss_launch_mib": round(run["rss_launch"] / 2**20, 1),
        "rss_start_mib": round(run["rss_start"] / 2**20, 1), "rss_end_mib": round(run["rss_end"] / 2**20, 1),
        "rss_growth": round(growth, 4),
        "latency_p50_s": round(statistics.median(lat), 4) if lat else None,
        "latency_p99_s": round(lat[int(0.99 * (len(lat) - 1))], 4) if lat else None,
        "targets": {"unintended_errors": 0, "replay_differs": 0, "rss_growth": 0.05},
    }
    print(f"\n{'figure':28s} value")
    for key in ("requests", "seconds", "requests_per_s", "ok", "streamed_ok", "intended_4xx", "unintended_errors",
                "replayed", "replay_differs", "admin_actions", "admin_statuses", "rss_launch_mib", "rss_start_mib", "rss_end_mib",
                "rss_growth", "latency_p50_s", "latency_p99_s", "health_after"):
        print(f"{key:28s} {doc[key]}")
    print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
