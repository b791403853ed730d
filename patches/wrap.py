"""Wrapping vLLM functions once: the one way the plugin changes code it does not own.

`wrap_once(owner, name, make)` replaces `owner.name` (a class's method or a module's function) by
`make(original)`, unless it is already vseam's wrapper. The wrapper carries `__vseam__ = True` and `__wrapped__`
(the original), so wrapping is idempotent per process however often the plugin is registered, and a wrapped
function is recognisable (tests and the version check read the markers).
"""

from __future__ import annotations

import functools
from typing import Any, Callable


def wrap_once(owner: Any, name: str, make: Callable[[Callable], Callable]) -> bool:
    """Wrap `owner.name` with `make(original)` once; True if it was wrapped now, False if it already was."""
    original = getattr(owner, name)
    if getattr(original, "__vseam__", False):
        return False
    wrapper = make(original)
    functools.update_wrapper(wrapper, original)
    wrapper.__wrapped__ = original  # type: ignore[attr-defined]
    wrapper.__vseam__ = True  # type: ignore[attr-defined]
    setattr(owner, name, wrapper)
    return True


__all__ = ["wrap_once"]
