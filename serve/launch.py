"""Run an OpenAI-compatible server (vLLM's, or `vseam serve`) as a child process: start, wait for health, stop.

The one launcher shared by the tests (`tests/vllm_server.py`), the demo (`vseam/demo.py`) and the serving
benchmark (`benchmarks/serving_overhead.py`):

    with launch([python, "-m", "vseam.serve.cli", model, "--port", "{port}"], log_path) as (base_url, proc):
        ...  # /health answered 200; the server's stdout+stderr go to log_path

The child runs in its own process group so that stopping it also stops vLLM's engine workers.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import time
from typing import Callable, Iterator, Mapping, Sequence

import httpx

#: how many trailing log lines an error message quotes
TAIL_LINES = 60


class ServerError(RuntimeError):
    """The server process exited before it became healthy."""


class ServerTimeout(ServerError, TimeoutError):
    """The server did not answer /health in time."""


def cpu_flags(kv_cache_mib: int = 256) -> list[str]:
    """vLLM server flags for a small shared CPU machine: fp32, 512-token context, a fixed KV cache of
    `kv_cache_mib` MiB (without it the CPU worker reserves a share of a NUMA node), one image per prompt, no
    periodic stats logging."""
    return [
        "--dtype", "float32",
        "--max-model-len", "512",
        "--kv-cache-memory-bytes", str(kv_cache_mib * 2**20),
        "--limit-mm-per-prompt", '{"image": 1}',
        "--disable-log-stats",
    ]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: os.PathLike | str, n: int = TAIL_LINES) -> str:
    """The last `n` lines of a log file ("" if it cannot be read)."""
    try:
        return "\n".join(pathlib.Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stop(proc: subprocess.Popen, grace: float = 30.0) -> None:
    """Stop `proc`'s process group: SIGINT, then SIGKILL if it is still running after `grace` seconds."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def start(cmd: Sequence[str], log: os.PathLike | str, env: Mapping[str, str] | None = None, *,
          port: int | None = None) -> tuple[str, subprocess.Popen]:
    """Start `cmd` in its own process group (every "{port}" in it becomes the port) without waiting for it:
    (base_url, process). `env` is added to this process's environment (VLLM_CPU_OMP_THREADS_BIND defaults to
    "auto"); the output goes to `log`. Stop it with `stop`."""
    port = port or free_port()
    full_env = {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "auto")}
    full_env.update(env or {})
    argv = [str(a).replace("{port}", str(port)) for a in cmd]
    with open(log, "w") as fh:
        # the default SIGINT disposition, so `stop` shuts the server down cleanly even when this process was started
        # with SIGINT ignored (a background job of a shell without job control)
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=full_env, start_new_session=True,
                                preexec_fn=_default_sigint)
    return f"http://127.0.0.1:{port}", proc


def wait_healthy(base: str, proc: subprocess.Popen, log: os.PathLike | str, *, timeout: float = 300.0,
                 name: str = "server", waiting: Callable[[float], None] | None = None,
                 waiting_every: float = 10.0) -> None:
    """Return once GET `base`/health is 200. If the process exits first, `ServerError`; if /health does not answer
    within `timeout` seconds (counted from this call), `ServerTimeout` — both quote the log's last lines.
    `waiting(seconds)` (if given) is called about every `waiting_every` seconds while waiting."""
    t0, reported = time.time(), 0.0
    while True:
        if proc.poll() is not None:
            raise ServerError(f"{name} exited with {proc.returncode}; last lines of {log}:\n{tail(log)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        waited = time.time() - t0
        if waited > timeout:
            raise ServerTimeout(f"{name} not healthy after {timeout:.0f}s; last lines of {log}:\n{tail(log)}")
        if waiting is not None and waited - reported >= waiting_every:
            reported = waited
            waiting(waited)
        time.sleep(1)


@contextlib.contextmanager
def launch(
    cmd: Sequence[str],
    log: os.PathLike | str,
    env: Mapping[str, str] | None = None,
    *,
    port: int | None = None,
    timeout: float = 300.0,
    grace: float = 30.0,
    name: str = "server",
    waiting: Callable[[float], None] | None = None,
    waiting_every: float = 10.0,
) -> Iterator[tuple[str, subprocess.Popen]]:
    """Start `cmd` (`start`), yield (base_url, process) once GET /health is 200 (`wait_healthy`). On leaving, the
    process group is always stopped (`stop`)."""
    base, proc = start(cmd, log, env, port=port)
    try:
        wait_healthy(base, proc, log, timeout=timeout, name=name, waiting=waiting, waiting_every=waiting_every)
        yield base, proc
    finally:
        stop(proc, grace)
