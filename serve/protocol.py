"""The head-profile protocol of `vseam serve`: what a request may name, and what every vLLM process is told.

Requests: a request names its profile in `vllm_xargs.head_profile` (`XARG`) or as the model name `MODEL:NAME`;
`none` is the unmodified model and `auto` routes by the question's semantic level. The middleware writes the
resolved name back into `vllm_xargs` together with this server's nonce (`NONCE_XARG`); the model runner honours a
name only with that nonce.

Processes: `vseam serve` validates the profiles once and puts a `ServeConfig` into the environment variable
`ENV_VAR` before it starts vLLM, which hands its environment to the API server, engine-core and worker processes.
The config carries each profile's content and its sha256; a process that reads it checks the hash, so every
process applies exactly what `vseam serve` validated. `ServeConfig.rows()` is the one mapping from profile name to
scale-table row, used by the API server (listing, resolution) and by the engines (scaling).
"""

from __future__ import annotations

import json
import os
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vseam.head_profiles import HeadProfile, parse_profile

ENV_VAR = "VSEAM_HEAD_PROFILES"
NONE = "none"
AUTO = "auto"
#: key in a request's `vllm_xargs` (-> `SamplingParams.extra_args`) naming its profile
XARG = "head_profile"
#: key the middleware adds next to XARG; the model runner honours XARG only with this server's nonce, so a request
#: that reached vLLM through a route the middleware does not resolve (and salt) cannot pick a profile
NONCE_XARG = "vseam_nonce"


#: worker method (`collective_rpc`) that writes one row of the scale table at run time (`vseam.patches.head_scaling`)
SLOT_RPC = "vseam_set_profile_slot"

#: longest request-supplied text vseam echoes in an error body or a log line
MAX_ECHO = 64


def echo(text: object, limit: int = MAX_ECHO) -> str:
    """A request-supplied value as vseam repeats it back: cut to `limit` characters, saying how long it was."""
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters)"

def content_hash(profile: HeadProfile) -> str:
    """sha256 of a profile's JSON (as `HeadProfile.to_json` writes it)."""
    return profile.content_hash()


class ProfileEntry(BaseModel):
    """One profile as `vseam serve` validated it: its name, its content and the content's sha256."""

    model_config = ConfigDict(extra="forbid")

    name: str
    sha256: str
    profile: dict = Field(description="the profile's JSON document")

    @classmethod
    def of(cls, profile: HeadProfile) -> "ProfileEntry":
        return cls(name=profile.name, sha256=content_hash(profile), profile=json.loads(profile.to_json()))

    def load(self) -> HeadProfile:
        """The profile, after checking that it is what `vseam serve` validated."""
        profile = parse_profile(self.profile, source=f"{ENV_VAR} profile '{self.name}'")
        if profile.name != self.name or content_hash(profile) != self.sha256:
            raise RuntimeError(f"{ENV_VAR}: profile '{self.name}' does not match the content vseam serve validated "
                               "(sha256 differs); restart vseam serve")
        return profile


class ServeConfig(BaseModel):
    """What a vLLM process needs to apply head profiles."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["per-request", "static"] = Field(description="static = one profile folded into o_proj weights")
    profiles: list[ProfileEntry] = Field(min_length=1)
    default: str = Field(default=NONE, description="profile of requests that name none (per-request mode)")
    served_model_names: list[str] = Field(default_factory=list, description="for splitting 'MODEL:PROFILE'")
    api_keys: list[str] = Field(default_factory=list, description="vLLM's --api-key values (serve answers only those)")
    nonce: str = Field(default="", description="random per start; marks profile choices the middleware resolved")
    capacity: int = Field(default=0, ge=0, description="--max-head-profiles: profiles loadable at once (0: as loaded)")
    admin: bool = Field(default=False, description="admin routes (load / retire profiles at run time) are on")
    admin_keys: list[str] = Field(default_factory=list, description="keys the admin routes accept (else api_keys)")
    fingerprint: dict | None = Field(default=None, description="the served model's fingerprint (admin loads)")

    # ---- env round trip ----------------------------------------------------------------------------------------
    def to_env(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_env(cls, environ: dict | None = None) -> "ServeConfig | None":
        raw = (os.environ if environ is None else environ).get(ENV_VAR)
        if not raw:
            return None
        try:
            return cls.model_validate(json.loads(raw))
        except (json.JSONDecodeError, ValidationError) as e:
            raise RuntimeError(f"{ENV_VAR} is set but is not a valid vseam serve config: {e}") from None

    # ---- profiles ----------------------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [p.name for p in self.profiles]

    @property
    def static(self) -> bool:
        return self.mode == "static"

    def load_profiles(self) -> list[HeadProfile]:
        """The profiles, each checked against the hash `vseam serve` recorded."""
        return [entry.load() for entry in self.profiles]

    def rows(self) -> dict[str, int]:
        """Profile name -> row of the scale table: 0 = none, then the profiles in order."""
        return {NONE: 0, **{name: i + 1 for i, name in enumerate(self.names)}}

    def table_rows(self) -> int:
        """Rows of the scale table: `none`, the startup profiles, and free slots up to `capacity` profiles."""
        return 1 + max(len(self.profiles), self.capacity)


def scale_table(profiles: list[HeadProfile], rows: int | None = None) -> np.ndarray:
    """[rows, L, H] per-head scales (Eq 10); row 0 is the unmodified model, rows past the profiles (free slots for
    profiles loaded at run time) are too. `rows` defaults to P + 1."""
    if not profiles:
        raise ValueError("no profiles")
    first = profiles[0].scales()
    table = np.ones((max(rows or 0, len(profiles) + 1), *first.shape), dtype=np.float64)
    for i, p in enumerate(profiles):
        s = p.scales()
        if s.shape != first.shape:
            raise ValueError(f"profile '{p.name}' has shape {s.shape}, '{profiles[0].name}' has {first.shape}")
        table[i + 1] = s
    return table


__all__ = ["AUTO", "ENV_VAR", "NONCE_XARG", "NONE", "ProfileEntry", "SLOT_RPC", "ServeConfig", "XARG",
           "content_hash", "echo", "scale_table"]
