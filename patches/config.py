"""How `vseam serve` tells every vLLM process which head profiles to apply: one environment variable.

`vseam serve` validates the profiles, writes a `ServeConfig` as JSON into `VSEAM_HEAD_PROFILES` and then starts
vLLM. vLLM hands its environment to the engine-core and worker processes, where the plugin (`patches.plugin`)
reads the same config. Without the variable the plugin does nothing.

Profile rows are numbered the same way in every process: row 0 is `none` (all scales 1), row i is
`profiles[i-1]`.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from head_profiles import HeadProfile, load_profile

ENV_VAR = "VSEAM_HEAD_PROFILES"
NONE = "none"
AUTO = "auto"
#: key in a request's `vllm_xargs` (-> `SamplingParams.extra_args`) naming its profile
XARG = "head_profile"
#: key the middleware adds next to XARG; the model runner honours XARG only with this server's nonce, so a request
#: that reached vLLM through a route the middleware does not resolve (and salt) cannot pick a profile
NONCE_XARG = "vseam_nonce"


class ProfileRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    path: str


class ServeConfig(BaseModel):
    """What a vLLM process needs to apply head profiles."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["per-request", "static"] = Field(description="static = one profile folded into o_proj weights")
    profiles: list[ProfileRef] = Field(min_length=1)
    default: str = Field(default=NONE, description="profile of requests that name none (per-request mode)")
    served_model_names: list[str] = Field(default_factory=list, description="for splitting 'MODEL:PROFILE'")
    api_keys: list[str] = Field(default_factory=list, description="vLLM's --api-key values (serve answers only those)")
    nonce: str = Field(default="", description="random per start; marks profile choices the middleware resolved")

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
        """Read the profile files again (in a vLLM process) and check they still carry the names serve saw."""
        out = []
        for ref in self.profiles:
            profile = load_profile(ref.path)
            if profile.name != ref.name:
                raise RuntimeError(f"{ref.path}: profile name changed from '{ref.name}' to '{profile.name}' after startup")
            out.append(profile)
        return out

    def index_of(self) -> dict[str, int]:
        """Profile name -> row of the scale table (0 = none)."""
        return {NONE: 0, **{name: i + 1 for i, name in enumerate(self.names)}}


def scale_table(profiles: list[HeadProfile]) -> np.ndarray:
    """[P + 1, L, H] per-head scales (Eq 10); row 0 is the unmodified model."""
    if not profiles:
        raise ValueError("no profiles")
    first = profiles[0].scales()
    table = np.ones((len(profiles) + 1, *first.shape), dtype=np.float64)
    for i, p in enumerate(profiles):
        s = p.scales()
        if s.shape != first.shape:
            raise ValueError(f"profile '{p.name}' has shape {s.shape}, '{profiles[0].name}' has {first.shape}")
        table[i + 1] = s
    return table


def absolute(path: str | pathlib.Path) -> str:
    return str(pathlib.Path(path).expanduser().resolve())
