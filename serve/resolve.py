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
from vseam.serve.protocol import AUTO, NONCE_XARG, NONE, XARG, ServeConfig, echo
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
        self.rows = config.rows()  # name -> scale-table row, for every selectable or retiring profile
        self.free_rows = [] if self.static else list(range(len(self.rows), config.table_rows()))
        self.retiring: set[str] = set()  # retired, still serving requests that started before
        self.inflight: dict[str, int] = {}  # running requests per profile

    @classmethod
    def from_config(cls, config: ServeConfig) -> "ProfileTable":
        return cls(config, config.load_profiles())

    # ---- what can be asked for ---------------------------------------------------------------------------------
    def valid_names(self) -> list[str]:
        if self.static:
            return [self.default]
        return [NONE, *(n for n in self.profiles if n not in self.retiring), AUTO]

    def listing(self) -> dict:
        """Body of GET /v1/head_profiles."""
        data = []
        rows = self.rows
        for p in self.profiles.values():
            if p.name in self.retiring:
                continue
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
            "retiring": sorted(n for n in self.retiring if n in self.profiles),
            "free_slots": len(self.free_rows),
            "running": dict(sorted(self.inflight.items())),  # requests in flight per profile
        }

    # ---- run-time loads and retirements (the admin routes) -----------------------------------------------------
    def check_new(self, doc: object) -> HeadProfile:
        """A profile document an admin wants loaded, validated as at startup (RequestError names the field)."""
        from vseam.head_profiles import Fingerprint, ProfileError, parse_profile

        if self.static:
            raise RequestError("this server folds one profile into its weights (--fold); it cannot load others",
                               reason="static_mode", status=409)
        if not isinstance(doc, dict):
            raise RequestError("the request body must be a head-profile JSON object", reason="bad_profile")
        try:
            profile = parse_profile(doc, source="request body")
            if self.config.fingerprint is not None:
                profile.check_fits(Fingerprint.model_validate(self.config.fingerprint), source="request body")
        except ProfileError as e:
            raise RequestError(echo(str(e), 600), param="fingerprint" if "does not fit" in str(e) else None,
                               reason="bad_profile") from None
        if profile.name in (NONE, AUTO):
            raise RequestError(f"field 'name': '{profile.name}' is reserved", param="name", reason="bad_profile")
        if profile.name in self.rows:
            state = "is retiring" if profile.name in self.retiring else "is loaded"
            raise RequestError(f"field 'name': a profile named '{echo(profile.name)}' {state}; retire it or "
                               f"choose another name", param="name", reason="name_taken", status=409)
        if not self.free_rows:
            raise RequestError(f"all {self.config.table_rows() - 1} profile slots are in use (--max-head-profiles); "
                               f"retire one first", reason="no_free_slot", status=409)
        return profile

    def reserve(self, profile: HeadProfile) -> int:
        """Take a free row for `profile` (its scales go to the workers before `activate`)."""
        row = self.free_rows.pop(0)
        self.rows[profile.name] = row
        self.retiring.add(profile.name)  # not selectable until the workers have its scales
        return row

    def activate(self, profile: HeadProfile) -> None:
        self.retiring.discard(profile.name)
        self.profiles[profile.name] = profile

    def release(self, name: str) -> None:
        """Give `name`'s row back (after its last request finished, or a failed load)."""
        row = self.rows.pop(name, None)
        self.retiring.discard(name)
        self.profiles.pop(name, None)
        self.inflight.pop(name, None)
        if row is not None and row not in self.free_rows:
            self.free_rows.append(row)
            self.free_rows.sort()

    def retire(self, name: str) -> bool:
        """Stop new requests naming `name`; True when nothing runs on it any more (its row can be freed now)."""
        if self.static:
            raise RequestError("this server folds its profile into the weights (--fold); nothing can be retired",
                               reason="static_mode", status=409)
        if name not in self.profiles or name in self.retiring:
            raise RequestError(f"no loaded profile named '{echo(name)}'; this server has: "
                               f"{', '.join(self.valid_names())}", param="name", reason="unknown_profile", status=404)
        if name == self.default:
            raise RequestError(f"'{echo(name)}' is the default profile (--default-profile); it cannot be retired",
                               param="name", reason="default_profile", status=409)
        self.retiring.add(name)
        return self.inflight.get(name, 0) == 0

    def started(self, name: str) -> None:
        self.inflight[name] = self.inflight.get(name, 0) + 1

    def finished(self, name: str) -> bool:
        """One request on `name` ended; True when `name` is retiring and that was its last request."""
        if name in self.inflight:
            self.inflight[name] -= 1
            if self.inflight[name] <= 0:
                del self.inflight[name]
        return name in self.retiring and name in self.profiles and self.inflight.get(name, 0) == 0

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
                f"head profile '{echo(name)}' cannot be selected: this server runs with profile '{self.default}' folded "
                f"into its weights (--fold), so requests cannot choose a profile",
                param=param,
                reason="static_mode",
            )
        return RequestError(
            f"unknown head profile '{echo(name)}'; this server has: {', '.join(self.valid_names())}",
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
                f"request names head profile '{echo(by_xargs)}' in vllm_xargs but '{echo(by_model)}' in its model name",
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
            name = route(level, ((p.name, p.scope.level) for p in self.profiles.values() if p.name not in self.retiring))
            return Resolution(name, via, level)
        if requested != NONE and (requested not in self.profiles or requested in self.retiring):
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
