"""The door's roles on PostgreSQL (db/door.py): the reader and the runner can SELECT resweep's
relations and nothing else, the runner is refused every writing function however it is spelled,
and a login without the reader role is told in one line which grant it needs."""

from __future__ import annotations

import uuid

import psycopg
import pytest
import sqlalchemy as sa

from db import door, readonly
from db.engine import get_engine
from db.errors import QueryError
from tests.conftest import PG_ADMIN_URL

pytestmark = pytest.mark.postgres


def admin() -> psycopg.Connection:
    return psycopg.connect(sa.make_url(PG_ADMIN_URL).set(drivername="postgresql").render_as_string(False), autocommit=True)


def test_the_reader_and_runner_may_select_every_relation_and_do_nothing_else(pg_url):
    engine = get_engine(pg_url)
    with engine.connect() as conn:
        d = door.door_of(conn.connection.dbapi_connection)
        inspector = sa.inspect(conn)
        relations = [*inspector.get_table_names(), *inspector.get_view_names()]
        assert len(relations) >= 7
        for role in (d.reader, d.runner):
            for name in relations:
                privileges = conn.execute(sa.text(
                    "SELECT p, has_table_privilege(:role, :r, p) FROM unnest(ARRAY"
                    "['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) AS p"
                ), {"r": name, "role": role}).all()  # fmt: skip
                assert dict(privileges) == {"SELECT": True, **{p: False for p, _ in privileges[1:]}}, (role, name)
            attributes = conn.execute(sa.text(
                "SELECT rolsuper, rolcreaterole, rolcreatedb, rolcanlogin, rolreplication, rolbypassrls, "
                "(SELECT count(*) FROM pg_auth_members WHERE member = r.oid) FROM pg_roles r WHERE rolname = :role"
            ), {"role": role}).one()  # fmt: skip
            assert tuple(attributes) == (False, False, False, False, False, False, 0)
            assert not conn.scalar(sa.text("SELECT has_schema_privilege(:role, current_schema(), 'CREATE')"), {"role": role})
        assert not conn.scalar(sa.text("SELECT has_function_privilege('public', 'resweep_read(text, integer, bigint, bigint)', 'EXECUTE')"))
        assert door.problems(conn.connection.dbapi_connection) == []
    engine.dispose()


def test_the_runner_may_call_none_of_the_writing_functions(pg_url):
    """The database's own refusal, by function (so every spelling): EXECUTE revoked from PUBLIC."""
    engine = get_engine(pg_url)
    with engine.connect() as conn:
        d = door.door_of(conn.connection.dbapi_connection)
        allowed = conn.execute(sa.text(
            "SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.pronamespace = 'pg_catalog'::regnamespace "
            "AND p.proname = ANY(:names) AND has_function_privilege(:runner, p.oid, 'EXECUTE')"
        ), {"names": list(door.WRITING_FUNCTIONS), "runner": d.runner}).scalars().all()  # fmt: skip
        assert allowed == []
        count = conn.scalar(sa.text("SELECT count(*) FROM pg_proc WHERE proname = ANY(:names)"),
                            {"names": list(door.WRITING_FUNCTIONS)})  # fmt: skip
        assert count >= 29  # every overload is covered, not just one
    engine.dispose()


def test_a_login_without_the_reader_role_gets_one_line_saying_which_grant(pg_url):
    get_engine(pg_url).dispose()
    login = f"resweep_t_outsider_{uuid.uuid4().hex[:8]}"
    with admin() as conn:
        conn.execute(f'CREATE ROLE "{login}" LOGIN')
    try:
        url = sa.make_url(pg_url).set(username=login).render_as_string(False)
        with pytest.raises(QueryError) as err:
            readonly.run_readonly(url, "SELECT count(*) FROM metrics")
        assert f"TO {login}`" in str(err.value) and "GRANT resweep_reader_" in str(err.value)
        assert "\n" not in str(err.value)
    finally:
        with admin() as conn:
            conn.execute(f'DROP ROLE IF EXISTS "{login}"')
