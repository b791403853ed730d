"""Errors meant for the user, and how a command reports them: one clear line (naming the file/field/flag) and exit
code 1, no traceback."""

from __future__ import annotations

import sys
from typing import Any, Callable

from vseam.head_profiles.model import ProfileError


class UserError(Exception):
    """Bad input or environment that the user can fix; the message says what and where."""


USER_ERRORS = (UserError, ProfileError)


def run_command(func: Callable[[Any], int | None], args: Any) -> int:
    """Run a subcommand; a user error prints `error: <message>` on stderr and returns 1."""
    try:
        return int(func(args) or 0)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
