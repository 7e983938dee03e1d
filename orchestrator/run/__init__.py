"""The run path: a sweep file to a finished (or resumable) sweep in the database."""

from __future__ import annotations

import importlib
import sys

# Modules that lived directly under orchestrator/ before it had rooms. Tune pickles the Tuner's
# callbacks and searcher (tuner.pkl, the experiment state) by class path, so a sweep launched
# before the move names them there; a resume or `db import` of it maps the old names first.
MOVED = {f"orchestrator.{name}": f"orchestrator.run.{name}"
         for name in ("recorder", "progress", "space", "spec", "outbox", "stops", "trackers", "storage")}


def alias_moved_modules() -> None:
    """Make each old module path name the module that now lives in this room."""
    for old, new in MOVED.items():
        if old not in sys.modules:
            sys.modules[old] = importlib.import_module(new)
