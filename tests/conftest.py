"""Fixtures shared by every test package: database URLs on both backends."""

from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa

from db.door import DROP_ORPHANED_ROLES

# The PostgreSQL server .ci/run makes sure is up (trust auth). Each test gets its own database.
PG_ADMIN_URL = os.environ.get("RESWEEP_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'resweep.db'}"


@pytest.fixture
def pg_url() -> str:
    """A fresh, empty PostgreSQL database on the real local server, dropped afterwards."""
    name = f"resweep_t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(sa.text(DROP_ORPHANED_ROLES))  # the read-only door's roles of that database
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request) -> str:
    """The same test body against SQLite (a temp file) and the real PostgreSQL server."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


@pytest.fixture
def engine(db_url):
    """An engine on db_url (both backends), its schema made by migrating it."""
    from db.engine import get_engine

    engine = get_engine(db_url)
    yield engine
    engine.dispose()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On CI a skipped test is a failure, except GPU tests: CI machines have no GPU.

    Skips exist for developers' machines that lack chromium or a database shell; CI installs
    those, so a skip there means a missing install step, not a passing test. An expected failure
    (xfail) is no skip: it marks a known defect of an open issue, and still runs and reports.
    """
    outcome = yield
    report = outcome.get_result()
    expected_failure = hasattr(report, "wasxfail")
    if report.skipped and not expected_failure and os.environ.get("CI") and item.get_closest_marker("gpu") is None:
        report.outcome = "failed"
        report.longrepr = f"skipped on CI, where everything but a GPU must be present: {report.longrepr}"
