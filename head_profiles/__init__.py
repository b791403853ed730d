"""Head profiles: the format shared by calibration (writer) and serving (reader). See `head_profiles.model`."""

from head_profiles.model import (
    LEVELS,
    SUBTYPE_LEVEL,
    SUBTYPES,
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
from head_profiles.heads import format_heads, parse_heads

__all__ = [
    "LEVELS",
    "SUBTYPES",
    "SUBTYPE_LEVEL",
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
