"""Head profiles: the format shared by calibration (writer) and serving (reader). See `vseam.head_profiles.model`."""

from vseam.head_profiles.model import (
    Fingerprint,
    Head,
    HeadProfile,
    ProfileError,
    Provenance,
    Scope,
    Selection,
    json_schema,
    load_profile,
    now_iso,
    parse_profile,
)
from vseam.head_profiles.heads import format_heads, parse_heads

__all__ = [
    "Fingerprint",
    "Head",
    "HeadProfile",
    "ProfileError",
    "Provenance",
    "Scope",
    "Selection",
    "format_heads",
    "json_schema",
    "load_profile",
    "now_iso",
    "parse_heads",
    "parse_profile",
]
