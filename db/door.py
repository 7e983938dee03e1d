"""The read-only door on PostgreSQL: one database's roles and function, made, checked and repaired.

Each database has a door of its own, so that what one database's readers are granted gives them
nothing in another database on the same server:

- `resweep_reader_<name>_<oid>` (the *reader*): the role `query` takes with `SET LOCAL ROLE`
  and the one readers' logins are granted. NOLOGIN, no attribute, member of no role, owns
  nothing anywhere: being a member of it lets a login SELECT this database's tables and views
  and EXECUTE the door, nothing more (a member of a role can alter what the role owns; this
  one owns nothing to alter).
- `resweep_door_<name>_<oid>` (the *runner*): owns the function `resweep_read` and is who the
  user's statement runs as (SECURITY DEFINER). NOLOGIN, SELECT on this database's tables and
  views only; its only member is the database's owner, so no reader can alter, drop, replace or
  re-own the function.
- `resweep_read(text, integer, bigint, bigint)`: SECURITY DEFINER, with its search_path and the
  memory and lock settings fixed in its SET clause; its body refuses to run outside a READ
  ONLY transaction, without a statement timeout, or without a temp_file_limit.
- In this database, EXECUTE on the functions that write or reach outside a transaction
  (`WRITING_FUNCTIONS`: WAL messages, large-object writers, advisory locks, notifications,
  set_config) is revoked from PUBLIC and granted back to the database's owner
  (pg_database_owner) and, for what resweep's own readers call, to the reader: the runner,
  hence every statement through the door, is refused them by PostgreSQL, whatever the
  spelling. The reader may set temp_file_limit (GRANT SET ON PARAMETER), which the runner
  may not, so the statement cannot lift the bound the door's transaction sets.

Roles, memberships, parameter privileges and the ACLs of pg_catalog's functions need a superuser:
`ensure_door` does that part itself when it runs as one, and otherwise stops with the one line
of SQL a superuser runs once for the database (`admin_sql`). The rest (the function, the table
grants) is the database owner's, done on every `db upgrade`. `check_door` is read by every
`query` before anything of the user's runs; what it finds wrong, `db upgrade` repairs.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import psycopg
from psycopg import sql as pgsql

from db.errors import QueryError, RolePrivilegeError

FUNCTION = "resweep_read"
ARGUMENTS = "text, integer, bigint, bigint"
TEMP_FILE_LIMIT = "1GB"  # per query: temporary files (sorts, hashes, materialised sets)
MAX_TIMEOUT_S = 600  # the door refuses to run without a statement timeout, or with a longer one
# The function's SET clause: fixed for the statement's whole run; the runner cannot change a
# setting (set_config is refused it, SET is not a query).
SETTINGS = (
    ("work_mem", "32MB"),
    ("hash_mem_multiplier", "1"),
    ("max_parallel_workers_per_gather", "0"),  # one process per query: its memory, its CPU
    ("lock_timeout", "5s"),
    ("jit", "off"),
)

# EXECUTE revoked from PUBLIC in the door's database (every overload in pg_catalog).
WRITING_FUNCTIONS = (
    "pg_logical_emit_message",  # writes the WAL, in any transaction, read-only or not
    "lo_create", "lo_creat", "lo_from_bytea", "lo_put", "lo_open", "lowrite", "lo_truncate",
    "lo_truncate64", "lo_unlink",  # large objects: allowed in a READ ONLY transaction
    "pg_advisory_lock", "pg_advisory_lock_shared", "pg_advisory_xact_lock",
    "pg_advisory_xact_lock_shared", "pg_try_advisory_lock", "pg_try_advisory_lock_shared",
    "pg_try_advisory_xact_lock", "pg_try_advisory_xact_lock_shared",  # the shared lock table
    "pg_notify", "set_config",
)  # fmt: skip
# What a reader's own session uses (db.migrate's schema lock on opening; pg_dump's set_config).
READER_FUNCTIONS = ("pg_catalog.pg_advisory_xact_lock(bigint)", "pg_catalog.set_config(text,text,boolean)")

# The statement runs as a subquery (so only a SELECT, VALUES, TABLE or WITH query fits, and the
# cursor takes exactly one) and stops after max_rows + 1 rows or past max_bytes; the newline
# before ')' ends a trailing `-- comment` in the user's text.
BODY = r"""
DECLARE
    r record;
    nrows bigint := 0;
    nbytes bigint := 0;
    names text;
    temp_limit text := current_setting('temp_file_limit');
    timeout interval := current_setting('statement_timeout')::interval;
BEGIN
    IF current_setting('transaction_read_only') <> 'on' THEN
        RAISE EXCEPTION 'resweep_read runs only in a READ ONLY transaction'
            USING ERRCODE = 'read_only_sql_transaction';
    END IF;
    IF timeout = interval '0' OR timeout > interval '@MAX_TIMEOUT_S@ seconds' THEN
        RAISE EXCEPTION 'resweep_read runs only under a statement_timeout of at most @MAX_TIMEOUT_S@ s'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF temp_limit = '-1' OR pg_size_bytes(temp_limit) > pg_size_bytes('@TEMP_FILE_LIMIT@') THEN
        RAISE EXCEPTION 'resweep_read runs only under a temp_file_limit of at most @TEMP_FILE_LIMIT@'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT string_agg(format('c%s', i), ', ') INTO names FROM generate_series(1, ncols) AS i;
    FOR r IN EXECUTE format(E'SELECT * FROM (%s\n) AS resweep_query(%s)', query, names) LOOP
        nbytes := nbytes + coalesce(octet_length(r::text), 0);
        IF nbytes > max_bytes THEN
            RAISE EXCEPTION 'the result is larger than % bytes', max_bytes
                USING ERRCODE = 'program_limit_exceeded';
        END IF;
        nrows := nrows + 1;
        RETURN NEXT r;
        EXIT WHEN nrows > max_rows;
    END LOOP;
END
""".replace("@MAX_TIMEOUT_S@", str(MAX_TIMEOUT_S)).replace("@TEMP_FILE_LIMIT@", TEMP_FILE_LIMIT)


@dataclass(frozen=True)
class Door:
    """The names of one database's door."""

    database: str
    owner: str  # the database's owner (pg_database.datdba)
    schema: str  # where resweep's tables are (the migrating connection's current_schema)
    reader: str
    runner: str

    @property
    def function(self) -> pgsql.Composed:
        return pgsql.SQL("{}.{}({})").format(
            pgsql.Identifier(self.schema), pgsql.Identifier(FUNCTION), pgsql.SQL(ARGUMENTS)
        )



def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def role_names(database: str, oid: int) -> tuple[str, str]:
    """(reader, runner) for a database: its name (letters, digits, '_'; cut, with a hash when
    anything was changed) and its oid, so a renamed or re-created database gets new roles and
    the readers granted the old ones nothing."""
    slug = re.sub(r"[^a-z0-9_]", "_", database.lower())[:24]
    if slug != database:
        slug = f"{slug[:17]}_{hashlib.sha1(database.encode()).hexdigest()[:6]}"
    return f"resweep_reader_{slug}_{oid}", f"resweep_door_{slug}_{oid}"


def door_of(conn: psycopg.Connection) -> Door:
    """The door's names for the database `conn` is connected to."""
    name, oid, owner, schema = conn.execute(
        "SELECT d.datname, d.oid, pg_get_userbyid(d.datdba), current_schema() "
        "FROM pg_database AS d WHERE d.datname = current_database()"
    ).fetchone()
    reader, runner = role_names(name, oid)
    return Door(name, owner, schema or "public", reader, runner)


# --- checking ---------------------------------------------------------------------------------

# One query: every way the door could differ from what ensure_door makes, as (kind, what) rows;
# kind 'admin' needs a superuser to mend, 'owner' the database owner (db upgrade).
_CHECK = """
WITH door AS (
    SELECT (SELECT oid FROM pg_roles WHERE rolname = %(reader)s) AS reader,
           (SELECT oid FROM pg_roles WHERE rolname = %(runner)s) AS runner,
           (SELECT datdba FROM pg_database WHERE datname = current_database()) AS owner,
           (SELECT p.oid FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
             WHERE n.nspname = %(schema)s AND p.proname = %(function)s
               AND p.proargtypes = '25 23 20 20'::oidvector) AS fn
), roles AS (
    SELECT r.oid, r.rolname, r.oid = door.reader AS is_reader, door.*
    FROM pg_roles AS r, door WHERE r.oid IN (door.reader, door.runner)
)
SELECT 'admin', format('the role %%s is missing', name) FROM door, LATERAL
    (VALUES (%(reader)s, door.reader), (%(runner)s, door.runner)) AS v(name, oid) WHERE v.oid IS NULL
UNION ALL
SELECT 'admin', format('the role %%s has the attribute %%s', roles.rolname, a)
FROM roles JOIN pg_roles AS p USING (oid), LATERAL (VALUES
    ('LOGIN', p.rolcanlogin), ('SUPERUSER', p.rolsuper), ('CREATEROLE', p.rolcreaterole),
    ('CREATEDB', p.rolcreatedb), ('REPLICATION', p.rolreplication), ('BYPASSRLS', p.rolbypassrls)
) AS a(a, has) WHERE has
UNION ALL
SELECT 'admin', format('the role %%s is a member of %%s', roles.rolname, pg_get_userbyid(m.roleid))
FROM roles JOIN pg_auth_members AS m ON m.member = roles.oid
UNION ALL
SELECT 'admin', format('%%s is a member of %%s', pg_get_userbyid(m.member), roles.rolname)
FROM roles JOIN pg_auth_members AS m ON m.roleid = roles.oid
WHERE NOT roles.is_reader AND m.member <> roles.owner
UNION ALL
SELECT 'admin', format('the database owner %%s is not a member of %%s', pg_get_userbyid(roles.owner), roles.rolname)
FROM roles WHERE NOT pg_has_role(roles.owner, roles.oid, 'MEMBER')
UNION ALL
SELECT 'admin', format('the role %%s owns %%s', roles.rolname, d.classid::regclass)
FROM roles JOIN pg_shdepend AS d ON d.refobjid = roles.oid AND d.refclassid = 'pg_authid'::regclass
WHERE d.deptype = 'o' AND (roles.is_reader OR d.objid <> coalesce(roles.fn, 0) OR d.dbid <> (
    SELECT oid FROM pg_database WHERE datname = current_database()))
UNION ALL
SELECT 'admin', format('%%s may set temp_file_limit', rolname)
FROM roles WHERE NOT is_reader AND has_parameter_privilege(oid, 'temp_file_limit', 'SET')
UNION ALL
SELECT 'admin', format('%%s may not set temp_file_limit', rolname)
FROM roles WHERE is_reader AND NOT has_parameter_privilege(oid, 'temp_file_limit', 'SET')
UNION ALL
SELECT 'admin', format('%%s may call %%s', rolname, p.oid::regprocedure)
FROM roles, pg_proc AS p
WHERE NOT roles.is_reader AND p.pronamespace = 'pg_catalog'::regnamespace
  AND p.proname = ANY(%(writing)s) AND has_function_privilege(roles.oid, p.oid, 'EXECUTE')
UNION ALL
SELECT 'owner', 'the function ' || %(function)s || ' is missing' FROM door WHERE fn IS NULL
UNION ALL
SELECT 'owner', format('the function %%s %%s', p.oid::regprocedure, what)
FROM door JOIN pg_proc AS p ON p.oid = door.fn, LATERAL (VALUES
    ('is not SECURITY DEFINER', NOT p.prosecdef),
    ('is not owned by ' || %(runner)s, p.proowner IS DISTINCT FROM door.runner),
    ('has other settings than the door''s', p.proconfig IS DISTINCT FROM
        ('search_path=pg_catalog, ' || quote_ident(%(schema)s) || ', pg_temp') || %(settings)s::text[]),
    ('has another body than the door''s', p.prosrc IS DISTINCT FROM %(body)s
        OR p.prolang <> (SELECT oid FROM pg_language WHERE lanname = 'plpgsql')
        OR p.proretset IS NOT TRUE OR p.prorettype <> 'record'::regtype),
    ('may be called by PUBLIC', has_function_privilege('public', p.oid, 'EXECUTE')),
    ('may not be called by ' || %(reader)s, door.reader IS NOT NULL
        AND NOT has_function_privilege(door.reader, p.oid, 'EXECUTE'))
) AS c(what, wrong) WHERE wrong
UNION ALL
SELECT 'owner', format('the function %%s may be called by %%s', p.oid::regprocedure, pg_get_userbyid(a.grantee))
FROM door JOIN pg_proc AS p ON p.oid = door.fn, aclexplode(p.proacl) AS a
WHERE a.grantee NOT IN (door.reader, door.runner, 0)
UNION ALL
SELECT 'owner', format('every role may create objects in the schema %%s', %(schema)s)
WHERE has_schema_privilege('public', %(schema)s, 'CREATE')
"""


def _check_params(door: Door) -> dict:
    return {
        "reader": door.reader, "runner": door.runner, "schema": door.schema, "function": FUNCTION,
        "writing": list(WRITING_FUNCTIONS), "body": BODY,
        "settings": [f"{k}={v}" for k, v in SETTINGS],
    }  # fmt: skip


def problems(conn: psycopg.Connection, door: Door | None = None) -> list[tuple[str, str]]:
    """Every way the door of `conn`'s database differs from what `ensure_door` makes:
    ('admin' | 'owner', what), empty when it is whole."""
    door = door or door_of(conn)
    return [tuple(r) for r in conn.execute(_CHECK, _check_params(door)).fetchall()]


def check_door(conn: psycopg.Connection, where: str, advice: str) -> Door:
    """The door of `conn`'s database, or a one-line QueryError saying what is wrong with it and
    `advice` (how to repair it). Run before anything of a user's statement."""
    door = door_of(conn)
    found = problems(conn, door)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise QueryError(
            f"{where}: the read-only door is not as resweep made it: {found[0][1]}{more}; "
            f"refusing to run the statement: {advice}"
        )
    return door


# --- making and mending -----------------------------------------------------------------------


def admin_sql(conn: psycopg.Connection, door: Door) -> str:
    """The SQL a superuser runs once in the door's database (one line): the roles, their
    attributes and memberships, the parameter privilege, pg_catalog's ACLs. Idempotent; it
    also takes back whatever membership or privilege it finds that the door does not give."""
    q = _ident
    r, o, owner = q(door.reader), q(door.runner), q(door.owner)
    attrs = "NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS"
    writing = ", ".join(
        row[0] for row in conn.execute(
            "SELECT 'pg_catalog.' || p.oid::regprocedure::text FROM pg_proc AS p WHERE p.pronamespace = "
            "'pg_catalog'::regnamespace AND p.proname = ANY(%s) ORDER BY 1", (list(WRITING_FUNCTIONS),)
        ).fetchall()
    )  # fmt: skip
    stray = [  # memberships the door does not give (an administrator's mistake, or an attack)
        f"REVOKE {q(role)} FROM {q(member)}"
        for role, member in conn.execute(
            "SELECT pg_get_userbyid(m.roleid), pg_get_userbyid(m.member) FROM pg_auth_members AS m "
            "JOIN pg_roles AS r ON r.oid IN (m.roleid, m.member) WHERE r.rolname = ANY(%s) AND NOT "
            "(m.roleid = r.oid AND (r.rolname = %s OR m.member = (SELECT datdba FROM pg_database "
            "WHERE datname = current_database())))",
            ([door.reader, door.runner], door.reader),
        ).fetchall()
    ]
    statements = [
        f"DO $$BEGIN CREATE ROLE {r}; EXCEPTION WHEN duplicate_object THEN NULL; END$$",
        f"DO $$BEGIN CREATE ROLE {o}; EXCEPTION WHEN duplicate_object THEN NULL; END$$",
        f"ALTER ROLE {r} {attrs}",
        f"ALTER ROLE {o} {attrs}",
        *stray,
        f"GRANT {r} TO {owner} WITH ADMIN OPTION",  # the owner grants the database's readers
        f"GRANT {o} TO {owner}",
        f"GRANT SET ON PARAMETER temp_file_limit TO {r}",
        f"REVOKE SET ON PARAMETER temp_file_limit FROM {o}",
        f"REVOKE EXECUTE ON FUNCTION {writing} FROM PUBLIC, {o}",
        f"GRANT EXECUTE ON FUNCTION {writing} TO pg_database_owner",
        f"GRANT EXECUTE ON FUNCTION {', '.join(READER_FUNCTIONS)} TO {r}",
    ]
    return "; ".join(statements)


def ensure_door(conn: psycopg.Connection, where: str) -> Door:
    """Make or mend the door of `conn`'s database, in the caller's transaction: the superuser's
    part when it is missing (as a superuser; otherwise RolePrivilegeError with the line of SQL
    a superuser runs once), then the function and grants afresh. Raises RolePrivilegeError
    when the connecting role cannot do its part either (it does not own the database)."""
    door = door_of(conn)
    is_super = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]
    if any(kind == "admin" for kind, _ in problems(conn, door)):
        sql = admin_sql(conn, door)
        if not is_super:
            first = next(what for kind, what in problems(conn, door) if kind == "admin")
            raise RolePrivilegeError(
                f"{where}: the read-only door of database {door.database} needs a superuser once "
                f"({first}): as a superuser, connected to database {door.database}, run: {sql}; "
                "then run db upgrade again"
            )
        for attempt in range(5):
            try:
                with conn.transaction():  # a savepoint inside the caller's transaction
                    conn.execute(sql)
                break
            except psycopg.errors.InternalError_ as exc:
                # Two databases' doors granted the same parameter at one moment (PostgreSQL takes
                # no lock for a parameter's ACL): the loser's GRANT fails; try it again.
                if "concurrently" not in str(exc) or attempt == 4:
                    raise
    try:
        _make_function(conn, door, remake=bool(problems(conn, door)))
    except psycopg.errors.InsufficientPrivilege as exc:
        raise RolePrivilegeError(
            f"{where}: {_first_line(exc)}: run db upgrade as the owner of database {door.database} "
            f"({door.owner}) or as a superuser"
        ) from exc
    left = problems(conn, door)
    if left:
        raise RolePrivilegeError(f"{where}: the read-only door could not be made whole: {left[0][1]}")
    return door


def _make_function(conn: psycopg.Connection, door: Door, remake: bool) -> None:
    """The function afresh (whatever was there) when `remake`, owned by the runner; the roles'
    grants on every relation of the schema always (a migration may have made new ones)."""
    schema, reader, runner = (pgsql.Identifier(n) for n in (door.schema, door.reader, door.runner))
    settings = pgsql.SQL(" ").join(
        [pgsql.SQL("SET search_path = pg_catalog, {}, pg_temp").format(schema)]
        + [pgsql.SQL("SET {} = {}").format(pgsql.Identifier(k), pgsql.Literal(v)) for k, v in SETTINGS]
    )
    run = lambda q, *a: conn.execute(pgsql.SQL(q).format(*a))  # noqa: E731
    if not remake:
        run("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}, {}", schema, reader, runner)
        return
    run("DROP FUNCTION IF EXISTS {}", door.function)
    run(
        "CREATE FUNCTION {}.{}(query text, ncols integer, max_rows bigint, max_bytes bigint) "
        "RETURNS SETOF record LANGUAGE plpgsql SECURITY DEFINER {} AS {}",
        schema, pgsql.Identifier(FUNCTION), settings, pgsql.Literal(BODY),
    )  # fmt: skip
    run("REVOKE ALL ON FUNCTION {} FROM PUBLIC", door.function)
    run("GRANT EXECUTE ON FUNCTION {} TO {}", door.function, reader)
    # A function's new owner must be allowed to create in its schema, for the moment it is handed
    # over; taken back at once, so the runner owns this one function and nothing else.
    run("GRANT USAGE ON SCHEMA {} TO {}, {}", schema, reader, runner)
    run("GRANT CREATE ON SCHEMA {} TO {}", schema, runner)
    run("ALTER FUNCTION {} OWNER TO {}", door.function, runner)
    run("REVOKE CREATE ON SCHEMA {} FROM {}, {}", schema, runner, reader)
    run("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {}, {}", schema, reader, runner)
    run("REVOKE ALL ON ALL SEQUENCES IN SCHEMA {} FROM {}, {}", schema, reader, runner)
    run("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}, {}", schema, reader, runner)
    if conn.execute("SELECT has_schema_privilege('public', %s, 'CREATE')", (door.schema,)).fetchone()[0]:
        run("REVOKE CREATE ON SCHEMA {} FROM PUBLIC", schema)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else type(exc).__name__


# Roles outlive the database they were made for: a superuser runs this after dropping resweep
# databases (the test suite does after each one) to drop the doors of databases that are gone.
DROP_ORPHANED_ROLES = r"""
DO $orphans$
DECLARE
    r text;
BEGIN
    FOR r IN SELECT rolname FROM pg_roles
             WHERE rolname ~ '^resweep_(reader|door)_.*_[0-9]+$'
               AND substring(rolname FROM '_([0-9]+)$')::oid NOT IN (SELECT oid FROM pg_database)
    LOOP
        BEGIN
            EXECUTE format('REVOKE SET ON PARAMETER temp_file_limit FROM %I', r);
            EXECUTE format('DROP ROLE %I', r);
        EXCEPTION WHEN OTHERS THEN
            NULL;  -- in use, or another session changing the parameter's ACL at once: next time
        END;
    END LOOP;
END
$orphans$"""
