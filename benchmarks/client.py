"""Asking an OpenAI-compatible server many image questions: bounded concurrency, retries, progress, resumable.

* Requests go through `openai.AsyncOpenAI`; its own retry logic (exponential backoff with jitter, honouring
  Retry-After) handles connection errors, timeouts, 408/409/429 and 5xx, up to `retries` times per request.
* At most `concurrency` requests are in flight (a fixed pool of workers pulling from a queue).
* Every answer is appended to an on-disk cache (`ResponseCache`, one JSON line per answer, flushed at once), keyed
  by everything that determines the reply: model, profile, prompt texts, image bytes and sampling parameters.
  A re-run — also after Ctrl-C or a crash — asks only what is not in the cache. Failed requests are not cached.
* A profile is chosen per request by `extra_body={"vllm_xargs": {"head_profile": NAME}}` (default) or by the
  model name `MODEL:NAME` (`profile_via="model"`).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import hashlib
import json
import pathlib
import sys
import time
from typing import Iterable, Sequence

from vseam.benchmarks.task import Prompt
from vseam.core.errors import UserError

NONE_PROFILE = "none"


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """Where to ask and how to pick the profile."""

    base_url: str
    model: str
    api_key: str = "EMPTY"
    profile_via: str = "xargs"  # or "model"

    def __post_init__(self):
        if self.profile_via not in ("xargs", "model"):
            raise UserError(f"--profile-via must be 'xargs' or 'model', got {self.profile_via!r}")

    @property
    def api_base(self) -> str:
        """The base URL ending in /v1, as the openai client wants it."""
        url = self.base_url.rstrip("/")
        return url if url.endswith("/v1") else url + "/v1"


@dataclasses.dataclass(frozen=True)
class Sampling:
    """Generation settings. `choices`: restrict the reply to one of these strings (vLLM structured outputs)."""

    max_tokens: int = 8
    temperature: float = 0.0
    choices: tuple[str, ...] | None = None

    def as_dict(self) -> dict:
        d = {"max_tokens": self.max_tokens, "temperature": self.temperature}
        if self.choices:
            d["choices"] = list(self.choices)
        return d


@dataclasses.dataclass(frozen=True)
class Request:
    """One question about one image under one profile."""

    qid: str
    profile: str
    prompt: Prompt
    image: pathlib.Path


# ---- images ----------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4096)
def image_digest(path: pathlib.Path) -> str:
    """sha256 of the image file (questions share images, so this is cached per path)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except OSError as e:
        raise UserError(f"{path}: cannot read image ({e.strerror})") from None
    return h.hexdigest()


def image_data_url(path: pathlib.Path) -> str:
    """The file's own bytes as a base64 data URL (the format is sniffed from the content, not the name)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            fmt = im.format
        data = pathlib.Path(path).read_bytes()
    except (OSError, UnidentifiedImageError) as e:
        raise UserError(f"{path}: not a readable image ({e})") from None
    mime = Image.MIME.get(fmt or "", "application/octet-stream")
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


# ---- the request body --------------------------------------------------------------------------------------------
def build_messages(family, prompt: Prompt, image_url: str) -> list[dict]:
    messages = family.chat_messages(prompt.text, image_url)
    if prompt.system:
        messages = [{"role": "system", "content": [{"type": "text", "text": prompt.system}]}] + messages
    return messages


def request_kwargs(endpoint: Endpoint, family, req: Request, sampling: Sampling, image_url: str) -> dict:
    """Keyword arguments of `chat.completions.create` for `req`."""
    extra = dict(family.chat_extra_body)
    model = endpoint.model
    if endpoint.profile_via == "xargs":
        extra["vllm_xargs"] = {"head_profile": req.profile}
    else:
        model = f"{endpoint.model}:{req.profile}"
    if sampling.choices:
        extra["structured_outputs"] = {"choice": list(sampling.choices)}
    return dict(model=model, messages=build_messages(family, req.prompt, image_url), n=1, extra_body=extra,
                max_tokens=sampling.max_tokens, temperature=sampling.temperature)


def cache_key(endpoint: Endpoint, family, req: Request, sampling: Sampling) -> str:
    doc = {
        "model": endpoint.model,
        "profile": req.profile,
        "family": family.name,
        "system": req.prompt.system,
        "text": req.prompt.text,
        "image": image_digest(req.image),
        "sampling": sampling.as_dict(),
        "extra": family.chat_extra_body,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


# ---- cache -----------------------------------------------------------------------------------------------------
class ResponseCache:
    """Answers by request key, in an append-only JSONL file. A torn last line (a killed writer) is ignored."""

    def __init__(self, path: str | pathlib.Path | None, read: bool = True):
        """`read=False` ignores what the file holds (a refresh) but still appends new answers to it."""
        self.path = pathlib.Path(path) if path else None
        self.entries: dict[str, dict] = {}
        self.skipped_lines = 0
        self._fh = None
        if read and self.path and self.path.exists():
            with open(self.path) as fh:
                for line in fh:
                    try:
                        entry = json.loads(line)
                        self.entries[entry["key"]] = entry
                    except (json.JSONDecodeError, KeyError, TypeError):
                        self.skipped_lines += 1

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def get(self, key: str) -> dict | None:
        return self.entries.get(key)

    def put(self, entry: dict) -> None:
        self.entries[entry["key"]] = entry
        if self.path is None:
            return
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            needs_newline = self.path.exists() and self.path.stat().st_size > 0 and not self._ends_with_newline()
            self._fh = open(self.path, "a")
            if needs_newline:  # after a torn line, start a fresh one
                self._fh.write("\n")
        self._fh.write(json.dumps(entry, sort_keys=True) + "\n")
        self._fh.flush()

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as fh:
            fh.seek(-1, 2)
            return fh.read(1) == b"\n"

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


@dataclasses.dataclass
class Outcome:
    """What came back for one request: the reply (from the server or the cache) or the error after all retries."""

    key: str
    reply: str | None
    cached: bool = False
    error: str | None = None
    finish_reason: str | None = None
    shared: bool = False  # a copy of an identical request's outcome (that request was asked or cached once)


class EvalAborted(UserError):
    """Too many requests failed in a row: the server or the request setup is broken, not one item."""


def _describe(exc: BaseException) -> str:
    import openai

    if isinstance(exc, openai.APIStatusError):
        body = exc.body
        msg = body.get("message") if isinstance(body, dict) else None
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            msg = body["error"].get("message", msg)
        return f"HTTP {exc.status_code}: {msg or exc.message}"
    if isinstance(exc, openai.APIConnectionError):
        return f"connection failed: {exc}"
    return f"{type(exc).__name__}: {exc}"


async def ask_all(
    requests: Sequence[Request],
    endpoint: Endpoint,
    family,
    cache: ResponseCache,
    sampling: Sampling = Sampling(),
    concurrency: int = 8,
    retries: int = 5,
    timeout: float = 120.0,
    max_consecutive_failures: int = 20,
    progress: bool | None = None,
    desc: str = "eval",
) -> list[Outcome]:
    """Answers for `requests` (same order): cached ones are not asked again, new ones are cached as they arrive.

    Requests with the same cache key within one call are asked once and share the outcome."""
    import openai
    from tqdm import tqdm

    keys = [cache_key(endpoint, family, r, sampling) for r in requests]
    first: dict[str, int] = {}  # identical requests (e.g. a POPE question repeated in two splits) are asked once
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    outcomes: list[Outcome | None] = [None] * len(requests)
    todo: asyncio.Queue[int] = asyncio.Queue()
    for key, i in first.items():
        hit = cache.get(key)
        if hit is not None:
            outcomes[i] = Outcome(key, hit["reply"], cached=True, finish_reason=hit.get("finish_reason"))
        else:
            todo.put_nowait(i)
    cached = len(first) - todo.qsize()
    bar = tqdm(total=len(first), initial=cached, desc=desc, unit="q", file=sys.stderr,
               disable=(not sys.stderr.isatty()) if progress is None else not progress, dynamic_ncols=True)
    state = {"failed": 0, "streak": 0, "last_error": None}
    client = openai.AsyncOpenAI(base_url=endpoint.api_base, api_key=endpoint.api_key, max_retries=retries,
                                timeout=timeout)

    async def worker() -> None:
        while True:
            if state["streak"] >= max_consecutive_failures:
                return
            try:
                i = todo.get_nowait()
            except asyncio.QueueEmpty:
                return
            req, key = requests[i], keys[i]
            try:
                url = image_data_url(req.image)
                resp = await client.chat.completions.create(**request_kwargs(endpoint, family, req, sampling, url))
                choice = resp.choices[0]
                reply = choice.message.content or ""
                cache.put({"key": key, "qid": req.qid, "model": endpoint.model, "profile": req.profile,
                           "reply": reply, "finish_reason": choice.finish_reason, "time": round(time.time(), 3)})
                outcomes[i] = Outcome(key, reply, finish_reason=choice.finish_reason)
                state["streak"] = 0
            except (openai.OpenAIError, UserError) as e:
                err = f"question {req.qid} (profile {req.profile}): {_describe(e)}"
                outcomes[i] = Outcome(key, None, error=err)
                state["failed"] += 1
                state["streak"] += 1
                state["last_error"] = err
                bar.set_postfix(failed=state["failed"])
            bar.update(1)

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    finally:
        bar.close()
        cache.close()
        await client.close()
    if state["streak"] >= max_consecutive_failures:
        raise EvalAborted(
            f"stopped after {state['streak']} failed requests in a row at {endpoint.api_base} "
            f"(answers so far are cached; re-run to resume). Last error: {state['last_error']}")
    for i, key in enumerate(keys):
        src = outcomes[first[key]]
        if src is None:  # not reached (only possible when aborted)
            src = outcomes[first[key]] = Outcome(key, None, error="not asked")
        if outcomes[i] is None:
            outcomes[i] = dataclasses.replace(src, shared=True)
    return outcomes  # type: ignore[return-value]


# ---- what the server offers ------------------------------------------------------------------------------------
def served_models(endpoint: Endpoint, timeout: float = 10.0) -> list[dict]:
    import httpx

    try:
        r = httpx.get(f"{endpoint.api_base}/models", headers={"Authorization": f"Bearer {endpoint.api_key}"},
                      timeout=timeout)
    except httpx.HTTPError as e:
        raise UserError(f"--base-url {endpoint.base_url}: cannot reach the server ({e})") from None
    if r.status_code != 200:
        raise UserError(f"--base-url {endpoint.base_url}: GET /v1/models answered HTTP {r.status_code}")
    return list(r.json().get("data", []))


def served_profiles(endpoint: Endpoint, timeout: float = 10.0) -> dict | None:
    """`GET /v1/head_profiles` of a `vseam serve` server as {"data": [profile...], "selectable": [name...] | None},
    or None when the server does not list profiles (a plain vLLM server)."""
    import httpx

    try:
        r = httpx.get(f"{endpoint.api_base}/head_profiles",
                      headers={"Authorization": f"Bearer {endpoint.api_key}"}, timeout=timeout)
    except httpx.HTTPError as e:
        raise UserError(f"--base-url {endpoint.base_url}: cannot reach the server ({e})") from None
    if r.status_code != 200:
        return None
    doc = r.json()
    items = doc.get("data", []) if isinstance(doc, dict) else doc
    selectable = doc.get("selectable") if isinstance(doc, dict) else None
    return {"data": [p for p in items if isinstance(p, dict) and "name" in p],
            "selectable": [str(n) for n in selectable] if isinstance(selectable, list) else None}


def check_server(endpoint: Endpoint, profiles: Iterable[str]) -> dict | None:
    """Fail early, naming the problem, when the model is not served or a profile is unknown to the server."""
    models = served_models(endpoint)
    ids = [m.get("id") for m in models]
    if endpoint.model not in ids:
        raise UserError(f"--model {endpoint.model}: not served at {endpoint.base_url} (served: {', '.join(map(str, ids))})")
    profiles = list(profiles)
    listing = served_profiles(endpoint)
    if listing is None:
        wanted = [p for p in profiles if p != NONE_PROFILE]
        if wanted:
            raise UserError(
                f"--profile {wanted[0]}: {endpoint.base_url} does not list head profiles (GET /v1/head_profiles), so "
                f"it cannot apply them — start it with `vseam serve`; a plain server can only evaluate 'none'")
        return None
    valid = listing["selectable"]
    if valid is None:
        valid = [NONE_PROFILE] + [p["name"] for p in listing["data"]]
    unknown = [p for p in profiles if p not in valid]
    if unknown:
        raise UserError(f"--profile {unknown[0]}: not selectable on the server at {endpoint.base_url} "
                        f"(selectable: {', '.join(valid) or 'none'})")
    return listing
