"""Fixtures for the store's tests (helpers with known values live in tests/db/known.py)."""

from __future__ import annotations

import pytest

from db.engine import get_engine


@pytest.fixture
def engine(db_url):
    """The database at db_url, created by migrating it (both backends)."""
    engine = get_engine(db_url)
    yield engine
    engine.dispose()
