"""Schema versions: Alembic, shipped inside the package (db/migrations), driven from code.

This module works on a Connection and knows nothing of URLs; db.engine opens the database and
calls it (`get_engine` to use a database, `upgrade` for `python -m orchestrator db upgrade`).
New databases are created by upgrading them to the head revision; `schema_state` refuses a
database that only looks like resweep's, `check_revision` one behind or ahead of the code. On PostgreSQL every upgrade ends by making or
mending the read-only door (db/door.py), even when the schema was already at head.

A schema change: edit db/models.py (and db/views.py), then draft the next revision against a
database at head and freeze it by hand (copy view SQL in; never import models there):

    python -c "from alembic import command; from db.migrate import alembic_config; \
        command.revision(alembic_config(url='sqlite:///head.db'), 'what changed', autogenerate=True, rev_id='0002')"
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Literal

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.engine import Connection

from db import door
from db.errors import NotResweepError, SchemaAheadError, SchemaBehindError

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
UPGRADE_COMMAND = "python -m orchestrator db upgrade --db {url}"

SchemaState = Literal["empty", "versioned"]
# A database holding any of these without a schema version is someone else's: never migrated.
RESWEEP_TABLES = frozenset({"sweeps", "trials", "metrics", "metric_values", "layer_stats", "optuna_journal"})


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    """An Alembic Config for resweep's migrations (no alembic.ini needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The revision the code expects."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "db/migrations has no revisions"
    return head


def current_revision(conn: Connection) -> str | None:
    """The database's schema revision; None when it has never been migrated."""
    return MigrationContext.configure(conn).get_current_revision()


# Any fixed 64-bit key: the PostgreSQL advisory lock that serialises schema checks and migrations.
SCHEMA_LOCK_KEY = 0x7265737765657021  # b"resweep!"


def schema_state(conn: Connection, where: str, advice: str) -> tuple[SchemaState, str | None]:
    """('versioned', revision), or ('empty', None) when there is nothing of resweep's yet.

    A database with resweep's table names but no schema version is refused (NotResweepError,
    naming `where`, the redacted URL, and ending with `advice`). On PostgreSQL this first takes
    a transaction-scoped advisory lock, so two launchers opening the same new database at once
    do not both migrate it: the second waits for the first's commit (DDL is transactional
    there) and then finds the schema current.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
    revision = current_revision(conn)
    if revision is not None:
        return "versioned", revision
    if set(sa.inspect(conn).get_table_names()) & RESWEEP_TABLES:
        raise NotResweepError(f"{where} has tables named like resweep's but no schema version: "
                              f"not a resweep database; {advice}")
    return "empty", None


def check_revision(revision: str | None, where: str) -> None:
    """Refuse a revision behind (say how to upgrade) or ahead of (unknown to) the code."""
    head = head_revision()
    if revision == head:
        return
    script = ScriptDirectory.from_config(alembic_config())
    try:
        known = revision is not None and script.get_revision(revision) is not None
    except CommandError:
        known = False
    if known:
        raise SchemaBehindError(
            f"{where} has schema revision {revision}, this resweep needs {head}: "
            f"run `{UPGRADE_COMMAND.format(url=shlex.quote(where.replace('***', 'PASSWORD')))}`"
            + (" (PASSWORD: the database password)" if "***" in where else "")
        )
    raise SchemaAheadError(
        f"{where} has schema revision {revision}, newer than this resweep knows (head {head}): "
        "a newer resweep wrote it; upgrade resweep (pip install -U resweep) or use another database"
    )


def upgrade_connection(conn: Connection) -> None:
    """Migrate the database behind `conn` to head inside the caller's transaction, then make or
    mend its read-only door (PostgreSQL)."""
    command.upgrade(alembic_config(connection=conn), "head")
    ensure_door(conn)


def ensure_door(conn: Connection, where: str | None = None) -> None:
    """Make or mend the read-only door of the PostgreSQL database behind `conn` (db.door), in
    the caller's transaction; nothing on SQLite. Raises RolePrivilegeError (one line, with the
    SQL a superuser runs once) when the connecting role cannot."""
    if conn.dialect.name != "postgresql":
        return
    shown = where or conn.engine.url.render_as_string(hide_password=True)
    door.ensure_door(conn.connection.dbapi_connection, shown)


def upgrade_schema(conn: Connection, where: str) -> tuple[str | None, str]:
    """Upgrade the database behind `conn` (`where`: its redacted URL) to head, creating the
    schema in a new database; (revision before, revision after). One ahead of the code, or one
    with resweep's table names but no schema version, is refused."""
    _, before = schema_state(conn, where, "refusing to migrate it")
    if before is not None:
        try:
            check_revision(before, where)
        except SchemaBehindError:
            pass  # that is what we are here for
    if before != head_revision():
        command.upgrade(alembic_config(connection=conn), "head")
    # Even at head: the door is state a migration made once; whatever changed it since is mended.
    ensure_door(conn, where)
    return before, head_revision()
