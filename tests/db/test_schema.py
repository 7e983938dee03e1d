"""The schema: created by migrating, equal to the models, versions checked on open."""

from __future__ import annotations

import importlib.util
import re
import shutil
import textwrap

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from db import migrate, views
from db.engine import create_store_engine, get_engine, resolve_url
from db.errors import NoDatabaseError, NotResweepError, SchemaAheadError, SchemaBehindError
from db.models import Base

INITIAL = migrate.MIGRATIONS_DIR / "versions" / "0001_initial.py"


def test_migrated_empty_database_equals_the_models(db_url):
    before, after = migrate.upgrade(db_url)
    assert (before, after) == (None, migrate.head_revision())
    engine = create_store_engine(resolve_url(db_url))
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        assert {"trial_results", "grid_results"} <= set(sa.inspect(conn).get_view_names())
    engine.dispose()


def test_get_engine_creates_a_new_database_by_migrating(db_url):
    engine = get_engine(db_url)
    with engine.connect() as conn:
        assert migrate.current_revision(conn) == migrate.head_revision()
        assert conn.exec_driver_sql("SELECT count(*) FROM grid_results").scalar() == 0
    engine.dispose()


def test_head_migration_freezes_the_current_view_sql():
    spec = importlib.util.spec_from_file_location("m0001", INITIAL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.VIEWS == views.VIEWS
    source = INITIAL.read_text()
    assert not re.search(r"^\s*(from|import) db\b", source, re.MULTILINE)  # frozen, not imported


def test_downgrade_to_nothing_and_back(db_url):
    from alembic import command

    migrate.upgrade(db_url)
    engine = create_store_engine(resolve_url(db_url))
    with engine.begin() as conn:
        command.downgrade(migrate.alembic_config(connection=conn), "base")
    with engine.connect() as conn:
        names = set(sa.inspect(conn).get_table_names())
        assert not names & {"sweeps", "trials", "metrics", "layer_stats", "optuna_journal"}
    engine.dispose()
    assert migrate.upgrade(db_url)[1] == migrate.head_revision()


def test_readers_do_not_create_databases(tmp_path):
    with pytest.raises(NoDatabaseError, match="no database at sqlite:///"):
        get_engine(f"sqlite:///{tmp_path / 'missing.db'}", create=False)
    assert not (tmp_path / "missing.db").exists()


REAL_HEAD = migrate.head_revision()
NEWER = f"{int(REAL_HEAD) + 1:04d}"


@pytest.fixture
def newer_code(tmp_path, monkeypatch):
    """The code with one migration more than this one has, as after a resweep upgrade."""
    scripts = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS_DIR, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / f"{NEWER}_add_note.py").write_text(textwrap.dedent(f'''
        import sqlalchemy as sa
        from alembic import op

        revision = "{NEWER}"
        down_revision = "{REAL_HEAD}"
        branch_labels = None
        depends_on = None

        def upgrade():
            with op.batch_alter_table("sweeps") as batch:
                batch.add_column(sa.Column("note", sa.Text(), nullable=True))

        def downgrade():
            with op.batch_alter_table("sweeps") as batch:
                batch.drop_column("note")
    '''))
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", scripts)


def test_database_behind_the_code_says_how_to_upgrade(db_url, monkeypatch, newer_code):
    with monkeypatch.context() as m:
        m.setattr(migrate, "MIGRATIONS_DIR", INITIAL.parent.parent)
        migrate.upgrade(db_url)  # at this code's head
    with pytest.raises(SchemaBehindError) as err:
        get_engine(db_url)
    message = str(err.value)
    assert f"revision {REAL_HEAD}" in message and f"needs {NEWER}" in message
    assert "python -m orchestrator db upgrade --db " in message
    assert "\n" not in message
    assert migrate.upgrade(db_url) == (REAL_HEAD, NEWER)  # what the message says to run
    get_engine(db_url).dispose()


def test_database_ahead_of_the_code_is_refused(db_url):
    migrate.upgrade(db_url)
    engine = create_store_engine(resolve_url(db_url))
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    engine.dispose()
    with pytest.raises(SchemaAheadError, match="revision 9999, newer than this resweep knows"):
        get_engine(db_url)
    with pytest.raises(SchemaAheadError):
        migrate.upgrade(db_url)  # never "upgrades" a newer database either


def test_database_with_our_table_names_but_no_version_is_refused(db_url):
    engine = create_store_engine(resolve_url(db_url))
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE trials (id INTEGER PRIMARY KEY)")
    engine.dispose()
    with pytest.raises(NotResweepError, match="not a resweep database"):
        get_engine(db_url)
    with pytest.raises(NotResweepError):
        migrate.upgrade(db_url)
