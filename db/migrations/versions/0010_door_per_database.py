"""The read-only door becomes each database's own: the server-wide role resweep_reader leaves.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-09

Migration 0003's door was one role, `resweep_reader`, shared by every resweep database on a
server and owning each database's `resweep_read`: every login granted it could alter, drop or
replace the function of every other resweep database (members act as the owner) and read every
database's tables. Here that arrangement is taken out of this database: its function is dropped,
the role's grants and default privileges here revoked, and the role itself dropped once no
database on the server holds anything of it. The per-database door that replaces it (two roles
named after the database, see db/door.py) is not schema but checked state: db.migrate makes or
mends it after every migration, even at head, and `query` checks it before every statement.

The downgrade drops this database's door and puts 0003's back (the shared role, its grants, the
function it owns); it leaves the per-database roles (they may hold grants in other sessions'
reach only through this database, which the downgrade takes back) and pg_catalog's ACLs.

Frozen: never import db.door or db.readonly here.
"""

from __future__ import annotations

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

SIGNATURE = "resweep_read(text, integer, bigint, bigint)"

UNSHARE = """\
DO $u$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'resweep_reader') THEN
        EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I REVOKE ALL ON TABLES FROM resweep_reader', current_schema());
        EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA %I FROM resweep_reader', current_schema());
        EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA %I FROM resweep_reader', current_schema());
        EXECUTE format('REVOKE ALL ON SCHEMA %I FROM resweep_reader', current_schema());
        BEGIN
            DROP ROLE resweep_reader;  -- only where no database on the server still uses it
        EXCEPTION WHEN dependent_objects_still_exist OR insufficient_privilege OR object_in_use THEN
            NULL;
        END;
    END IF;
END
$u$"""

# This database's door (db/door.py at 0010): its roles lose what they hold here.
UNDOOR = """\
DO $d$
DECLARE
    r text;
BEGIN
    FOR r IN SELECT rolname FROM pg_roles WHERE rolname LIKE 'resweep\\_reader\\_%' OR rolname LIKE 'resweep\\_door\\_%'
    LOOP
        EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA %I FROM %I', current_schema(), r);
        EXECUTE format('REVOKE ALL ON SCHEMA %I FROM %I', current_schema(), r);
    END LOOP;
END
$d$"""


def _migration_0003():
    """0003's frozen SQL (that file is itself frozen)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).with_name("0003_readonly_role.py")
    spec = importlib.util.spec_from_file_location("resweep_migration_0003", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"DROP FUNCTION IF EXISTS {SIGNATURE}")
    op.execute(UNSHARE)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"DROP FUNCTION IF EXISTS {SIGNATURE}")
    op.execute(UNDOOR)
    _migration_0003().upgrade()
