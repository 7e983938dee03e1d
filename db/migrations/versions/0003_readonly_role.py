"""The read-only door on PostgreSQL: the role `resweep_reader` and the function `resweep_read`.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

`query` and the dashboard's SQL page run a user's statement as `resweep_reader`: a role that can
log in nowhere (NOLOGIN), holds no attribute (no superuser, replication, createrole, bypassrls),
belongs to no role (so none of pg_read_server_files, pg_execute_server_program, pg_signal_backend,
pg_monitor, ...) and may only SELECT the tables and views of resweep's schema (default
privileges extend that to the tables later migrations make; no sequence, no function but
resweep_read). The reading connection takes it
with `SET LOCAL ROLE resweep_reader` (the migrating role is made a member so it can) and calls
`resweep_read`, a SECURITY DEFINER function owned by the role, which runs the statement as a
subquery through a cursor. Inside a security-definer function PostgreSQL refuses
`set_config('role' | 'session_authorization', ...)`, so a statement cannot take back the rights
of the login (a superuser's, say) that opened the connection.

Roles belong to the whole server, not to one database: the role is made once and shared by every
resweep database on the server; the downgrade revokes its rights here and leaves it. Making the
role needs CREATEROLE (or a superuser); where the migrating role has neither and is not already
a member, this door is skipped: migration 0010 replaces it with a door per database.

Frozen: never import db.models or db.readonly here. tests/db/test_readonly_role.py checks that
the reader can SELECT every relation and nothing more.
"""

from __future__ import annotations

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

RELATIONS = "sweeps, trials, metrics, layer_stats, optuna_journal, trial_results, grid_results"  # at 0003
SIGNATURE = "resweep_read(text, integer, bigint, bigint)"

ROLE = """\
DO $role$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'resweep_reader') THEN
        BEGIN
            CREATE ROLE resweep_reader NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE
                NOINHERIT NOREPLICATION NOBYPASSRLS;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- another database's migration made it at the same moment
        END;
    END IF;
    IF NOT pg_has_role(current_user, 'resweep_reader', 'MEMBER') THEN
        EXECUTE format('GRANT resweep_reader TO %I', current_user);
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE EXCEPTION 'the read-only role resweep_reader cannot be made or granted by %', current_user
        USING HINT = format('as a superuser run: CREATE ROLE resweep_reader NOLOGIN; '
                            'GRANT resweep_reader TO %I; then upgrade again', current_user);
END
$role$"""

# Runs `query` as a subquery (so only a SELECT, VALUES, TABLE or WITH query fits, and PostgreSQL's
# cursor takes exactly one) and stops after max_rows + 1 rows or past max_bytes: the rows are
# read through a cursor, so `SELECT * FROM generate_series(1, 50000000)` stops at the cap.
# The newline before ')' ends a trailing `-- comment` in the user's text.
FUNCTION = """\
CREATE FUNCTION resweep_read(query text, ncols integer, max_rows bigint, max_bytes bigint)
RETURNS SETOF record
LANGUAGE plpgsql SECURITY DEFINER
AS $fn$
DECLARE
    r record;
    nrows bigint := 0;
    nbytes bigint := 0;
    names text;
BEGIN
    SELECT string_agg(format('c%s', i), ', ') INTO names FROM generate_series(1, ncols) AS i;
    FOR r IN EXECUTE format(E'SELECT * FROM (%s\\n) AS resweep_query(%s)', query, names) LOOP
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
$fn$"""


# Whether the migrating role can make the role or already belongs to it. Where it cannot, this
# door is skipped: migration 0010 replaces it with one per database (db/door.py) anyway.
CAN_MAKE = """\
SELECT rolsuper OR rolcreaterole OR coalesce(pg_has_role(current_user, (
    SELECT oid FROM pg_roles WHERE rolname = 'resweep_reader'), 'MEMBER'), false)
FROM pg_roles WHERE rolname = current_user"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite: the reading connection is opened read-only with an authorizer
    if not op.get_bind().exec_driver_sql(CAN_MAKE).scalar():
        return
    op.execute(ROLE)
    # Every table and view of the schema (resweep's: RELATIONS and alembic_version), and those
    # later migrations make, so a re-chained migration that adds a table needs no grant of its own.
    op.execute("""DO $g$ BEGIN
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO resweep_reader', current_schema());
        EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO resweep_reader', current_schema());
        EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT ON TABLES TO resweep_reader', current_schema());
    END $g$""")
    op.execute(FUNCTION)
    op.execute(f"REVOKE ALL ON FUNCTION {SIGNATURE} FROM PUBLIC")
    # The owner of a function must be allowed to create in its schema, for the moment it is
    # handed over; taken back at once, so the role owns this one function and nothing else.
    op.execute("""DO $o$ BEGIN
        EXECUTE format('GRANT CREATE ON SCHEMA %I TO resweep_reader', current_schema());
        ALTER FUNCTION resweep_read(text, integer, bigint, bigint) OWNER TO resweep_reader;
        EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM resweep_reader', current_schema());
    END $o$""")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"DROP FUNCTION IF EXISTS {SIGNATURE}")
    op.execute("""DO $g$ BEGIN
        EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I REVOKE SELECT ON TABLES FROM resweep_reader', current_schema());
        EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA %I FROM resweep_reader', current_schema());
        EXECUTE format('REVOKE ALL ON SCHEMA %I FROM resweep_reader', current_schema());
    END $g$""")
