"""One database's read-only door is that database's alone: two resweep databases on one server,
owned by two ordinary logins, and a third login granted what resweep tells an owner to grant a
reader. Nobody can alter, drop, replace or re-own another database's door or read its tables;
an owner who breaks their own door finds `query` refusing it and `db upgrade` mending it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import psycopg
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from db import door, readonly
from db.engine import get_engine, upgrade
from db.errors import QueryError, RefusedStatementError, RolePrivilegeError
from orchestrator.cli.app import app
from tests.conftest import PG_ADMIN_URL
from tests.db.known import make_sweep

pytestmark = pytest.mark.postgres

SIGNATURE = "public.resweep_read(text, integer, bigint, bigint)"
CALL = "SELECT * FROM public.resweep_read({q}, 1, 10, 1000000) AS t(c1 text)"


def _url(user: str, database: str) -> str:
    return sa.make_url(PG_ADMIN_URL).set(username=user, database=database).render_as_string(False)


def connect(user: str, database: str, autocommit: bool = True) -> psycopg.Connection:
    return psycopg.connect(_url(user, database).replace("+psycopg", ""), autocommit=autocommit)


def admin(database: str | None = None) -> psycopg.Connection:
    return connect(sa.make_url(PG_ADMIN_URL).username, database or sa.make_url(PG_ADMIN_URL).database)


@dataclass
class Server:
    alice: str  # owns database a
    bob: str  # owns database b
    mallory: str  # granted b's reader role, as bob was told to grant a reader
    a: str
    b: str

    def url(self, user: str, database: str) -> str:
        return _url(user, database)

    def door(self, database: str) -> door.Door:
        with admin(database) as conn:
            return door.door_of(conn)

    def problems(self, database: str) -> list:
        with admin(database) as conn:
            return door.problems(conn)


def _admin_line(message: str) -> str:
    """The SQL a refusal tells a superuser to run."""
    assert "\n" not in message
    return message.split(" run: ", 1)[1].rsplit("; then run db upgrade again", 1)[0]


@pytest.fixture(scope="module")
def server():
    tag = uuid.uuid4().hex[:8]
    s = Server(f"rs_alice_{tag}", f"rs_bob_{tag}", f"rs_mallory_{tag}", f"rs_door_a_{tag}", f"rs_door_b_{tag}")
    with admin() as conn:
        for login in (s.alice, s.bob, s.mallory):
            conn.execute(f'CREATE ROLE "{login}" LOGIN')
        conn.execute(f'CREATE DATABASE "{s.a}" OWNER "{s.alice}"')
        conn.execute(f'CREATE DATABASE "{s.b}" OWNER "{s.bob}"')
    try:
        for owner, database in ((s.alice, s.a), (s.bob, s.b)):
            # An ordinary owner is stopped, with the one line a superuser runs once; then it works.
            with pytest.raises(RolePrivilegeError) as refused:
                get_engine(s.url(owner, database))
            with admin(database) as conn:  # refused before anything was made
                assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)
                conn.execute(_admin_line(str(refused.value)))
            engine = get_engine(s.url(owner, database))
            make_sweep(engine)
            engine.dispose()
        with connect(s.bob, s.b) as conn:  # the owner grants a reader (the admin line gave it ADMIN)
            conn.execute(f'GRANT "{s.door(s.b).reader}" TO "{s.mallory}"')
        yield s
    finally:
        with admin() as conn:
            for database in (s.a, s.b):
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            for login in (s.alice, s.bob, s.mallory):
                conn.execute(f'DROP ROLE IF EXISTS "{login}"')
            conn.execute(door.DROP_ORPHANED_ROLES)


def test_an_ordinary_owner_is_told_the_one_line_a_superuser_runs(server):
    """The fixture ran it; here: what the line holds, and that the door is whole afterwards."""
    assert server.problems(server.a) == [] and server.problems(server.b) == []
    a = server.door(server.a)
    assert a.reader != server.door(server.b).reader and a.runner != server.door(server.b).runner
    rows = readonly.run_readonly(server.url(server.alice, server.a), "SELECT count(*) FROM sweeps").rows
    assert rows == [(1,)]


def _attempts(s: Server, target: door.Door, own: door.Door) -> dict[str, str]:
    fn = SIGNATURE
    return {
        "alter security invoker": f"ALTER FUNCTION {fn} SECURITY INVOKER",
        "alter owner to self": f'ALTER FUNCTION {fn} OWNER TO CURRENT_USER',
        "alter owner to own reader": f'ALTER FUNCTION {fn} OWNER TO "{own.reader}"',
        "alter set search_path": f"ALTER FUNCTION {fn} SET search_path = public",
        "drop function": f"DROP FUNCTION {fn}",
        "create or replace": f"CREATE OR REPLACE FUNCTION {fn} RETURNS SETOF record LANGUAGE sql AS 'SELECT 1'",
        "rename": f"ALTER FUNCTION {fn} RENAME TO gone",
        "grant execute to public": f"GRANT EXECUTE ON FUNCTION {fn} TO PUBLIC",
        "runner to login": f'ALTER ROLE "{target.runner}" LOGIN',
        "reader to login": f'ALTER ROLE "{target.reader}" LOGIN',
        "own reader to login": f'ALTER ROLE "{own.reader}" LOGIN',
        "set role runner": f'SET ROLE "{target.runner}"',
        "set role reader": f'SET ROLE "{target.reader}"',
        "grant runner to self": f'GRANT "{target.runner}" TO CURRENT_USER',
        "grant reader to self": f'GRANT "{target.reader}" TO CURRENT_USER',
        "drop runner": f'DROP ROLE "{target.runner}"',
        "reassign runner's objects": f'REASSIGN OWNED BY "{target.runner}" TO CURRENT_USER',
        "drop owned by runner": f'DROP OWNED BY "{target.runner}"',
        "read a table": "SELECT count(*) FROM sweeps",
        "read a table as own reader": f'SET ROLE "{own.reader}"; SELECT count(*) FROM sweeps',
        "read through the door": CALL.format(q="'SELECT name FROM sweeps'"),
        "read through the door as own reader": f'SET ROLE "{own.reader}"; ' + CALL.format(q="'SELECT name FROM sweeps'"),
    }  # fmt: skip


@pytest.mark.parametrize("who", ["mallory", "bob"])
def test_no_other_login_can_alter_the_door_of_a_database_it_does_not_own_or_read_its_tables(server, who):
    """mallory (granted b's reader) and bob (b's owner) attack database a."""
    login = getattr(server, who)
    target, own = server.door(server.a), server.door(server.b)
    succeeded = []
    for label, sql in _attempts(server, target, own).items():
        with connect(login, server.a) as conn:
            try:
                with conn.transaction():
                    conn.execute(sql)
            except psycopg.Error:
                continue
            succeeded.append(label)
    assert succeeded == []
    assert server.problems(server.a) == []
    rows = readonly.run_readonly(server.url(server.alice, server.a), "SELECT count(*) FROM sweeps").rows
    assert rows == [(1,)]


def test_a_reader_cannot_alter_the_door_through_the_door(server):
    """Inside resweep_read the statement runs as the runner, which owns the function: the
    function refuses a transaction that is not READ ONLY, and a READ ONLY one refuses DDL."""
    b = server.door(server.b)
    ddl = f"ALTER FUNCTION {SIGNATURE} SECURITY INVOKER"
    inner = f"SELECT query_to_xml('{ddl}', true, false, '')::text"
    for read_only in (False, True):
        with connect(server.mallory, server.b, autocommit=False) as conn:
            conn.read_only = read_only
            conn.execute(f'SET ROLE "{b.reader}"')
            conn.execute("SET LOCAL statement_timeout = '5s'")
            conn.execute(f"SET LOCAL temp_file_limit = '{door.TEMP_FILE_LIMIT}'")
            with pytest.raises(psycopg.Error, match="READ ONLY|read-only|not allowed"):
                conn.execute(CALL.format(q=psycopg.sql.Literal(inner).as_string(conn)))
            conn.rollback()
    assert server.problems(server.b) == []


def test_the_reader_owns_nothing_and_may_read_only_its_own_database(server):
    b = server.door(server.b)
    with connect(server.mallory, server.b) as conn:
        assert conn.execute("SELECT count(*) FROM sweeps").fetchone() == (1,)  # reads b directly
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM sweeps")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f'GRANT "{b.reader}" TO "{server.alice}"')
    rows = readonly.run_readonly(server.url(server.mallory, server.b), "SELECT name FROM sweeps").rows
    assert len(rows) == 1
    with pytest.raises(QueryError, match="may not take the read-only role"):  # not a's reader
        readonly.run_readonly(server.url(server.mallory, server.a), "SELECT name FROM sweeps")


# How an owner (or a superuser) can break a door, and what `query` then says.
BREAKS = {
    "security invoker": (f"ALTER FUNCTION {SIGNATURE} SECURITY INVOKER", "is not SECURITY DEFINER"),
    "owner": (f"ALTER FUNCTION {SIGNATURE} OWNER TO CURRENT_USER", "is not owned by"),
    "search_path": (f"ALTER FUNCTION {SIGNATURE} SET search_path = public", "other settings"),
    "settings reset": (f"ALTER FUNCTION {SIGNATURE} RESET ALL", "other settings"),
    "replaced body": (None, "another body"),
    "dropped": (f"DROP FUNCTION {SIGNATURE}", "is missing"),
    "public execute": (f"GRANT EXECUTE ON FUNCTION {SIGNATURE} TO PUBLIC", "may be called by PUBLIC"),
    "reader lost execute": ("REVOKE EXECUTE ON FUNCTION {fn} FROM {reader}", "may not be called by"),
}


@pytest.mark.parametrize("how", list(BREAKS))
def test_an_altered_door_is_refused_by_query_and_mended_by_db_upgrade(server, how):
    sql, says = BREAKS[how]
    a = server.door(server.a)
    url = server.url(server.alice, server.a)
    with connect(server.alice, server.a) as conn:  # the owner, as a member of the runner
        if how == "replaced body":
            body = door.BODY.replace("nrows := nrows + 1;", "nrows := nrows + 1; PERFORM 1;")
            settings = " ".join(f"SET {k} = '{v}'" for k, v in door.SETTINGS)  # as before but the body
            conn.execute(psycopg.sql.SQL(
                "CREATE OR REPLACE FUNCTION public.resweep_read(query text, ncols integer, max_rows bigint, "
                "max_bytes bigint) RETURNS SETOF record LANGUAGE plpgsql SECURITY DEFINER "
                f"SET search_path = pg_catalog, public, pg_temp {settings} AS {{}}").format(psycopg.sql.Literal(body)))
        else:
            conn.execute(sql.format(fn=SIGNATURE, reader=f'"{a.reader}"'))
    runner = CliRunner()
    out = runner.invoke(app, ["query", "--db", url, "--", "SELECT count(*) FROM sweeps"])
    assert out.exit_code == 2, out.output
    assert out.stderr.count("\n") == 1 and "the read-only door is not as resweep made it" in out.stderr
    assert says in out.stderr and "db upgrade" in out.stderr
    out = runner.invoke(app, ["db", "upgrade", "--db", url])
    assert out.exit_code == 0, out.output
    assert server.problems(server.a) == []
    out = runner.invoke(app, ["query", "--db", url, "--format", "csv", "--", "SELECT count(*) AS n FROM sweeps"])
    assert out.exit_code == 0 and out.stdout == "n\n1\n"


def test_a_door_a_superuser_weakened_needs_a_superuser_to_mend(server):
    """A grant only a superuser can make (the runner to another login; a writer back to PUBLIC):
    query refuses; the owner's db upgrade says the one line; a superuser's db upgrade mends."""
    a = server.door(server.a)
    runner = CliRunner()
    owner_url = server.url(server.alice, server.a)
    super_url = sa.make_url(PG_ADMIN_URL).set(database=server.a).render_as_string(False)
    for weaken, says in (
        (f'GRANT "{a.runner}" TO "{server.mallory}"', f"{server.mallory} is a member of {a.runner}"),
        ("GRANT EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) TO PUBLIC", "may call pg_logical_emit_message"),
        (f'GRANT SET ON PARAMETER temp_file_limit TO "{a.runner}"', "may set temp_file_limit"),
    ):  # fmt: skip
        with admin(server.a) as conn:
            conn.execute(weaken)
        out = runner.invoke(app, ["query", "--db", owner_url, "--", "SELECT 1"])
        assert out.exit_code == 2 and out.stderr.count("\n") == 1 and says in out.stderr, out.output
        out = runner.invoke(app, ["db", "upgrade", "--db", owner_url])
        assert out.exit_code == 2 and out.stderr.count("\n") == 1 and "needs a superuser once" in out.stderr
        out = runner.invoke(app, ["db", "upgrade", "--db", super_url])
        assert out.exit_code == 0, out.output
        assert server.problems(server.a) == []


def test_upgrading_from_the_shared_role_takes_it_out(pg_url):
    """A database at 0009 has 0003's door (the server-wide resweep_reader owning the function);
    0010 drops that function and the role's grants here, and the per-database door replaces it."""
    from alembic import command

    from db import migrate
    from db.engine import create_store_engine, resolve_url

    engine = create_store_engine(resolve_url(pg_url))
    with engine.begin() as conn:
        command.upgrade(migrate.alembic_config(connection=conn), "0009")
        owner = conn.exec_driver_sql(
            "SELECT proowner::regrole::text FROM pg_proc WHERE proname = 'resweep_read'").scalar()
        assert owner == "resweep_reader"
    assert upgrade(pg_url) == ("0009", migrate.head_revision())
    with engine.connect() as conn:
        d = door.door_of(conn.connection.dbapi_connection)
        assert conn.exec_driver_sql(
            "SELECT proowner::regrole::text FROM pg_proc WHERE proname = 'resweep_read'").scalar() == d.runner
        assert not conn.exec_driver_sql(
            "SELECT count(*) FROM pg_roles r WHERE rolname = 'resweep_reader' AND "
            "has_table_privilege(r.oid, 'sweeps', 'SELECT')").scalar()
        assert door.problems(conn.connection.dbapi_connection) == []
    with engine.begin() as conn:  # and back: 0003's door again
        command.downgrade(migrate.alembic_config(connection=conn), "0009")
        assert conn.exec_driver_sql(
            "SELECT proowner::regrole::text FROM pg_proc WHERE proname = 'resweep_read'").scalar() == "resweep_reader"
    engine.dispose()
    assert upgrade(pg_url)[1] == migrate.head_revision()
