"""The hand-written head-list syntax used on the command line: "L11.H28=0.8,L7.H20" (λ defaults to 1)."""

from __future__ import annotations

import re

from vseam.head_profiles.model import Head, ProfileError

_ITEM = re.compile(r"^\s*L(?P<layer>\d+)\s*[.\s]\s*H(?P<head>\d+)\s*(?:=\s*(?P<lam>[^,\s]+))?\s*$", re.IGNORECASE)


def parse_heads(text: str | None, what: str = "heads", default_lam: float = 1.0) -> list[Head]:
    """Parse "L11.H28=0.8, L7.H20=0.5" into heads; a missing "=λ" means λ = `default_lam`."""
    if not text or not text.strip():
        return []
    heads = []
    for item in text.split(","):
        if not item.strip():
            continue
        m = _ITEM.match(item)
        if not m:
            raise ProfileError(f"{what}: cannot read '{item.strip()}' (expected e.g. L11.H28=0.8)")
        try:
            lam = float(m["lam"]) if m["lam"] is not None else default_lam
        except ValueError:
            raise ProfileError(f"{what}: λ in '{item.strip()}' is not a number") from None
        try:
            heads.append(Head(layer=int(m["layer"]), head=int(m["head"]), lam=lam))
        except ValueError as e:  # pydantic's ValidationError is a ValueError
            raise ProfileError(f"{what}: '{item.strip()}': {e.errors()[0]['msg'] if hasattr(e, 'errors') else e}") from None
    return heads


def format_heads(heads: list[Head]) -> str:
    return ",".join(f"{h.label()}={h.lam:g}" for h in heads)
