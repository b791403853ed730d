"""Serving overhead of head profiles: plain vLLM vs static (--fold) vs per-request (mixed profiles) vs LoRA, one run.

    .venv/bin/python -m vseam.benchmarks.serving_overhead [--model DIR] [--rounds 12] [--requests 48] [--concurrency 32]
                                                     [--max-tokens 32] [--layers 12 --hidden 768 --heads 24]

Without --model it builds a random tiny LLaVA with a larger language model (default 12 layers x 24 heads, hidden
768, head_dim 32) so the measurement is not dominated by HTTP and image preprocessing. Three servers run side by
side, all with the same vLLM flags (fp32, default compiled mode):

  plain        `python -m vllm.entrypoints.openai.api_server` (the vseam plugin is installed but inert)
  static       `vseam serve --fold` with one profile folded into o_proj
  per-request  `vseam serve` with two profiles; requests pick none / profile A / profile B at random
  lora         plain vLLM (`VLLM_PLUGINS=none`) with `--enable-lora` and both profiles exported by
               `vseam profile export-lora`; requests pick the base model / adapter A / adapter B at random
               (one spare adapter slot: vLLM 0.32's CPU LoRA ops give adapter-less tokens the last slot's adapter)
  plain-2      a second plain server, started last: plain-2 / plain is the noise floor between two identical
               servers on this machine (--no-control drops it)

Each round sends the same chat requests (a fresh random image per request + a binary question, greedy,
`ignore_eos`, exactly --max-tokens new tokens each, --concurrency in flight) to every server in turn; fresh images
keep the prefix and encoder caches from favouring any mode (per-request mode salts the prefix cache per profile,
so shared prompts would hit its cache less often — a workload effect, not the patch's cost), rotating the order per round so background
load hits all modes alike. Reported per mode: median requests/s and generated tokens/s over the rounds and the
ratio to plain (targets: static >= 0.99, per-request >= 0.97), both of the medians and paired (per-round ratio,
then the median). The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import pathlib
import random
import statistics
import sys
import tempfile
import time

from vseam.serve.launch import cpu_flags, launch

QUESTIONS = ["Is the cat red?", "Is the dog to the left of the car?", "Is there a bird in this picture?",
             "Is the table made of wood?", "Is the man riding the horse?", "What color is the bus?"]
FLAGS = [*cpu_flags(kv_cache_mib=512), "--host", "127.0.0.1"]


def build_model(out: pathlib.Path, layers: int, hidden: int, heads: int) -> pathlib.Path:
    from vseam.core.toy_checkpoints import ToySpec, build

    spec = ToySpec(text_layers=layers, text_hidden=hidden, text_heads=heads, text_kv_heads=heads,
                   text_intermediate=(hidden * 8 // 3 + 63) // 64 * 64, model_id="vseam/bench-llava")
    build("llava", out, seed=0, spec=spec)
    return out


def write_profiles(model: pathlib.Path, out: pathlib.Path) -> dict[str, pathlib.Path]:
    from vseam.head_profiles import Head, HeadProfile, Provenance, Scope
    from vseam.core.families import fingerprint_of

    fp = fingerprint_of(model)
    rng = random.Random(1)
    paths = {}
    for name, level in (("bench-attr", "attribute"), ("bench-rel", "relation")):
        cells = rng.sample([(l, h) for l in range(fp.num_layers) for h in range(fp.num_heads)], 16)
        profile = HeadProfile(
            name=name, fingerprint=fp, scope=Scope(level=level), k=8,
            positive=[Head(layer=l, head=h, lam=0.8) for l, h in cells[:8]],
            negative=[Head(layer=l, head=h, lam=1.0) for l, h in cells[8:]],
            provenance=Provenance.new("benchmark"),
        )
        paths[name] = profile.save(out / f"{name}.json")
    return paths


@contextlib.contextmanager
def server(argv: list[str], log: pathlib.Path, timeout: float = 900, env: dict | None = None):
    """The server of `argv` on a free port (logging to `log`); yields its base URL once healthy."""
    with launch([*argv, "--port", "{port}"], log, env, timeout=timeout, grace=60) as (base, _proc):
        yield base


def lora_flags(model: pathlib.Path, profiles: dict[str, pathlib.Path], out: pathlib.Path) -> list[str]:
    """vLLM flags serving every profile as a LoRA adapter named after it (rank rounded up to one vLLM accepts)."""
    from vseam.head_profiles.portable import export_lora

    reports = {n: export_lora(p, model, out / f"lora-{n}") for n, p in profiles.items()}
    need = max(r.rank for r in reports.values())
    rank = min(r for r in (8, 16, 32, 64, 128, 256, 320, 512) if r >= need)
    return ["--enable-lora", "--max-loras", str(len(reports) + 1), "--max-lora-rank", str(rank),
            "--lora-modules", *[f"{n}={r.out}" for n, r in reports.items()]]


def make_requests(model: str, n: int, max_tokens: int, profiles: list[str] | None, seed: int,
                  models: list[str] | None = None) -> list[dict]:
    """`n` chat requests, each with its own random image (so no mode gains from prefix or encoder cache reuse)."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    from vseam.core.families import FAMILIES

    fam = FAMILIES["llava"]
    rng = random.Random(seed)
    reqs = []
    for i in range(n):
        arr = (np.random.RandomState(seed * 100_003 + i).rand(80, 96, 3) * 255).astype("uint8")
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        extra = {**fam.chat_extra_body, "ignore_eos": True}
        if profiles is not None:
            extra["vllm_xargs"] = {"head_profile": rng.choice(profiles)}
        name = rng.choice(models) if models else model
        reqs.append(dict(model=name, messages=fam.chat_messages(fam.binary_text(QUESTIONS[i % len(QUESTIONS)]), url),
                         max_tokens=max_tokens, temperature=0, extra_body=extra))
    return reqs


async def run_round(base: str, requests: list[dict], concurrency: int) -> tuple[float, int]:
    import openai

    client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="none", timeout=900, max_retries=0)
    gate = asyncio.Semaphore(concurrency)
    tokens = 0

    async def one(req):
        nonlocal tokens
        async with gate:
            resp = await client.chat.completions.create(**req)
            tokens += resp.usage.completion_tokens

    t0 = time.perf_counter()
    await asyncio.gather(*(one(r) for r in requests))
    elapsed = time.perf_counter() - t0
    await client.close()
    return elapsed, tokens


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="LLaVA checkpoint dir (default: build a larger random tiny LLaVA)")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--heads", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--requests", type=int, default=48, help="requests per round and mode")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--vllm-arg", action="append", default=[], help="extra flag for every server")
    ap.add_argument("--no-control", action="store_true", help="skip the second plain server (noise floor)")
    args = ap.parse_args(argv)

    work = pathlib.Path(tempfile.mkdtemp(prefix="vseam-serving-bench-"))
    model = pathlib.Path(args.model) if args.model else build_model(work / "model", args.layers, args.hidden, args.heads)
    profiles = write_profiles(model, work)
    names = list(profiles)
    py = sys.executable
    common = [*FLAGS, *args.vllm_arg]
    argvs = {
        "plain": [py, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), *common],
        "static": [py, "-m", "vseam.serve.cli", str(model), "--head-profile", str(profiles[names[0]]), "--fold", *common],
        "per-request": [py, "-m", "vseam.serve.cli", str(model), *[a for p in profiles.values()
                                                              for a in ("--head-profile", str(p))], *common],
    }
    argvs["lora"] = [*argvs["plain"], *lora_flags(model, profiles, work)]
    if not args.no_control:
        argvs["plain-2"] = argvs["plain"]
    choices = {"plain": None, "static": None, "per-request": ["none", *names], "lora": None, "plain-2": None}
    models = {"lora": [str(model), *names]}
    envs = {"lora": {"VLLM_PLUGINS": "none"}}
    print(f"model {model}; logs in {work}", file=sys.stderr)

    times: dict[str, list[tuple[float, int]]] = {m: [] for m in argvs}
    with contextlib.ExitStack() as stack:
        bases = {}
        for mode, argv_ in argvs.items():
            print(f"starting {mode} server ...", file=sys.stderr, flush=True)
            bases[mode] = stack.enter_context(server(argv_, work / f"{mode}.log", env=envs.get(mode)))
        modes = list(argvs)
        for mode in modes:  # warm-up: compile paths, encoder cache, prefix cache for every mode
            asyncio.run(run_round(bases[mode], make_requests(str(model), args.concurrency, args.max_tokens,
                                                             choices[mode], seed=0, models=models.get(mode)),
                                  args.concurrency))
        for r in range(args.rounds):
            order = modes[r % len(modes):] + modes[: r % len(modes)]
            for mode in order:
                reqs = make_requests(str(model), args.requests, args.max_tokens, choices[mode], seed=r + 1,
                                     models=models.get(mode))
                elapsed, tokens = asyncio.run(run_round(bases[mode], reqs, args.concurrency))
                times[mode].append((elapsed, tokens))
                print(f"round {r + 1}/{args.rounds} {mode:12s} {args.requests / elapsed:7.2f} req/s "
                      f"{tokens / elapsed:8.1f} tok/s", file=sys.stderr, flush=True)

    result: dict = {"model": str(model), "rounds": args.rounds, "requests_per_round": args.requests,
                    "concurrency": args.concurrency, "max_tokens": args.max_tokens, "modes": {}}
    for mode, runs in times.items():
        rps = [args.requests / e for e, _ in runs]
        tps = [t / e for e, t in runs]
        result["modes"][mode] = {"requests_per_s": statistics.median(rps), "tokens_per_s": statistics.median(tps),
                                 "requests_per_s_rounds": rps, "tokens_per_s_rounds": tps}
    plain = result["modes"]["plain"]
    for mode in [m for m in result["modes"] if m != "plain"]:
        m = result["modes"][mode]
        m["ratio_requests"] = m["requests_per_s"] / plain["requests_per_s"]
        m["ratio_tokens"] = m["tokens_per_s"] / plain["tokens_per_s"]
        # the same ratio computed within each round (modes ran back to back), then the median
        m["ratio_tokens_paired_median"] = statistics.median(
            a / b for a, b in zip(m["tokens_per_s_rounds"], plain["tokens_per_s_rounds"]))
    result["targets"] = {"static": 0.99, "per-request": 0.97}
    if "plain-2" in result["modes"]:
        result["noise_floor"] = abs(1 - result["modes"]["plain-2"]["ratio_tokens_paired_median"])

    print(f"\n{'mode':12s} {'req/s':>8s} {'tok/s':>9s} {'ratio':>7s} {'paired':>7s} target")
    for mode, m in result["modes"].items():
        ratio = m.get("ratio_tokens", 1.0)
        paired = m.get("ratio_tokens_paired_median", 1.0)
        target = result["targets"].get(mode)
        mark = "" if target is None else (f">= {target} {'ok' if paired >= target else 'MISS'}")
        print(f"{mode:12s} {m['requests_per_s']:8.2f} {m['tokens_per_s']:9.1f} {ratio:7.3f} {paired:7.3f} {mark}")
    if "noise_floor" in result:
        print(f"noise floor between two identical plain servers: {result['noise_floor']:.3f}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
