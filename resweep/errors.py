"""Errors a user can cause. The CLI prints their message as one line and exits with status 2.

Here, on the ground floor, so that trainers, db and orchestrator can all raise it without
importing each other (DESIGN.md's map).
"""

import reprlib


class UserError(Exception):
    """A mistake in the user's input (file, key, URL, address) with what to do about it."""


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlist = _REPR.maxdict = _REPR.maxtuple = _REPR.maxset = 8
_REPR.maxlevel = 2


def shown(value: object) -> str:
    """A value as an error message shows it: repr, bounded (a value may be huge or deep)."""
    text = _REPR.repr(value)
    return text if len(text) <= 120 else text[:117] + "..."
