"""The bypass corpus (tests/db/bypass_corpus.py) against the read-only door, on SQLite, on
PostgreSQL connected as a superuser and on PostgreSQL connected as an ordinary role that owns
the database: through the database alone (the statement check skipped), through
`python -m orchestrator query` and through the dashboard's SQL page.

Every form must be refused (exit status 2 and one line; an error on the page), leave every row
and name as it was, write no file, create no replication slot, reset no statistics and signal
no backend. One database per target for the whole module, so the corpus stays fast.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

import dashboard
from db import door, readonly
from db.engine import get_engine, resolve_url
from db.errors import RefusedStatementError, StoreError
from db.statement_check import check_statement
from orchestrator.cli.app import app
from tests.conftest import PG_ADMIN_URL
from tests.db.bypass_corpus import corpus, refused_calls, render
from tests.db.known import make_sweep

FORMS = corpus()
TARGETS = ["sqlite", pytest.param("pg_superuser", marks=pytest.mark.postgres),
           pytest.param("pg_owner", marks=pytest.mark.postgres)]  # fmt: skip
# Forms PostgreSQL may run and that change nothing lasting (checked); none since the door's runner
# may call no large-object writer.
ROLLED_BACK_ON_POSTGRESQL: set[str] = set()
APP = Path(dashboard.__file__).resolve().parent / "app.py"


def admin_conn() -> psycopg.Connection:
    return psycopg.connect(sa.make_url(PG_ADMIN_URL).set(drivername="postgresql").render_as_string(False), autocommit=True)


@dataclass
class Target:
    url: str
    engine: sa.Engine
    marker: Path  # a file no form may create (the PostgreSQL server can write /tmp)
    victim: psycopg.Connection | None  # a backend of the same login that must stay alive

    @property
    def victim_pid(self) -> int:
        return self.victim.info.backend_pid if self.victim else 0

    def state(self) -> dict:
        """Everything a form could have changed."""
        with self.engine.connect() as conn:
            tables = {t: conn.execute(sa.text(f"SELECT * FROM {t} ORDER BY 1, 2, 3")).all()
                      for t in ("sweeps", "trials", "metrics", "layer_stats")}  # fmt: skip
            inspector = sa.inspect(conn)
            tables["names"] = (sorted(inspector.get_table_names()), sorted(inspector.get_view_names()))
            if conn.dialect.name == "postgresql":
                server = conn.execute(sa.text(
                    "SELECT (SELECT count(*) FROM pg_replication_slots), (SELECT count(*) FROM pg_largeobject_metadata),"
                    " (SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()),"
                    " (SELECT count(*) FROM pg_class WHERE relpersistence = 't')"
                )).one()  # fmt: skip
                tables["server"] = tuple(server)
            else:
                tables["files"] = sorted(p.name for p in Path(self.engine.url.database).parent.iterdir())
        return tables

    def check(self, before: dict, label: str) -> list[str]:
        problems = []
        if self.state() != before:
            problems.append(f"{label}: the database changed")
        if self.marker.exists():
            problems.append(f"{label}: wrote {self.marker}")
            self.marker.unlink()
        if self.victim is not None and self.victim.execute("SELECT 1").fetchone() != (1,):
            problems.append(f"{label}: the victim backend was signalled")
        return problems


def _pg_target(kind: str):
    name = f"resweep_t_corpus_{uuid.uuid4().hex[:10]}"
    owner = f"resweep_t_owner_{uuid.uuid4().hex[:8]}" if kind == "pg_owner" else None
    with admin_conn() as admin:
        if owner:
            admin.execute(f'CREATE ROLE "{owner}" LOGIN')
            admin.execute(f'CREATE DATABASE "{name}" OWNER "{owner}"')
        else:
            admin.execute(f'CREATE DATABASE "{name}"')
    if owner:  # the one line a superuser runs once for a database an ordinary role owns
        with psycopg.connect(sa.make_url(PG_ADMIN_URL).set(drivername="postgresql", database=name)
                             .render_as_string(False), autocommit=True) as conn:  # fmt: skip
            conn.execute(door.admin_sql(conn, door.door_of(conn)))
    url = sa.make_url(PG_ADMIN_URL).set(database=name, username=owner or sa.make_url(PG_ADMIN_URL).username)
    return url.render_as_string(hide_password=False), name, owner


@pytest.fixture(scope="module", params=TARGETS)
def target(request, tmp_path_factory):
    kind = request.param
    marker = Path(f"/tmp/resweep_corpus_marker_{uuid.uuid4().hex}")
    name = owner = None
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('corpus') / 'resweep.db'}"
    else:
        url, name, owner = _pg_target(kind)
    engine = get_engine(url)  # migrates: as the superuser, or as the owning role
    make_sweep(engine)
    victim = None
    if kind != "sqlite":
        victim = psycopg.connect(sa.make_url(resolve_url(url)).set(drivername="postgresql").render_as_string(False), autocommit=True)
    yield Target(url, engine, marker, victim)
    engine.dispose()
    if victim is not None:
        victim.close()
    if name:
        with admin_conn() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'resweep_evil'")
            if owner:
                admin.execute(f'DROP ROLE IF EXISTS "{owner}"')
            admin.execute(door.DROP_ORPHANED_ROLES)


def test_the_database_alone_refuses_every_form(target):
    """The statement check skipped: what is left is PostgreSQL's (or SQLite's) own refusal."""
    before = target.state()
    problems = []
    for label, template in FORMS:
        sql = render(template, str(target.marker), target.victim_pid)
        start = time.monotonic()
        try:
            result = readonly._execute(resolve_url(target.url), sql, 10, 2.0)
        except StoreError as exc:
            message = str(exc)
            if "\n" in message:
                problems.append(f"{label}: a message of several lines: {message!r}")
        else:  # allowed only where this database reads the text as one harmless statement
            if target.victim is not None and template not in ROLLED_BACK_ON_POSTGRESQL:
                problems.append(f"{label}: PostgreSQL ran it and returned {result.rows[:2]}")
        if time.monotonic() - start > 10:
            problems.append(f"{label}: beat the 2 s timeout")
        problems += target.check(before, label)
    assert not problems, "\n".join(problems)


def test_the_query_command_refuses_every_form_with_exit_2(target):
    runner = CliRunner()
    before = target.state()
    problems = []
    for label, template in FORMS:
        sql = render(template, str(target.marker), target.victim_pid)
        out = runner.invoke(app, ["query", "--db", target.url, "--", sql])
        if out.exit_code != 2 or not out.stderr.startswith("error: ") or out.stderr.count("\n") != 1:
            problems.append(f"{label}: exit {out.exit_code}, stderr {out.stderr!r}")
        problems += target.check(before, label)
    assert not problems, "\n".join(problems)


def test_the_sql_page_refuses_every_form(target, monkeypatch):
    monkeypatch.setenv("RESWEEP_DB", target.url)
    monkeypatch.setenv("RESWEEP_SQL_PAGE", "on")  # AppTest has no server address (test_sql_page_access.py)
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    at.switch_page("views/sql.py").run()
    assert not at.exception and not at.error
    before = target.state()
    problems = []
    for label, template in FORMS:
        at.text_area(key="sql").input(render(template, str(target.marker), target.victim_pid))
        at.button[0].click().run()
        if at.exception or len(at.error) != 1 or at.main.dataframe:
            problems.append(f"{label}: the page showed {[e.value for e in at.error]} {[e.value for e in at.exception]}")
        problems += target.check(before, label)
    assert not problems, "\n".join(problems)


def test_the_database_refuses_every_spelling_of_every_writing_function(target):
    """The statement check skipped: PostgreSQL itself refuses the door's role each function
    (permission denied), quoted, schema-qualified or upper-cased; nothing is written. (SQLite
    has none of these functions: each is an error there.)"""
    before = target.state()
    problems = []
    for sql in refused_calls():
        try:
            result = readonly._execute(resolve_url(target.url), sql, 10, 5.0)
        except RefusedStatementError as exc:
            name = sql.removeprefix("SELECT ").split("(")[0].split(".")[-1].strip().strip('"').lower()
            if target.victim is not None and f"permission denied for function {name}" not in str(exc):
                problems.append(f"{sql}: refused for another reason: {exc}")
        except StoreError as exc:
            if target.victim is not None:
                problems.append(f"{sql}: not refused by the database's privileges: {exc}")
        else:
            problems.append(f"{sql}: it ran and returned {result.rows}")
    problems += target.check(before, "writing functions")
    assert not problems, "\n".join(problems)


def test_the_statement_check_refuses_quoted_and_qualified_spellings_too():
    for sql in refused_calls():
        if '"' in sql or "." in sql:
            with pytest.raises(RefusedStatementError, match="changes state"):
                check_statement(sql, "postgresql")
