"""ASGI middleware that `vseam serve` adds to vLLM's OpenAI server (`--middleware vseam.serve.middleware.HeadProfileMiddleware`).

* `POST /v1/chat/completions` (and `/batch`), `/v1/completions`, `/v1/responses`, `/v1/messages`: resolve the request's head profile
  (`vseam.serve.resolve`), refuse bad choices with HTTP 400 (the server keeps running), rewrite the JSON body for vLLM
  and tag the response with an `x-vseam-head-profile` header.
* `GET /v1/head_profiles`: the loaded profiles (name, scope, heads, fingerprint) and the server's mode.
* `POST /v1/head_profiles` (body: a profile JSON) and `DELETE /v1/head_profiles/{name}` (admin key; with
  `--max-head-profiles N`): load a profile into a free slot of the workers' scale tables (validated against the
  served model's fingerprint as at startup), or retire one: new requests naming it get 400, running ones finish,
  then its slot is freed. The tables change in place through `collective_rpc`, so nothing recompiles.
* counts requests per profile and rejections on vLLM's `/metrics` (`vseam.serve.metrics`).

With `--api-key`, requests without a valid key are passed on untouched, so vLLM's own check refuses them.

Without the vseam config in the environment (`vseam.serve.protocol.ENV_VAR`) it passes everything through.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os

from vseam.serve.protocol import SLOT_RPC, ServeConfig, echo
from vseam.serve import metrics
from vseam.serve.resolve import ProfileTable, RequestError

log = logging.getLogger("vllm.vseam.serve")

GENERATE_PATHS = frozenset(
    {"/v1/chat/completions", "/v1/chat/completions/batch", "/v1/completions", "/v1/responses", "/v1/messages"}
)
LIST_PATH = "/v1/head_profiles"
HEADER = b"x-vseam-head-profile"


class HeadProfileMiddleware:
    def __init__(self, app, table: ProfileTable | None = None, update_workers=None):
        self.app = app
        if table is None:
            config = ServeConfig.from_env()
            table = ProfileTable.from_config(config) if config is not None else None
        self.table = table
        #: `await update_workers(scope, row, name, scales)` writes one scale-table row in every worker (default:
        #: vLLM's `collective_rpc` to the plugin's `SLOT_RPC`); tests pass their own
        self.update_workers = update_workers or _collective_rpc
        self.lock = asyncio.Lock()  # one load / release at a time
        if table is not None:
            metrics.counters()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self.table is None:
            return await self.app(scope, receive, send)
        method, path = scope.get("method"), scope.get("path", "")
        if path == LIST_PATH and method == "POST" or path.startswith(LIST_PATH + "/") and method == "DELETE":
            return await self._admin(scope, receive, send, method, path)
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

        self.table.started(resolution.profile)
        try:
            await self.app({**scope, "headers": headers}, _replay(new_raw, receive), send_tagged)
        finally:  # finished, failed or the client went away: a retiring profile frees its slot after its last one
            if self.table.finished(resolution.profile):
                await self._release(scope, resolution.profile)

    # ---- admin: load and retire profiles at run time ---------------------------------------------------------------
    async def _admin(self, scope, receive, send, method: str, path: str):
        raw = await _read_body(receive)
        refusal = self._admin_refusal(scope)
        if refusal is not None:
            status, message = refusal
            return await _send_json(send, status, RequestError(message, reason="admin", status=status).body())
        try:
            if method == "POST":
                try:
                    doc = json.loads(raw)
                except (UnicodeDecodeError, json.JSONDecodeError) as e:
                    raise RequestError(f"the request body is not JSON: {echo(e, 200)}", reason="bad_profile") from None
                return await _send_json(send, 200, await self._load(scope, doc))
            name = path[len(LIST_PATH) + 1 :]
            async with self.lock:
                idle = self.table.retire(name)
            metrics.count_admin("retire")
            log.info("vseam: retired head profile '%s' (%s)", echo(name), "idle" if idle else "draining")
            if idle:
                await self._release(scope, name)
            return await _send_json(send, 200, {"object": "head_profile", "name": name,
                                                "status": "retired" if idle else "retiring"})
        except RequestError as e:
            metrics.count_rejection(e.reason)
            log.info("vseam: refused admin %s %s: %s", method, echo(path), e.message)
            return await _send_json(send, e.status, e.body())

    async def _load(self, scope, doc) -> dict:
        async with self.lock:
            profile = self.table.check_new(doc)
            row = self.table.reserve(profile)
            try:
                await self.update_workers(scope, row, profile.name, profile.scales().tolist())
            except Exception as e:
                self.table.release(profile.name)
                log.warning("vseam: loading head profile '%s' failed in the workers: %s", profile.name, e)
                raise RequestError(f"the engine did not take profile '{profile.name}': {echo(e, 300)}",
                                   reason="engine", status=500) from None
            self.table.activate(profile)
        metrics.count_admin("load")
        log.info("vseam: loaded head profile '%s' into slot %d", profile.name, row)
        return {"object": "head_profile", "name": profile.name, "row": row, "status": "loaded",
                "num_heads": profile.num_heads_selected}

    async def _release(self, scope, name: str) -> None:
        async with self.lock:
            row = self.table.rows.get(name)
            if row is None or name not in self.table.retiring:
                return
            try:
                await self.update_workers(scope, row, None, None)
            except Exception as e:  # the row keeps its old scales; nobody can select it, so only the slot is lost
                log.warning("vseam: clearing slot %d of retired profile '%s' failed: %s", row, name, e)
                self.table.retiring.discard(name)
                self.table.profiles.pop(name, None)
                return
            self.table.release(name)
        log.info("vseam: retired head profile '%s' freed slot %d", echo(name), row)

    def _admin_refusal(self, scope) -> tuple[int, str] | None:
        """(status, message) when this admin request may not run, else None."""
        config = self.table.config
        if not config.admin:
            return 403, ("loading and retiring profiles is off on this server: start vseam serve with "
                         "--max-head-profiles N and --admin-key KEY (or --api-key), or --enable-profile-admin")
        # no key at all: --enable-profile-admin opened the routes on purpose
        if _bearer_ok(scope, config.admin_keys or self._api_keys()):
            return None
        return 401, "the admin routes need the server's admin key (Authorization: Bearer KEY)"

    def _api_keys(self) -> list[str]:
        """vLLM's API keys: `--api-key` values, else $VLLM_API_KEY."""
        env = os.environ.get("VLLM_API_KEY")
        return self.table.config.api_keys or ([env] if env else [])

    def _authorized(self, scope) -> bool:
        return _bearer_ok(scope, self._api_keys())


def _bearer_ok(scope, keys: list[str]) -> bool:
    """True without keys, else when the request's Authorization header is `Bearer <one of keys>`."""
    if not keys:
        return True
    auth = dict(scope.get("headers", [])).get(b"authorization", b"").decode("latin-1")
    return any(hmac.compare_digest(auth, f"Bearer {k}") for k in keys)


async def _collective_rpc(scope, row: int, name: str | None, scales: list | None) -> None:
    """Write one scale-table row in every vLLM worker (all tensor-parallel ranks) through the engine client."""
    app = scope.get("app")
    engine = getattr(getattr(app, "state", None), "engine_client", None)
    if engine is None:
        raise RuntimeError("no vLLM engine client on this server")
    await engine.collective_rpc(SLOT_RPC, timeout=60, args=(row, name, scales))


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
