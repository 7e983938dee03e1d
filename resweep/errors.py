"""Errors a user can cause. The CLI prints their message as one line and exits with status 2.

Here, on the ground floor, so that trainers, db and orchestrator can all raise it without
importing each other (DESIGN.md's map).
"""


class UserError(Exception):
    """A mistake in the user's input (file, key, URL, address) with what to do about it."""
