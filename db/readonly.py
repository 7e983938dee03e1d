"""Run a user's SQL against the result store without any way to change it.

Two independent locks:
1. The statement is read before it is run: exactly one statement, starting with SELECT, WITH,
   VALUES, TABLE, SHOW or EXPLAIN, and no writing keyword (INSERT, UPDATE, DELETE, DROP,
   CREATE, ...) or state-changing function outside strings, quoted names and comments.
   Refusals say which word and why, in one line.
2. The connection cannot write: SQLite is opened with `mode=ro` and `PRAGMA query_only`, ATTACH
   is disabled and an authorizer allows only reads and function calls;
   PostgreSQL runs in a READ ONLY transaction (also the session default) with a statement
   timeout, and is rolled back afterwards.
For hostile users on a shared PostgreSQL server, give them a role with SELECT rights only.
"""

from __future__ import annotations

import re
import sqlite3
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

import pandas as pd
import psycopg
import sqlalchemy as sa

from db.engine import (
    ENV_VAR,
    PG_SESSION_OPTIONS,
    add_sqlite_math,
    describe_db_error,
    redact,
    resolve_url,
    sqlite_path,
)
from db.errors import (
    NoDatabaseError,
    QueryError,
    RefusedStatementError,
    StoreError,
    UnreachableError,
)

DEFAULT_LIMIT = 1000
DEFAULT_TIMEOUT_S = 30.0

ALLOWED_FIRST = frozenset({"SELECT", "WITH", "VALUES", "TABLE", "SHOW", "EXPLAIN"})
WRITING_KEYWORDS = frozenset({
    "INSERT", "UPDATE", "DELETE", "DROP", "CREATE", "ALTER", "TRUNCATE", "REPLACE", "MERGE",
    "UPSERT", "ATTACH", "DETACH", "PRAGMA", "VACUUM", "REINDEX", "GRANT", "REVOKE",
    "COPY", "CALL", "DO", "LOCK", "COMMENT", "REFRESH", "CLUSTER", "INTO", "SET", "RESET",
    "BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "PREPARE", "EXECUTE", "DEALLOCATE",
    "LISTEN", "NOTIFY", "DISCARD", "LOAD", "IMPORT", "SECURITY",
})  # fmt: skip
# Functions that change state even inside a read-only transaction (or bypass it).
WRITING_FUNCTIONS = frozenset({
    "set_config", "nextval", "setval", "lo_import", "lo_export", "lo_unlink", "lo_create",
    "lo_from_bytea", "lo_put", "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf",
    "pg_rotate_logfile", "pg_switch_wal", "pg_promote", "pg_advisory_lock",
    "pg_advisory_xact_lock", "dblink", "dblink_exec", "load_extension", "writefile",
})  # fmt: skip
# REPLACE is also a string function: a call `replace(` is fine, the statement REPLACE is not.
CALLABLE_KEYWORDS = frozenset({"REPLACE"})

_TOKEN = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<line_comment>--[^\n]*)
    | (?P<block_comment>/\*.*?(?:\*/|\Z))
    | (?P<estring>[eE]'(?:[^'\\]|\\.|'')*(?:'|\Z))
    | (?P<string>'(?:[^']|'')*(?:'|\Z))
    | (?P<dollar>\$(?P<tag>[A-Za-z_][A-Za-z0-9_]*)?\$.*?(?:\$(?P=tag)?\$|\Z))
    | (?P<quoted>"(?:[^"]|"")*(?:"|\Z)|`[^`]*(?:`|\Z)|\[[^\]]*(?:\]|\Z))
    | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
    | (?P<semicolon>;)
    | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)


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


def _statements(sql: str) -> list[list[tuple[str, bool]]]:
    """The statements of `sql`, each as its words (upper-cased) outside strings, quoted names
    and comments, with whether the word is called like a function (`word(`)."""
    statements: list[list[tuple[str, bool]]] = [[]]
    pending: str | None = None  # the last word, until we know whether '(' follows it
    for m in _TOKEN.finditer(sql):
        kind = m.lastgroup
        if kind in ("space", "line_comment", "block_comment"):
            continue
        if pending is not None:
            statements[-1].append((pending, m.group() == "("))
            pending = None
        if kind == "word":
            pending = m.group().upper()
        elif kind == "semicolon":
            statements.append([])
    if pending is not None:
        statements[-1].append((pending, False))
    return [s for s in statements if s]


def check_statement(sql: str) -> None:
    """Refuse anything but one reading statement, with a one-line RefusedStatementError."""
    statements = _statements(sql)
    if not statements:
        raise RefusedStatementError("refused: no SQL statement given")
    if len(statements) > 1:
        raise RefusedStatementError(
            f"refused: {len(statements)} statements given; the query command runs exactly one "
            "read-only statement (SELECT ...), without ';' between statements"
        )
    words = statements[0]
    first = words[0][0]
    if first not in ALLOWED_FIRST:
        raise RefusedStatementError(
            f"refused: {first} statements are not allowed; the query command is read-only "
            f"and runs only {', '.join(sorted(ALLOWED_FIRST))} statements"
        )
    for word, called in words:
        if word in WRITING_KEYWORDS and not (called and word in CALLABLE_KEYWORDS):
            raise RefusedStatementError(
                f"refused: the statement contains {word}; the query command is read-only "
                f"(if {word} is a column or table name, put it in double quotes)"
            )
        if called and word.lower() in WRITING_FUNCTIONS:
            raise RefusedStatementError(
                f"refused: {word.lower()}() changes state; the query command is read-only"
            )


def run_readonly(
    url: str | None,
    sql: str,
    limit: int | None = DEFAULT_LIMIT,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> QueryResult:
    """Run one read-only statement on the database at `url` (else $RESWEEP_DB, else the
    default) and return at most `limit` rows (None or 0: all). Raises RefusedStatementError for
    anything that could write, QueryError when the database rejects the statement."""
    check_statement(sql)
    return _execute(resolve_url(url), sql, limit or None, timeout_s)


def _execute(url: str, sql: str, limit: int | None, timeout_s: float) -> QueryResult:
    """Run `sql` on a read-only connection; no statement check (tests call this directly to
    show the connection itself refuses writes)."""
    if sa.make_url(url).get_backend_name() == "sqlite":
        return _execute_sqlite(url, sql, limit, timeout_s)
    return _execute_postgresql(url, sql, limit, timeout_s)


def _fetch(cursor: Any, limit: int | None) -> tuple[list[str], list[tuple], bool]:
    columns = [d[0] for d in cursor.description or ()]
    if not columns:
        return [], [], False
    rows = cursor.fetchall() if limit is None else cursor.fetchmany(limit + 1)
    truncated = limit is not None and len(rows) > limit
    return columns, [tuple(r) for r in rows[:limit]], truncated


def _refused_by_db(message: str) -> bool:
    lowered = message.lower()
    return any(s in lowered for s in ("read-only", "readonly", "read only", "not authorized", "too many attached"))


def _query_error(exc: BaseException, where: str, message: str) -> StoreError:
    if _refused_by_db(message):
        return RefusedStatementError(f"refused by {where}: {message}; the query command is read-only")
    return QueryError(f"query failed on {where}: {message}")


_SQLITE_READS = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
)


def _sqlite_reads_only(action: int, *_: object) -> int:
    """SQLite authorizer: statements may read and call functions, nothing else."""
    return sqlite3.SQLITE_OK if action in _SQLITE_READS else sqlite3.SQLITE_DENY


def _execute_sqlite(url: str, sql: str, limit: int | None, timeout_s: float) -> QueryResult:
    path = sqlite_path(url)
    where = redact(url)
    if path is None or not path.is_file():
        raise NoDatabaseError(f"no SQLite database at {where}: check --db / ${ENV_VAR}")
    uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=timeout_s)
    except sqlite3.Error as exc:
        raise UnreachableError(describe_db_error(exc, sa.make_url(url))) from exc
    deadline = time.monotonic() + timeout_s
    try:
        conn.execute("PRAGMA query_only = ON")
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)  # ATTACH could create files
        conn.set_authorizer(_sqlite_reads_only)
        add_sqlite_math(conn)
        # Abort a runaway query: SQLite calls this every 10k VM steps; nonzero interrupts.
        conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        try:
            columns, rows, truncated = _fetch(conn.execute(sql), limit)
        except (sqlite3.Error, sqlite3.Warning) as exc:
            if time.monotonic() > deadline:
                raise QueryError(f"query on {where} ran past the {timeout_s:g} s timeout") from exc
            if "one statement at a time" in str(exc):
                raise RefusedStatementError(f"refused: {exc}") from exc
            raise _query_error(exc, where, _first_line(exc)) from exc
    finally:
        conn.rollback()
        conn.close()
    return QueryResult(columns, rows, truncated, limit)


def _execute_postgresql(url: str, sql: str, limit: int | None, timeout_s: float) -> QueryResult:
    parsed = sa.make_url(url)
    where = redact(url)
    conninfo = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    timeout_ms = max(1, int(timeout_s * 1000))
    try:
        conn = psycopg.connect(
            conninfo,
            connect_timeout=10,
            application_name="resweep-query",
            # Read-only and time-limited for the whole session, not only our transaction.
            options=f"{PG_SESSION_OPTIONS} -c default_transaction_read_only=on -c statement_timeout={timeout_ms}",
        )
    except psycopg.Error as exc:
        raise UnreachableError(describe_db_error(exc, parsed)) from exc
    with conn:
        conn.read_only = True  # BEGIN READ ONLY
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql)  # no parameters: '%' in the SQL is literal
                columns, rows, truncated = _fetch(cursor, limit)
        except psycopg.errors.QueryCanceled as exc:
            raise QueryError(f"query on {where} ran past the {timeout_s:g} s timeout") from exc
        except psycopg.Error as exc:
            raise _query_error(exc, where, _first_line(exc)) from exc
        finally:
            conn.rollback()
    return QueryResult(columns, rows, truncated, limit)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else type(exc).__name__
