"""Schema versions: Alembic, shipped inside the package (db/migrations), driven from code.

New databases are created by upgrading them to the head revision; `python -m orchestrator db
upgrade` runs `upgrade`. `get_engine` calls `schema_state` and `check_revision` to refuse a
database behind or ahead of the code.

A schema change: edit db/models.py (and db/views.py), then draft the next revision against a
database at head and freeze it by hand (copy view SQL in; never import models there):

    python -c "from alembic import command; from db.migrate import alembic_config; \
        command.revision(alembic_config(url='sqlite:///head.db'), 'what changed', autogenerate=True, rev_id='0002')"
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.engine import Connection

from db.engine import RESWEEP_TABLES, create_store_engine, redact, resolve_url, translate_errors
from db.errors import NotResweepError, SchemaAheadError, SchemaBehindError

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
UPGRADE_COMMAND = "python -m orchestrator db upgrade --db {url}"

SchemaState = Literal["empty", "versioned", "foreign"]


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


def schema_state(conn: Connection) -> tuple[SchemaState, str | None]:
    """('versioned', revision), ('empty', None) when there is nothing of resweep's yet, or
    ('foreign', None) when resweep's table names exist without a schema version.

    On PostgreSQL it first takes a transaction-scoped advisory lock, so two launchers opening the
    same new database at once do not both migrate it: the second waits for the first's commit
    (DDL is transactional there) and then finds the schema current.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
    revision = current_revision(conn)
    if revision is not None:
        return "versioned", revision
    names = set(sa.inspect(conn).get_table_names())
    return ("foreign" if names & RESWEEP_TABLES else "empty"), None


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
            f"run `{UPGRADE_COMMAND.format(url=where)}`"
        )
    raise SchemaAheadError(
        f"{where} has schema revision {revision}, newer than this resweep knows (head {head}): "
        "a newer resweep wrote it; upgrade resweep (pip install -U resweep) or use another database"
    )


def upgrade_connection(conn: Connection) -> None:
    """Migrate the database behind `conn` to head inside the caller's transaction."""
    command.upgrade(alembic_config(connection=conn), "head")


def upgrade(url: str | None = None) -> tuple[str | None, str]:
    """Upgrade the database at `url` to head (creating the schema in a new database).

    Returns (revision before, revision after). A database ahead of the code, or one with
    resweep's table names but no schema version, is refused.
    """
    engine = create_store_engine(resolve_url(url))
    try:
        with translate_errors(engine), engine.begin() as conn:
            state, before = schema_state(conn)
            if state == "foreign":
                raise NotResweepError(
                    f"{redact(engine)} has tables named like resweep's but no schema version: "
                    "not a resweep database; refusing to migrate it"
                )
            if before is not None:
                try:
                    check_revision(before, redact(engine))
                except SchemaBehindError:
                    pass  # that is what we are here for
            if before != head_revision():
                upgrade_connection(conn)
            return before, head_revision()
    finally:
        engine.dispose()
