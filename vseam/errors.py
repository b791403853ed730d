"""Errors meant for the user: the CLI prints their message (which names the file/field/request) and exits 1."""

from head_profiles.model import ProfileError


class UserError(Exception):
    """Bad input or environment that the user can fix; the message says what and where."""


USER_ERRORS = (UserError, ProfileError)
