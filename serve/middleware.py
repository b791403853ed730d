"""ASGI middleware that `vseam serve` adds to vLLM's OpenAI server (`--middleware vseam.serve.middleware.HeadProfileMiddleware`).

* `POST /v1/chat/completions` (and `/batch`), `/v1/completions`, `/v1/responses`, `/v1/messages`: resolve the request's head profile
  (`vseam.serve.resolve`), refuse bad choices with HTTP 400 (the server keeps running), rewrite the JSON body for vLLM
  and tag the response with an `x-vseam-head-profile` header.
* `GET /v1/head_profiles`: the loaded profiles (name, scope, heads, fingerprint) and the server's mode.
* counts requests per profile and rejections on vLLM's `/metrics` (`vseam.serve.metrics`).

With `--api-key`, requests without a valid key are passed on untouched, so vLLM's own check refuses them.

Without the vseam config in the environment (`vseam.serve.protocol.ENV_VAR`) it passes everything through.
"""

from __future__ import annotations

import hmac
import json
import logging
import os

from vseam.serve.protocol import ServeConfig
from vseam.serve import metrics
from vseam.serve.resolve import ProfileTable, RequestError

log = logging.getLogger("vllm.vseam.serve")

GENERATE_PATHS = frozenset(
    {"/v1/chat/completions", "/v1/chat/completions/batch", "/v1/completions", "/v1/responses", "/v1/messages"}
)
LIST_PATH = "/v1/head_profiles"
HEADER = b"x-vseam-head-profile"


class HeadProfileMiddleware:
    def __init__(self, app, table: ProfileTable | None = None):
        self.app = app
        if table is None:
            config = ServeConfig.from_env()
            table = ProfileTable.from_config(config) if config is not None else None
        self.table = table
        if table is not None:
            metrics.counters()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self.table is None:
            return await self.app(scope, receive, send)
        method, path = scope.get("method"), scope.get("path", "")
        if not self._authorized(scope):  # vLLM's own API-key check refuses it further in
            return await self.app(scope, receive, send)
        if path == LIST_PATH and method == "GET":
            return await _send_json(send, 200, self.table.listing())
        if method != "POST" or path not in GENERATE_PATHS:
            return await self.app(scope, receive, send)

        raw = await _read_body(receive)
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            body = None
        if not isinstance(body, dict):  # not ours to judge: vLLM answers with its own validation error
            return await self.app(scope, _replay(raw, receive), send)
        try:
            resolution = self.table.resolve(body)
        except RequestError as e:
            metrics.count_rejection(e.reason)
            log.info("vseam: refused %s request: %s", path, e.message)
            return await _send_json(send, e.status, e.body())
        metrics.count_request(resolution.profile, resolution.via)
        new_raw = json.dumps(self.table.apply(body, resolution)).encode()
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(new_raw)).encode()))
        tag = resolution.profile.encode()

        async def send_tagged(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (HEADER, tag)]}
            await send(message)

        await self.app({**scope, "headers": headers}, _replay(new_raw, receive), send_tagged)


    def _authorized(self, scope) -> bool:
        keys = self.table.config.api_keys or ([os.environ["VLLM_API_KEY"]] if os.environ.get("VLLM_API_KEY") else [])
        if not keys:
            return True
        auth = dict(scope.get("headers", [])).get(b"authorization", b"").decode("latin-1")
        return any(hmac.compare_digest(auth, f"Bearer {k}") for k in keys)


async def _read_body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive):
    """A receive channel that yields `body` once, then defers to the client's channel (disconnect detection)."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _send_json(send, status: int, payload: dict) -> None:
    data = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data})
