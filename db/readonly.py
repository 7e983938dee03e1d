"""Run a user's SQL against the result store without any way to change it.

The guard is the database itself; reading the statement first only gives a friendlier refusal.

PostgreSQL (read-only by construction; the door's roles and function are db/door.py's):
- Before anything of the statement runs, `db.door.check_door` reads the catalogs: the door of
  this database (its two roles, the function, pg_catalog's ACLs) must be exactly as
  `db upgrade` makes it, else one line says what differs and that `db upgrade` mends it.
- The statement runs in a READ ONLY transaction with a statement timeout and a temp_file_limit,
  under this database's reader role (taken with `SET LOCAL ROLE`), through `resweep_read`, a
  SECURITY DEFINER function owned by the database's runner role: the statement has the rights of
  a role that may only SELECT this database's tables and views, with no way to set a parameter,
  take an advisory lock, write the WAL or a large object; inside such a function PostgreSQL
  refuses `set_config('role' | 'session_authorization', ...)` too, so a statement cannot take
  back the rights of the login (a superuser's, say) that opened the connection.
- PostgreSQL decides what is one statement: the text is parsed as an unnamed prepared statement
  (the extended protocol refuses more than one command), then run by the function as a subquery
  through a cursor. It stops after `limit + 1` rows or past `max_bytes`, so a huge result is
  never built.
SQLite: the file is opened with `mode=ro` and `PRAGMA query_only`, ATTACH is disabled, an
authorizer allows only reads and function calls, sqlite3 runs one statement at a time. Memory is
bounded before it is allocated: no string or blob may be longer than 4 MiB (SQLITE_LIMIT_LENGTH),
the statement's text than 1 MiB, and all of SQLite's memory in the process than 64 MiB
(`PRAGMA hard_heap_limit`), so a row is refused inside SQLite before Python converts it. Rows
are read one at a time, text as bytes, and each value counts its size in Python towards
`max_bytes` before the next one is decoded.

Before all that, `db.statement_check.check_statement` refuses the obvious in one friendly line.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

import pandas as pd
import psycopg
import sqlalchemy as sa
from psycopg import pq, sql as pgsql

from db.engine import (
    ENV_VAR,
    PG_SESSION_OPTIONS,
    add_sqlite_math,
    describe_db_error,
    redact,
    resolve_url,
    sqlite_path,
)
from db.door import TEMP_FILE_LIMIT, Door, check_door
from db.errors import (
    NoDatabaseError,
    QueryError,
    RefusedStatementError,
    StoreError,
    UnreachableError,
)
from db.statement_check import check_statement, without_final_semicolon

DEFAULT_LIMIT = 1000
MAX_LIMIT = 100_000  # the most rows `query` and the dashboard's SQL page return: time and memory stay bounded
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_BYTES = 64 * 2**20  # a result's text, summed over its values
UPGRADE_ADVICE = 'python -m orchestrator db upgrade --db "$RESWEEP_DB"'
# SQLite's bounds (docs/security.md, "SQLite"). resweep's own values are a few kB (a sweep file,
# a config's JSON, an error's last 4,000 characters); 4 MiB leaves room for a user's
# group_concat. The heap limit is SQLite's own, for every connection of the process (the
# dashboard server's included): its reads peak at 5 MiB of SQLite memory on a 3.2-million-point
# database, so only a statement that would build a huge row, string or sort in memory meets it.
SQLITE_VALUE_BYTES = 4 * 2**20  # SQLITE_LIMIT_LENGTH: the longest string, blob or row SQLite builds
SQLITE_SQL_BYTES = 2**20  # SQLITE_LIMIT_SQL_LENGTH: the statement's text
SQLITE_HEAP_BYTES = 64 * 2**20  # PRAGMA hard_heap_limit: all of SQLite's memory in this process

@dataclass(frozen=True)
class QueryResult:
    """What a read-only query returned: column names, at most `limit` rows, and whether
    there were more rows than that (`truncated`)."""

    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool
    limit: int | None

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame.from_records(self.rows, columns=self.columns)


# --- running it -------------------------------------------------------------------------------


def run_readonly(
    url: str | None,
    sql: str,
    limit: int | None = DEFAULT_LIMIT,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> QueryResult:
    """Run one read-only statement on the database at `url` (else $RESWEEP_DB, else the
    default) and return at most `limit` rows (None or 0: all) and at most `max_bytes` of values.
    Raises RefusedStatementError for anything that could write, QueryError when the database
    rejects the statement, runs past `timeout_s` or returns more than `max_bytes`."""
    resolved = resolve_url(url)
    check_statement(sql, _dialect(resolved))
    return _execute(resolved, sql, limit or None, timeout_s, max_bytes)


def _dialect(url: str) -> str:
    return "sqlite" if sa.make_url(url).get_backend_name() == "sqlite" else "postgresql"


def _execute(
    url: str, sql: str, limit: int | None, timeout_s: float, max_bytes: int = DEFAULT_MAX_BYTES
) -> QueryResult:
    """Run `sql` on a read-only connection; no statement check (tests call this directly to
    show the database itself refuses what gets past the check)."""
    if _dialect(url) == "sqlite":
        return _execute_sqlite(url, sql, limit, timeout_s, max_bytes)
    return _execute_postgresql(url, sql, limit, timeout_s, max_bytes)


_REFUSALS = (
    "read-only", "readonly", "read only", "not authorized", "too many attached",
    "permission denied", "must be superuser", "must be a superuser", "must be a member",
    "cannot set parameter", "multiple commands", "multi-query", "one statement at a time",
    "replication role", "cannot execute",
)  # fmt: skip


def _query_error(where: str, message: str) -> StoreError:
    if len(message) > 300:  # PostgreSQL's messages quote values: one may be a gigabyte long
        message = message[:300] + "..."
    if any(s in message.lower() for s in _REFUSALS):
        return RefusedStatementError(f"refused by {where}: {message}; the query command is read-only")
    return QueryError(f"query failed on {where}: {message}")


def _too_big(where: str, max_bytes: int) -> QueryError:
    return QueryError(
        f"the result on {where} is larger than {_amount(max_bytes)}: select fewer rows or "
        "columns (LIMIT, WHERE), or shorter values"
    )


def _amount(n: int) -> str:
    return f"{n / 2**20:g} MiB" if n >= 2**20 else f"{n / 2**10:g} KiB"


def _timed_out(where: str, timeout_s: float) -> QueryError:
    return QueryError(f"query on {where} ran past the {timeout_s:g} s timeout")


_SQLITE_READS = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
)


def _sqlite_reads_only(action: int, *_: object) -> int:
    """SQLite authorizer: statements may read and call functions, nothing else."""
    return sqlite3.SQLITE_OK if action in _SQLITE_READS else sqlite3.SQLITE_DENY


class _Utf8:
    """A TEXT value as SQLite's bytes (the connection's text_factory): decoded only once the
    result has room for it, since a str may take up to four times its UTF-8 length."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        self.raw = raw


_ROW_BYTES = sys.getsizeof(()) + 8  # a row's tuple and its slot in the list


def _value_too_big(where: str, cap: int) -> QueryError:
    return QueryError(
        f"the query on {where} built a value larger than {_amount(cap)}, the most one string, blob "
        "or row may hold: select shorter values (substr) or aggregate fewer rows (WHERE)"
    )


def _out_of_memory(where: str) -> QueryError:
    return QueryError(
        f"the query on {where} needed more than the {_amount(SQLITE_HEAP_BYTES)} of memory a query "
        "may use: select fewer or shorter values (LIMIT, WHERE, substr)"
    )


def _read_sqlite_rows(cursor: sqlite3.Cursor, columns: list[str], limit: int | None, max_bytes: int,
                      where: str) -> list[tuple]:
    """At most `limit + 1` rows, one at a time; every value counts what it costs in Python
    towards `max_bytes` before the next is decoded."""
    rows: list[tuple] = []
    size = 0
    for raw in cursor:  # SQLite's heap limit has bounded this row before sqlite3 converted it
        size += _ROW_BYTES
        row = []
        for column, value in zip(columns, raw):
            if type(value) is _Utf8:
                try:
                    value = value.raw.decode()
                except UnicodeDecodeError:
                    raise QueryError(
                        f"query failed on {where}: column {column[:40]!r} holds text that is not UTF-8: "
                        "select it as a blob, e.g. CAST(... AS BLOB)"
                    ) from None
            size += sys.getsizeof(value) + 8
            if size > max_bytes:
                raise _too_big(where, max_bytes)
            row.append(value)
        rows.append(tuple(row))
        if limit is not None and len(rows) > limit:
            break
    return rows


def _execute_sqlite(url: str, sql: str, limit: int | None, timeout_s: float, max_bytes: int) -> QueryResult:
    path = sqlite_path(url)
    where = redact(url)
    if path is None or not path.is_file():
        raise NoDatabaseError(f'no SQLite database at {where}: check --db / ${ENV_VAR}')
    if len(sql) >= SQLITE_SQL_BYTES or len(sql.encode()) >= SQLITE_SQL_BYTES:
        raise QueryError(f"the statement is longer than {_amount(SQLITE_SQL_BYTES)}: shorten it")
    uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=timeout_s)
    except sqlite3.Error as exc:
        raise UnreachableError(describe_db_error(exc, sa.make_url(url))) from exc
    deadline = time.monotonic() + timeout_s
    value_cap = min(SQLITE_VALUE_BYTES, max(1_000_000, max_bytes))
    try:
        try:
            conn.execute("PRAGMA query_only = ON")
            # For the whole process, and it only ever lowers the limit: set once, the same every time.
            conn.execute(f"PRAGMA hard_heap_limit = {SQLITE_HEAP_BYTES}")
            conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)  # ATTACH could create files
            # No string, blob or row longer than value_cap is ever built (randomblob(1e9), printf).
            conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, value_cap)
            conn.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, SQLITE_SQL_BYTES)
            conn.text_factory = _Utf8
            conn.set_authorizer(_sqlite_reads_only)
            add_sqlite_math(conn)
            # Abort a runaway query: SQLite calls this every 1,000 VM steps; nonzero interrupts. One
            # step may take long (a distinct CTE's 3 MB rows: 1,000 steps took 8 s), 10,000 ran 90 s.
            conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 1_000)
            cursor = conn.execute(sql)
            columns = [d[0] for d in cursor.description or ()]
            rows = _read_sqlite_rows(cursor, columns, limit, max_bytes, where)
        except MemoryError:  # SQLite's heap limit (SQLITE_NOMEM), or the process's own
            raise _out_of_memory(where) from None
        except (sqlite3.Error, sqlite3.Warning) as exc:
            if time.monotonic() > deadline:
                raise _timed_out(where, timeout_s) from exc
            if "too big" in str(exc):
                raise _value_too_big(where, value_cap) from exc
            raise _query_error(where, _first_line(exc)) from exc
    finally:
        conn.rollback()
        conn.close()
    truncated = limit is not None and len(rows) > limit
    return QueryResult(columns, rows[:limit], truncated, limit)


def _execute_postgresql(url: str, sql: str, limit: int | None, timeout_s: float, max_bytes: int) -> QueryResult:
    parsed = sa.make_url(url)
    where = redact(url)
    conninfo = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    timeout_ms = max(1, int(timeout_s * 1000))
    try:
        conn = psycopg.connect(
            conninfo,
            connect_timeout=10,
            application_name="resweep-query",
            options=(
                f"{PG_SESSION_OPTIONS} -c default_transaction_read_only=on "
                f"-c statement_timeout={timeout_ms} -c idle_in_transaction_session_timeout={timeout_ms + 10_000}"
            ),
        )
    except psycopg.Error as exc:
        raise UnreachableError(describe_db_error(exc, parsed)) from exc
    # Belt and braces beside statement_timeout: cancel from here if the server overruns it.
    watchdog = threading.Timer(timeout_s + 5, conn.cancel_safe)
    watchdog.daemon = True
    watchdog.start()
    try:
        conn.read_only = True  # BEGIN READ ONLY
        door = check_door(conn, where, f"run `{UPGRADE_ADVICE}` as the database's owner or a superuser")
        _become_reader(conn, where, door)
        text = without_final_semicolon(sql, "postgresql")
        columns, types = _describe(conn, text, where)
        column_list = pgsql.SQL(", ").join(
            pgsql.SQL("{} {}").format(pgsql.Identifier(f"c{i + 1}"), pgsql.SQL(t)) for i, t in enumerate(types)
        )
        call = pgsql.SQL(
            "SELECT * FROM {}.resweep_read(%s::text, %s::integer, %s::bigint, %s::bigint) AS t({})"
        ).format(pgsql.Identifier(door.schema), column_list)
        max_rows = 2**62 if limit is None else limit
        with conn.cursor() as cursor:
            # Parameters: the extended protocol, and the user's text is a value, never SQL here.
            cursor.execute(call, (text, len(columns), max_rows, max_bytes))
            rows = [tuple(r) for r in cursor.fetchall()]
    except psycopg.errors.QueryCanceled as exc:
        raise _timed_out(where, timeout_s) from exc
    except psycopg.errors.ProgramLimitExceeded as exc:
        if "resweep_read" in str(exc) or "larger than" in str(exc):
            raise _too_big(where, max_bytes) from exc
        raise _query_error(where, _first_line(exc)) from exc
    except psycopg.errors.UndefinedFunction as exc:
        if "resweep_read(" in _first_line(exc):
            raise QueryError(
                f"{where} lacks the read-only door (function resweep_read): run `{UPGRADE_ADVICE}`"
            ) from exc
        raise _query_error(where, _first_line(exc)) from exc
    except (psycopg.errors.ConfigurationLimitExceeded, psycopg.errors.OutOfMemory, psycopg.errors.DiskFull) as exc:
        # temp_file_limit, the server's memory: this query alone ends; the server goes on.
        raise QueryError(
            f"query on {where} needed more than the server allows one query ({_first_line(exc)[:200]}): "
            "select fewer rows or columns, or shorter values"
        ) from exc
    except psycopg.OperationalError as exc:
        raise UnreachableError(describe_db_error(exc, parsed)) from exc
    except psycopg.Error as exc:
        raise _query_error(where, _first_line(exc)) from exc
    finally:
        watchdog.cancel()
        try:
            conn.rollback()
        except psycopg.Error:
            pass
        conn.close()
    truncated = limit is not None and len(rows) > limit
    return QueryResult(columns, rows[:limit], truncated, limit)


def _become_reader(conn: psycopg.Connection, where: str, door: Door) -> None:
    """SET LOCAL ROLE to the database's reader, and the door's temp_file_limit (the reader may
    set it, the role the statement runs as may not), or one line on the grant that is missing."""
    try:
        conn.execute(pgsql.SQL("SET LOCAL ROLE {}").format(pgsql.Identifier(door.reader)))
    except (psycopg.errors.InvalidParameterValue, psycopg.errors.InsufficientPrivilege) as exc:
        user = conn.info.user
        conn.rollback()
        raise QueryError(
            f"{where}: the login {user} may not take the read-only role {door.reader} "
            f"({_first_line(exc)}): as the database owner or a superuser run "
            f"`GRANT {door.reader} TO {user}`"
        ) from exc
    conn.execute(pgsql.SQL("SET LOCAL temp_file_limit = {}").format(pgsql.Literal(TEMP_FILE_LIMIT)))
    conn.execute(pgsql.SQL("SET LOCAL search_path = pg_catalog, {}, pg_temp").format(pgsql.Identifier(door.schema)))


def _describe(conn: psycopg.Connection, text: str, where: str) -> tuple[list[str], list[str]]:
    """The result columns of `text` and their type names, as PostgreSQL parses it as one
    prepared statement (Parse + Describe: nothing runs). More than one command, or a statement
    that returns no rows, is refused here."""
    pgconn = conn.pgconn
    encoding = conn.info.encoding
    prepared = pgconn.prepare(b"", text.encode(encoding))
    if prepared.status != pq.ExecStatus.COMMAND_OK:
        message = (prepared.error_message or b"").decode(encoding, "replace").strip().splitlines()
        raise _query_error(where, message[0].removeprefix("ERROR:").strip() if message else "parse failed")
    described = pgconn.describe_prepared(b"")
    if described.status != pq.ExecStatus.COMMAND_OK:
        raise QueryError(f"query failed on {where}: PostgreSQL could not describe the statement")
    if described.nfields == 0:
        raise RefusedStatementError(
            "refused: the statement returns no rows; the query command runs one SELECT, VALUES, "
            "TABLE or WITH query"
        )
    columns = [(described.fname(i) or b"").decode(encoding) for i in range(described.nfields)]
    oids = [described.ftype(i) for i in range(described.nfields)]
    mods = [described.fmod(i) for i in range(described.nfields)]
    type_rows = conn.execute(
        "SELECT format_type(t.oid, nullif(t.mod, -1)), ty.typtype = 'p' FROM unnest(%s::oid[], %s::integer[]) "
        "WITH ORDINALITY AS t(oid, mod, n) LEFT JOIN pg_type AS ty ON ty.oid = t.oid ORDER BY t.n",
        (oids, mods),
    ).fetchall()
    for column, (type_name, pseudo) in zip(columns, type_rows):
        if pseudo:  # record, void, ...: not a type a column of a result set can be declared with
            raise QueryError(
                f"query failed on {where}: column {column[:40]!r} has the pseudo-type {type_name}, which "
                "the query command cannot return: cast it, e.g. (...)::text"
            )
    return columns, [r[0] for r in type_rows]


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else type(exc).__name__
