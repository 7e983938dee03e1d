"""One way to open the result database from a URL, and one way to write to it.

The URL comes from `--db`, else `$RESWEEP_DB`, else `sqlite:///resweep.db` in the working
directory. SQLite connections get WAL, foreign keys and a busy timeout; PostgreSQL goes through
psycopg 3 (`postgresql://` is accepted and rewritten to `postgresql+psycopg://`). URLs are shown
only through `redact`, which hides the password.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shlex
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from db import migrate
from db.errors import (
    BadUrlError,
    IntegrityStoreError,
    NoDatabaseError,
    RolePrivilegeError,
    StoreError,
    UnreachableError,
)

log = logging.getLogger(__name__)

ENV_VAR = "RESWEEP_DB"
DEFAULT_URL = "sqlite:///resweep.db"
SQLITE_BUSY_TIMEOUT_MS = 30_000
PG_CONNECT_TIMEOUT_S = 10
# JIT compiling costs PostgreSQL 0.3-0.7 s per query plan that looks expensive (the views' many
# small index lookups do); our queries are short, so it only ever adds latency.
PG_SESSION_OPTIONS = "-c jit=off"
URL_HELP = "use sqlite:///PATH or postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE"


def resolve_url(url: str | None = None) -> str:
    """The database URL to use: `url`, else $RESWEEP_DB, else sqlite:///resweep.db.

    A bare path (no `://`) means a SQLite file; `postgresql://` and `postgres://` get the
    psycopg 3 driver. Refused with one line (BadUrlError): a URL that does not parse, a port that
    is not a number, an unencoded '@' in the user, password or database (SQLAlchemy would hand a
    piece of the password to the driver as the host), USER:PASSWORD@HOST without a scheme, an
    in-memory SQLite database (its results would be thrown away). The result still holds the
    password: show it only through `redact`.
    """
    raw = (url or os.environ.get(ENV_VAR) or DEFAULT_URL).strip()
    if "://" not in raw:
        if ":" in raw.rpartition("@")[0]:  # USER:PASSWORD@HOST with its scheme forgotten
            raise BadUrlError(f"{redact(raw)}: looks like USER:PASSWORD@HOST without a scheme (a bare path "
                              f"means a SQLite file; sqlite:///PATH for one with ':' and '@'): {URL_HELP}")
        raw = f"sqlite:///{raw}"
    scheme, _, rest = raw.partition("://")
    if not scheme.startswith("sqlite") and rest.count("@") > 1:
        # SQLAlchemy ends the password at the first '@' and would take the rest of it for the host
        # or the database name, which the driver then echoes in its errors.
        raise BadUrlError(f"{redact(raw)}: holds more than one '@'; write an '@' in the user, password, "
                          f"database or a parameter as %40 (percent-encoding): {URL_HELP}")  # fmt: skip
    try:
        parsed = sa.make_url(raw)
    except sa.exc.ArgumentError:
        raise BadUrlError(f"{redact(raw)} is not a database URL: {URL_HELP}") from None
    except ValueError:  # SQLAlchemy's int() of the port
        raise BadUrlError(f"{redact(raw)}: the port{_port_shown(raw)} is not a number: {URL_HELP}") from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "postgres":
        backend = "postgresql"
    if backend == "postgresql" and driver in ("", "psycopg"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif backend == "sqlite" and driver in ("", "pysqlite"):
        parsed = parsed.set(drivername="sqlite")
        if parsed.database in (None, "", ":memory:") or "mode=memory" in raw:
            raise BadUrlError(f"{redact(raw)} is an in-memory database, whose results are lost when the "
                              "command ends: give a file, sqlite:///PATH")  # fmt: skip
    else:
        raise BadUrlError(f"{redact(raw)}: unsupported database backend '{parsed.drivername}': {URL_HELP}")
    return parsed.render_as_string(hide_password=False)


# Query-string keys that carry a secret: libpq's `password` and `sslpassword`, common spellings,
# object stores' `secret_key`, `access_key`, `session_token`. (libpq's `sslkey` names a file,
# shown so that advice lines repeat it.)
_SECRET_NAME = r"[\w.-]*(?:pass|pwd|secret|token|credential|private|access_key|api_?key)[\w.-]*"
# The value runs to the next `&name=` (or ` name=` in a libpq keyword string), so a password
# holding an unencoded '&' or '#' is hidden whole.
_SECRET_KEYS = re.compile(rf"(?is)((?:^|[?&;\s]){_SECRET_NAME}=)(?:(?![&\s][\w.-]+=).)*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _shown(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _port_shown(raw: str) -> str:
    """` 'PORT'` as the redacted URL shows it (never from the unredacted text), else ''."""
    host = redact(raw).partition("://")[2].rpartition("@")[2]
    hostport = re.split(r"[/?#]", host, maxsplit=1)[0]
    return f" {_shown(hostport.rpartition(':')[2])}" if ":" in hostport else ""


def redact(url: str | sa.URL | Engine) -> str:
    """The URL with every password (user:PASSWORD@, ?password=...) replaced by ***, fit for
    logs, errors and status output.

    Safe for any text, not only for URLs that parse: a password may hold '/', '?', '#', ':' or
    '@', unencoded, so the host part is not found by cutting at the first '/'. Everything from
    the first ':' after the user to the LAST '@' is hidden; where the URL is ambiguous (an '@'
    in a parameter) more is hidden than the password, never less. Control characters are
    shown escaped, so the result is one line."""
    if isinstance(url, Engine):
        url = url.url
    if isinstance(url, sa.URL):
        url = url.render_as_string(hide_password=False)
    text = str(url)
    # The secret spans of the text as given, hidden together: hiding one first could hide the
    # very delimiter that shows where the other one ends.
    spans = [(m.end(1), m.end()) for m in _SECRET_KEYS.finditer(text)]
    scheme, sep, rest = text.partition("://")
    start = len(scheme) + len(sep) if sep else 0  # no scheme: still USER:PASSWORD@HOST...
    userinfo = (rest if sep else text).rpartition("@")[0]
    if ":" in userinfo:
        spans.append((start + userinfo.index(":") + 1, start + len(userinfo)))
    merged: list[list[int]] = []
    for first, last in sorted(spans):
        if merged and first <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    pieces, end = [], 0
    for first, last in merged:
        pieces += [text[end:first], "***"]
        end = last
    pieces.append(text[end:])
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", "".join(pieces))


@dataclass(frozen=True)
class Database:
    """The result database as a command line names it (--db, else $RESWEEP_DB, else the default).

    Made once at the command line's edge and passed inward; the URL is resolved once, at its
    first use, so a command still reports its own first problem first (a launch: the sweep file).
    """

    given: str | None = field(repr=False)  # --db as typed; None when it was not given

    @cached_property
    def url(self) -> str:
        """Resolved (`resolve_url`), password included: show it only as `shown`."""
        return resolve_url(self.given)

    @property
    def shown(self) -> str:
        return redact(self.url)

    @cached_property
    def flag(self) -> str:
        """The ` --db ...` to repeat in advice lines, as text that works when pasted into a
        shell: "" when --db was not given; the URL itself when it holds no password;
        `"$RESWEEP_DB"` when that variable holds it; else the URL with PASSWORD standing for
        the password, and a shell comment saying so."""
        if self.given is None:
            return ""
        if redact(self.url) == self.url:
            return f" --db {_quoted(self.url)}"
        if os.environ.get(ENV_VAR) and resolve_url(os.environ[ENV_VAR]) == self.url:
            return f' --db "${ENV_VAR}"'
        placeholder = redact(self.url).replace("***", "PASSWORD")
        return f" --db {_quoted(placeholder)}  # PASSWORD: the database password"

    def engine(self, *, create: bool = True) -> Engine:
        """`get_engine` on this database."""
        return _open(self.url, create=create)


def _quoted(text: str) -> str:
    return f"'{text}'" if "'" not in text else shlex.quote(text)


def sqlite_path(url: str) -> Path | None:
    """The file a SQLite URL names; None for an in-memory database or a non-SQLite URL."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def create_store_engine(url: str) -> Engine:
    """An Engine for a resolved URL with resweep's connection settings; no schema check."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        sa.event.listen(engine, "connect", _sqlite_on_connect)
        return engine
    return sa.create_engine(
        parsed,
        pool_pre_ping=True,  # the recorder holds its engine for days; servers restart
        connect_args={
            "connect_timeout": PG_CONNECT_TIMEOUT_S,
            "application_name": "resweep",
            "options": PG_SESSION_OPTIONS,
        },
    )


# What a write may raise when the database fails under it: resweep's own errors, or the driver's
# through SQLAlchemy (the recorder's outbox holds and retries on these).
WRITE_ERRORS: tuple[type[Exception], ...] = (StoreError, sa.exc.DBAPIError)


def writer_engine(engine: Engine, busy_timeout_ms: int) -> Engine:
    """A writer's own engine on SQLite, with a lock wait of its own (`busy_timeout_ms`): a write
    that finds the file locked fails within that time, to be retried later, instead of waiting
    the 30 s default. PostgreSQL uses the engine as given."""
    if engine.dialect.name != "sqlite":
        return engine
    own = create_store_engine(engine.url.render_as_string(hide_password=False))

    def short_wait(dbapi_conn: sqlite3.Connection, _record: object) -> None:
        dbapi_conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")

    sa.event.listen(own, "connect", short_wait)
    return own


def _sqlite_on_connect(dbapi_conn: sqlite3.Connection, _record: object) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers (dashboard, `query`) read while the recorder writes; NORMAL sync is safe
    # with WAL (a power cut may lose the last results, never corrupt the file).
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.close()
    add_sqlite_math(dbapi_conn)


def add_sqlite_math(dbapi_conn: sqlite3.Connection) -> None:
    """Give SQLite builds without math functions the `sqrt` the grid_results view uses."""
    if not _SQLITE_HAS_SQRT:
        dbapi_conn.create_function("sqrt", 1, _sqrt, deterministic=True)


def _sqrt(x: float | None) -> float | None:
    return None if x is None or x < 0 else math.sqrt(x)


def _probe_sqrt() -> bool:
    try:
        sqlite3.connect(":memory:").execute("SELECT sqrt(4.0)").close()
        return True
    except sqlite3.OperationalError:
        return False


_SQLITE_HAS_SQRT = _probe_sqrt()


def get_engine(url: str | None = None, *, create: bool = True) -> Engine:
    """Open the resweep database at `url` (else $RESWEEP_DB, else sqlite:///resweep.db).

    A database with no resweep tables yet (a new SQLite file, an empty PostgreSQL database) is
    created by migrating it to the head revision, so `launch` needs no separate setup step;
    with `create=False` it is refused instead (readers should not create databases). A database
    whose schema is behind the code is never upgraded here: the error says to run
    `python -m orchestrator db upgrade --db URL`. One ahead of the code is refused.
    """
    return _open(resolve_url(url), create=create)


def _open(resolved: str, *, create: bool) -> Engine:
    """`get_engine` on a URL `resolve_url` made."""
    path = sqlite_path(resolved)
    if not create and path is not None and not path.exists():
        raise NoDatabaseError(f"no database at {redact(resolved)}: check --db / ${ENV_VAR}")
    engine = create_store_engine(resolved)
    try:
        with translate_errors(engine), engine.begin() as conn:
            if create and engine.dialect.name == "sqlite":
                # The write lock before the schema is read: Python's sqlite3 runs DDL outside any
                # transaction it has not been told to begin, so a second command opening the same
                # new file at once saw half a schema ("table sweeps already exists", "no schema
                # version"). Now it waits for the first's commit and finds the schema whole.
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            state, revision = migrate.schema_state(conn, redact(engine), "point --db at another database")
            if state == "empty":
                if not create:
                    raise NoDatabaseError(
                        f"{redact(engine)} holds no resweep database: check --db / ${ENV_VAR}"
                    )
                log.info("creating the resweep schema in %s", redact(engine))
                migrate.upgrade_connection(conn)
            else:
                migrate.check_revision(revision, redact(engine))
    except BaseException:
        engine.dispose()
        raise
    return engine


def upgrade(url: str | None = None) -> tuple[str | None, str]:
    """`python -m orchestrator db upgrade`: migrate the database at `url` to head, creating the
    schema in a new one (db.migrate.upgrade_schema); (revision before, revision after)."""
    engine = create_store_engine(resolve_url(url))
    try:
        with translate_errors(engine), engine.begin() as conn:
            return migrate.upgrade_schema(conn, redact(engine))
    finally:
        engine.dispose()


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0].strip() if text else type(orig).__name__


def _scrub(message: str, url: sa.URL) -> str:
    """Remove the password from a driver's message in case the driver echoed it."""
    secrets = [url.password, *(v for k, v in url.query.items() if _SECRET_KEYS.search(f"?{k}="))]
    for secret in secrets:
        for value in ([secret] if isinstance(secret, str) else secret or []):
            if value:
                message = message.replace(str(value), "***")
    return message


def describe_db_error(exc: BaseException, url: sa.URL) -> str:
    """One line about a driver error on `url`: what happened and what to do, password hidden."""
    what = _scrub(_first_line(exc), url)
    where = redact(url)
    if url.get_backend_name() == "sqlite":
        if "locked" in what or "busy" in what:
            return f"{where} stayed locked by another writer for {SQLITE_BUSY_TIMEOUT_MS // 1000} s: {what}; try again"
        if not_a_database(exc):
            return (f"cannot open {where}: {what}; --db must name a SQLite database that resweep made "
                    "(`launch` or `db upgrade` makes one), or a new file")
        return f"cannot open {where}: {what}; check that the directory exists and is writable"
    return (
        f"cannot use {where}: {what}; check that the server is up and the host, port, "
        f"user, password and database name in --db / ${ENV_VAR}"
    )


@contextmanager
def translate_errors(engine: Engine) -> Iterator[None]:
    """Turn driver errors a user can cause (unreachable server, bad file, constraint) into
    StoreErrors naming the redacted URL; programming errors keep their traceback."""
    try:
        yield
    except StoreError:
        raise
    except sa.exc.IntegrityError as exc:
        raise IntegrityStoreError(
            f"{redact(engine)}: write refused: {_scrub(_first_line(exc), engine.url)}"
        ) from exc
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        raise UnreachableError(describe_db_error(exc, engine.url)) from exc
    except sa.exc.DatabaseError as exc:
        if engine.dialect.name == "sqlite" and not_a_database(exc):
            raise UnreachableError(describe_db_error(exc, engine.url)) from exc
        _raise_role_error(exc, engine)
        raise
    except sa.exc.DBAPIError as exc:
        _raise_role_error(exc, engine)
        raise


def _raise_role_error(exc: sa.exc.DBAPIError, engine: Engine) -> None:
    # Migration 0003 raises this when the migrating role cannot make resweep_reader.
    diag = getattr(exc.orig, "diag", None)
    if getattr(exc.orig, "sqlstate", None) == "P0001" and "resweep_reader" in str(diag.message_primary):
        raise RolePrivilegeError(f"{redact(engine)}: {diag.message_primary}; {diag.message_hint}") from exc


# SQLite's answers for a file that is not a SQLite database, or one damaged past reading.
_NOT_A_DATABASE = ("SQLITE_NOTADB", "SQLITE_CORRUPT")


def not_a_database(exc: BaseException) -> bool:
    """Whether a SQLite error says the file is not a (readable) SQLite database."""
    orig = getattr(exc, "orig", None) or exc
    return getattr(orig, "sqlite_errorname", None) in _NOT_A_DATABASE


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """A connection in one transaction: committed when the block ends, rolled back on error.

    Integrity errors become `IntegrityStoreError`, connection failures `UnreachableError`.
    """
    with translate_errors(engine), engine.begin() as conn:
        yield conn


@contextmanager
def one_read(engine: Engine) -> Iterator[Connection]:
    """A connection for a single read statement, errors translated as `transaction`'s. One
    statement is its own snapshot, so on PostgreSQL it runs in autocommit: no BEGIN and COMMIT
    round trips around it, which would cost as much as a small query itself."""
    with translate_errors(engine):
        if engine.dialect.name == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                yield conn
        else:
            with engine.begin() as conn:
                yield conn
