"""Errors a user can cause. The CLI prints their message as one line and exits with status 2."""


class UserError(Exception):
    """A mistake in the user's input (file, key, URL, address) with what to do about it."""
