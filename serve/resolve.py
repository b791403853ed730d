"""Request -> head profile, in the API server process (pure functions on the JSON body; no vLLM imports).

A request names its profile by `vllm_xargs.head_profile` (`extra_body={"vllm_xargs": {"head_profile": NAME}}`)
or by its model name `MODEL:NAME` (for clients that cannot send extra fields). `none` is the unmodified model,
`auto` routes by the question's semantic level (`vseam.serve.routing`); a request naming nothing gets the server's
default. The resolved name is written back into `vllm_xargs.head_profile` (the model runner reads it from
`SamplingParams.extra_args`) together with the server's nonce, the model name loses its `:NAME` suffix, and the
request's prefix cache is salted per profile so KV blocks computed under one profile are never reused under
another. Requests on routes the middleware does not handle cannot choose: without the nonce the runner applies
the default profile to them.
"""

from __future__ import annotations

import dataclasses
import hashlib

from vseam.head_profiles import HeadProfile
from vseam.serve.protocol import AUTO, NONCE_XARG, NONE, XARG, ServeConfig
from vseam.serve.routing import request_text, route, semantic_level

#: vLLM refuses cache salts longer than this or containing these characters
MAX_SALT = 128
SALT_FORBIDDEN = set("@/\\\x00")


class RequestError(Exception):
    """A request the server must refuse with HTTP `status`; the message names the field and the valid choices."""

    def __init__(self, message: str, param: str | None = None, reason: str = "bad_request", status: int = 400):
        super().__init__(message)
        self.message, self.param, self.reason, self.status = message, param, reason, status

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": "BadRequestError", "param": self.param, "code": self.status}}


@dataclasses.dataclass(frozen=True)
class Resolution:
    profile: str  # 'none' or a loaded profile's name
    via: str  # 'xargs' | 'model' | 'default' | 'static'
    level: str | None = None  # semantic level when routed by 'auto'


class ProfileTable:
    """The profiles one server has loaded, and how requests choose among them."""

    def __init__(self, config: ServeConfig, profiles: list[HeadProfile]):
        self.config = config
        self.profiles = {p.name: p for p in profiles}
        self.static = config.static
        self.default = config.profiles[0].name if self.static else config.default

    @classmethod
    def from_config(cls, config: ServeConfig) -> "ProfileTable":
        return cls(config, config.load_profiles())

    # ---- what can be asked for ---------------------------------------------------------------------------------
    def valid_names(self) -> list[str]:
        if self.static:
            return [self.default]
        return [NONE, *self.profiles, AUTO]

    def listing(self) -> dict:
        """Body of GET /v1/head_profiles."""
        data = []
        rows = self.config.rows()
        for p in self.profiles.values():
            data.append(
                {
                    "name": p.name,
                    "object": "head_profile",
                    "row": rows[p.name],
                    "scope": p.scope.model_dump(),
                    "num_heads": p.num_heads_selected,
                    "positive": [h.label() for h in p.positive],
                    "negative": [h.label() for h in p.negative],
                    "fingerprint": p.fingerprint.model_dump(),
                    "provenance": {"method": p.provenance.method, "created": p.provenance.created},
                }
            )
        return {
            "object": "list",
            "mode": self.config.mode,
            "default": self.default,
            "selectable": self.valid_names(),
            "data": data,
        }

    # ---- resolution --------------------------------------------------------------------------------------------
    def _split_model(self, model) -> tuple[str | None, str | None]:
        """'MODEL:NAME' -> ('MODEL', 'NAME'); a served model name that itself contains ':' is left alone."""
        if not isinstance(model, str) or ":" not in model or model in self.config.served_model_names:
            return None, None
        base, name = model.rsplit(":", 1)
        return base, name

    def _unknown(self, name: str, param: str) -> RequestError:
        if self.static:
            return RequestError(
                f"head profile '{name}' cannot be selected: this server runs with profile '{self.default}' folded "
                f"into its weights (--fold), so requests cannot choose a profile",
                param=param,
                reason="static_mode",
            )
        return RequestError(
            f"unknown head profile '{name}'; this server has: {', '.join(self.valid_names())}",
            param=param,
            reason="unknown_profile",
        )

    def resolve(self, body: dict) -> Resolution:
        """Which profile serves `body`; raises RequestError for unknown/conflicting/forbidden choices."""
        xargs = body.get("vllm_xargs")
        if xargs is not None and not isinstance(xargs, dict):
            raise RequestError("'vllm_xargs' must be an object", param="vllm_xargs", reason="bad_field")
        by_xargs = (xargs or {}).get(XARG)
        if by_xargs is not None and not isinstance(by_xargs, str):
            raise RequestError(f"'vllm_xargs.{XARG}' must be a string", param=f"vllm_xargs.{XARG}", reason="bad_field")
        _, by_model = self._split_model(body.get("model"))
        if by_xargs is not None and by_model is not None and by_xargs != by_model:
            raise RequestError(
                f"request names head profile '{by_xargs}' in vllm_xargs but '{by_model}' in its model name",
                param="model",
                reason="conflict",
            )
        requested, via, param = (by_xargs, "xargs", f"vllm_xargs.{XARG}") if by_xargs is not None else (
            by_model, "model", "model"
        )
        if requested is None:
            return Resolution(self.default, "static" if self.static else "default")
        if self.static:
            if requested != self.default:
                raise self._unknown(requested, param)
            return Resolution(self.default, "static")
        if requested == AUTO:
            level = semantic_level(request_text(body))
            name = route(level, ((p.name, p.scope.level) for p in self.profiles.values()))
            return Resolution(name, via, level)
        if requested != NONE and requested not in self.profiles:
            raise self._unknown(requested, param)
        return Resolution(requested, via)

    def apply(self, body: dict, res: Resolution) -> dict:
        """Rewrite `body` for vLLM: plain model name, resolved profile in vllm_xargs, per-profile cache salt."""
        base, _ = self._split_model(body.get("model"))
        if base is not None:
            body["model"] = base
        if self.static:
            if isinstance(body.get("vllm_xargs"), dict):
                body["vllm_xargs"].pop(XARG, None)
                body["vllm_xargs"].pop(NONCE_XARG, None)
            return body
        xargs = body.get("vllm_xargs") or {}
        xargs[XARG] = res.profile
        xargs[NONCE_XARG] = self.config.nonce
        body["vllm_xargs"] = xargs
        body["cache_salt"] = profile_salt(res.profile, body.get("cache_salt"))
        return body


def profile_salt(profile: str, client_salt: str | None = None) -> str:
    """A prefix-cache salt unique to `profile`, combined with the client's own salt if it sent one."""
    if client_salt is not None and (not isinstance(client_salt, str) or SALT_FORBIDDEN & set(client_salt)):
        return client_salt  # invalid: leave it for vLLM to refuse with its own message
    salt = f"{client_salt}|vseam-{profile}" if client_salt else f"vseam-{profile}"
    if len(salt) > MAX_SALT:  # keep it unique per (client salt, profile) in a fixed length
        salt = "vseam-" + hashlib.sha256(salt.encode()).hexdigest()
    return salt
