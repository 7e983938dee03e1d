"""Fixtures shared by the run path's tests."""

from __future__ import annotations

import pytest

from db import writes
from db.engine import get_engine


@pytest.fixture
def store(tmp_path):
    """A new SQLite store holding one sweep: (engine, sweep id, the directory)."""
    url = f"sqlite:///{tmp_path / 'resweep.db'}"
    engine = get_engine(url)
    sweep_id = writes.create_sweep(engine, name="s", spec="name: s\n", spec_hash="0" * 64)
    yield engine, sweep_id, tmp_path
    engine.dispose()
