"""Migration 0003 on PostgreSQL: the role resweep_reader can SELECT resweep's relations and
nothing else, and a migrating role that cannot make or grant it is stopped with the fix."""

from __future__ import annotations

import uuid

import psycopg
import pytest
import sqlalchemy as sa

from db.engine import get_engine
from db.errors import QueryError, RolePrivilegeError
from db import readonly
from tests.conftest import PG_ADMIN_URL

pytestmark = pytest.mark.postgres


def admin() -> psycopg.Connection:
    return psycopg.connect(sa.make_url(PG_ADMIN_URL).set(drivername="postgresql").render_as_string(False), autocommit=True)


def test_the_reader_may_select_every_relation_and_do_nothing_else(pg_url):
    engine = get_engine(pg_url)
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        relations = [*inspector.get_table_names(), *inspector.get_view_names()]
        relations.remove("alembic_version")
        assert len(relations) >= 7
        for name in relations:
            privileges = conn.execute(sa.text(
                "SELECT p, has_table_privilege('resweep_reader', :r, p) FROM unnest(ARRAY"
                "['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) AS p"
            ), {"r": name}).all()  # fmt: skip
            assert dict(privileges) == {"SELECT": True, **{p: False for p, _ in privileges[1:]}}, name
        role = conn.execute(sa.text(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolcanlogin, rolreplication, rolbypassrls, "
            "(SELECT count(*) FROM pg_auth_members WHERE member = r.oid) FROM pg_roles r WHERE rolname = 'resweep_reader'"
        )).one()  # fmt: skip
        assert tuple(role) == (False, False, False, False, False, False, 0)
        assert not conn.scalar(sa.text("SELECT has_schema_privilege('resweep_reader', current_schema(), 'CREATE')"))
        assert not conn.scalar(sa.text("SELECT has_function_privilege('public', 'resweep_read(text, integer, bigint, bigint)', 'EXECUTE')"))
    with engine.begin() as conn:  # a table a later migration makes is readable without a grant of its own
        conn.execute(sa.text("CREATE TABLE a_later_table (id integer)"))
        assert conn.scalar(sa.text("SELECT has_table_privilege('resweep_reader', 'a_later_table', 'SELECT')"))
        assert not conn.scalar(sa.text("SELECT has_table_privilege('resweep_reader', 'a_later_table', 'INSERT')"))
    engine.dispose()


def test_a_role_that_cannot_make_or_grant_the_reader_is_stopped_with_the_fix():
    name, owner = f"resweep_t_norole_{uuid.uuid4().hex[:8]}", f"resweep_t_plain_{uuid.uuid4().hex[:8]}"
    with admin() as conn:
        conn.execute("DO $$ BEGIN CREATE ROLE resweep_reader NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
        conn.execute(f'CREATE ROLE "{owner}" LOGIN')
        conn.execute(f'CREATE DATABASE "{name}" OWNER "{owner}"')
    url = sa.make_url(PG_ADMIN_URL).set(database=name, username=owner).render_as_string(False)
    try:
        with pytest.raises(RolePrivilegeError) as err:
            get_engine(url)
        assert f"GRANT resweep_reader TO {owner}" in str(err.value) and "\n" not in str(err.value)
        with admin() as conn:  # nothing half-made: the whole migration was rolled back
            tables = conn.execute(f"SELECT count(*) FROM pg_database WHERE datname = '{name}'").fetchone()
            assert tables == (1,)
        check = sa.create_engine(url)
        with check.connect() as conn:
            assert sa.inspect(conn).get_table_names() == []
        check.dispose()
    finally:
        with admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'DROP ROLE IF EXISTS "{owner}"')


def test_a_login_without_the_reader_role_gets_one_line_saying_which_grant(pg_url):
    get_engine(pg_url).dispose()
    login = f"resweep_t_outsider_{uuid.uuid4().hex[:8]}"
    with admin() as conn:
        conn.execute(f'CREATE ROLE "{login}" LOGIN')
    try:
        url = sa.make_url(pg_url).set(username=login).render_as_string(False)
        with pytest.raises(QueryError) as err:
            readonly.run_readonly(url, "SELECT count(*) FROM metrics")
        assert f"GRANT resweep_reader TO {login}" in str(err.value) and "\n" not in str(err.value)
    finally:
        with admin() as conn:
            conn.execute(f'DROP ROLE IF EXISTS "{login}"')
