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
from db.engine import create_store_engine, get_engine, resolve_url, upgrade
from db.errors import NoDatabaseError, NotResweepError, SchemaAheadError, SchemaBehindError
from db.models import Base

INITIAL = migrate.MIGRATIONS_DIR / "versions" / "0001_initial.py"


def test_migrated_empty_database_equals_the_models(db_url):
    before, after = upgrade(db_url)
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
    # The newest migration that (re)creates the views holds the current copy of their SQL.
    with_views = []
    for path in sorted((migrate.MIGRATIONS_DIR / "versions").glob("[0-9]*.py")):
        spec = importlib.util.spec_from_file_location(f"m{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert not re.search(r"^\s*(from|import) db\b", path.read_text(), re.MULTILINE)  # frozen, not imported
        if hasattr(module, "VIEWS"):
            with_views.append(module.VIEWS)
    assert with_views[-1] == views.VIEWS


def test_downgrade_to_nothing_and_back(db_url):
    from alembic import command

    upgrade(db_url)
    engine = create_store_engine(resolve_url(db_url))
    with engine.begin() as conn:
        command.downgrade(migrate.alembic_config(connection=conn), "base")
    with engine.connect() as conn:
        names = set(sa.inspect(conn).get_table_names())
        assert not names & {"sweeps", "trials", "metrics", "layer_stats", "optuna_journal"}
    engine.dispose()
    assert upgrade(db_url)[1] == migrate.head_revision()


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
        upgrade(db_url)  # at this code's head
    with pytest.raises(SchemaBehindError) as err:
        get_engine(db_url)
    message = str(err.value)
    assert f"revision {REAL_HEAD}" in message and f"needs {NEWER}" in message
    assert "python -m orchestrator db upgrade --db " in message
    assert "\n" not in message
    assert upgrade(db_url) == (REAL_HEAD, NEWER)  # what the message says to run
    get_engine(db_url).dispose()


def test_database_ahead_of_the_code_is_refused(db_url):
    upgrade(db_url)
    engine = create_store_engine(resolve_url(db_url))
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    engine.dispose()
    with pytest.raises(SchemaAheadError, match="revision 9999, newer than this resweep knows"):
        get_engine(db_url)
    with pytest.raises(SchemaAheadError):
        upgrade(db_url)  # never "upgrades" a newer database either


def test_database_with_our_table_names_but_no_version_is_refused(db_url):
    engine = create_store_engine(resolve_url(db_url))
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE trials (id INTEGER PRIMARY KEY)")
    engine.dispose()
    with pytest.raises(NotResweepError, match="not a resweep database"):
        get_engine(db_url)
    with pytest.raises(NotResweepError):
        upgrade(db_url)


def test_0004_widens_block_and_keeps_every_row(db_url):
    # A database at 0002 holding a sweep's results, upgraded in place: no row may be lost (a SQLite
    # table rebuild with ON DELETE CASCADE children would empty metrics and layer_stats).
    from alembic import command

    from db import writes

    engine = create_store_engine(resolve_url(db_url))
    with engine.begin() as conn:
        command.upgrade(migrate.alembic_config(connection=conn), "0002")
        # Rows as a database at 0002 holds them (today's writes target today's schema).
        # (No explicit ids: on PostgreSQL they would not advance the id sequences; a new database's are 1.)
        conn.exec_driver_sql("INSERT INTO sweeps (name, spec, spec_hash, status, created_at) "
                             "VALUES ('old', 'name: old', '', 'running', CURRENT_TIMESTAMP)")
        conn.exec_driver_sql("INSERT INTO trials (sweep_id, trial_key, status, dataset, model, depth, block, "
                             "shortcut, seed, config) VALUES (1, 't0', 'running', 'digits', 'cifar', 20, "
                             "'basic', 'A', 0, '{}')")
        conn.exec_driver_sql("INSERT INTO metrics (trial_id, name, epoch, value) VALUES (1, 'train_err', 1, 0.5), "
                             "(1, 'test_err', 1, 0.6)")
        conn.exec_driver_sql("INSERT INTO layer_stats (trial_id, epoch, layer, name, stage, std, mean) "
                             "VALUES (1, 1, 0, 'conv1', 0, 1.0, 0.0)")
    sweep_id = 1
    engine.dispose()
    assert upgrade(db_url) == ("0002", migrate.head_revision())
    engine = create_store_engine(resolve_url(db_url))
    with engine.connect() as conn:
        counts = {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar()
                  for t in ("sweeps", "trials", "metrics", "layer_stats", "trial_results")}
        assert counts == {"sweeps": 1, "trials": 1, "metrics": 2, "layer_stats": 1, "trial_results": 1}
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        block = next(c for c in sa.inspect(conn).get_columns("trials") if c["name"] == "block")
        assert block["type"].length == 32
    engine.dispose()
    writes_engine = get_engine(db_url)
    writes.upsert_trial(writes_engine, sweep_id, "t1", status="running",
                        config={"dataset": "digits", "model": "cifar", "depth": 29, "block": "preact_bottleneck",
                                "shortcut": "A", "seed": 0})
    writes_engine.dispose()


def test_lean_metrics_migration_keeps_every_value_and_the_views_and_downgrades_back(db_url):
    """0002 -> 0007 moves metrics (names as text) into metric_values (names as ids), an unknown
    name included, with `metrics` and the views reading the same; a downgrade restores the table."""
    from alembic import command

    engine = create_store_engine(resolve_url(db_url))
    with engine.begin() as conn:
        command.upgrade(migrate.alembic_config(connection=conn), "0002")
        conn.exec_driver_sql("INSERT INTO sweeps (id, name, spec, spec_hash, status, created_at) "
                             "VALUES (1, 's', '', '', 'finished', CURRENT_TIMESTAMP)")
        conn.exec_driver_sql("INSERT INTO trials (id, sweep_id, trial_key, status, dataset, model, depth, block, "
                             "shortcut, seed, config) VALUES (1, 1, 'k', 'terminated', 'digits', 'cifar', 20, "
                             "'basic', 'A', 0, '{}')")
        values = [(1, n, e, 0.5 / e + i / 100) for i, n in enumerate(("train_err", "test_err", "grad_norm"))
                  for e in (1, 2, 3)]
        for row in values:
            conn.exec_driver_sql("INSERT INTO metrics (trial_id, name, epoch, value) VALUES "
                                 f"({row[0]}, '{row[1]}', {row[2]}, {row[3]!r})")
        before = conn.exec_driver_sql("SELECT * FROM trial_results").all()
    with engine.begin() as conn:
        command.upgrade(migrate.alembic_config(connection=conn), "0007")
    with engine.connect() as conn:
        got = conn.exec_driver_sql("SELECT trial_id, name, epoch, value FROM metrics ORDER BY name, epoch").all()
        assert sorted(got, key=lambda r: (r[1], r[2])) == sorted(values, key=lambda r: (r[1], r[2]))
        assert conn.exec_driver_sql("SELECT id FROM metric_names WHERE name = 'grad_norm'").scalar() == 11
        assert conn.exec_driver_sql("SELECT * FROM trial_results").all() == before
    with engine.begin() as conn:
        command.downgrade(migrate.alembic_config(connection=conn), "0002")
    with engine.connect() as conn:
        names = set(sa.inspect(conn).get_table_names())
        assert "metrics" in names and not names & {"metric_values", "metric_names"}
        back = conn.exec_driver_sql("SELECT trial_id, name, epoch, value FROM metrics").all()
        assert sorted(back) == sorted(values)
        assert conn.exec_driver_sql("SELECT * FROM trial_results").all() == before
    engine.dispose()


def test_the_migrated_metric_names_are_the_models_known_ids(db_url):
    # Writes use db.models.METRIC_IDS without a lookup: the migration must seed exactly those.
    from db.models import METRIC_IDS

    engine = get_engine(db_url)
    with engine.connect() as conn:
        assert dict(conn.execute(sa.text("SELECT name, id FROM metric_names")).all()) == METRIC_IDS
    engine.dispose()


def test_metric_ids_are_written_out_and_a_new_metric_appends():
    # Databases store these ids: each is written in db/models.py, never derived from an order, so
    # adding a name cannot renumber the others. The first ten are the ones migration 0007 seeded.
    from db.models import METRIC_IDS, METRIC_NAMES

    seeded = {
        "epoch_time_s": 1, "images_per_s": 2, "lr": 3, "test_err": 4, "test_loss": 5, "train_err": 6,
        "train_loss": 7, "val_err": 8, "val_loss": 9, "warmup_iterations": 10,
    }  # fmt: skip
    assert {name: METRIC_IDS[name] for name in seeded} == seeded
    spec = importlib.util.spec_from_file_location("m0007", migrate.MIGRATIONS_DIR / "versions" / "0007_lean_metrics.py")
    m0007 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m0007)
    assert dict(zip(m0007.METRIC_NAMES, range(1, 11))) == seeded
    # Appended, not inserted: the ids are 1..N in the order the names are written, with no gap.
    assert list(METRIC_IDS.values()) == list(range(1, len(METRIC_IDS) + 1))
    assert METRIC_NAMES == tuple(METRIC_IDS)


def test_trial_summaries_migration_summarises_existing_trials_and_downgrades_back(db_url):
    """0008 -> 0009 summarises the trials already stored (trial_summaries from their
    metric_values): trial_results and grid_results read the same rows before, after, and after a
    downgrade back to 0008's views."""
    from alembic import command

    engine = create_store_engine(resolve_url(db_url))
    with engine.begin() as conn:
        command.upgrade(migrate.alembic_config(connection=conn), "0008")
        conn.exec_driver_sql("INSERT INTO sweeps (id, name, spec, spec_hash, status, created_at) "
                             "VALUES (1, 's', '', '', 'finished', CURRENT_TIMESTAMP)")
        for tid, seed, status in ((1, 0, "terminated"), (2, 1, "terminated"), (3, 2, "running"), (4, 3, "error")):
            conn.exec_driver_sql("INSERT INTO trials (id, sweep_id, trial_key, status, dataset, model, depth, block, "
                                 f"shortcut, seed, config) VALUES ({tid}, 1, 'k{tid}', '{status}', 'digits', "
                                 f"'cifar', 20, 'basic', 'A', {seed}, '{{}}')")
        # train_err is id 6, test_err 4 (0007's seed); trial 3 has test_err alone, trial 4 nothing
        values = [(t, n, e, round(0.9 / e + t / 10 + n / 100, 6)) for t in (1, 2) for n in (4, 6) for e in (1, 2, 3)]
        values += [(1, 4, 2, 0.05), (3, 4, 1, 0.6)]  # trial 1's best is not its final
        values = list({row[:3]: row for row in values}.values())
        for row in values:
            conn.exec_driver_sql(f"INSERT INTO metric_values (trial_id, name_id, epoch, value) VALUES {row}")
    read = {v: f"SELECT * FROM {v} ORDER BY 1, 2" for v in ("trial_results", "grid_results")}
    with engine.connect() as conn:
        before = {v: conn.exec_driver_sql(sql).all() for v, sql in read.items()}
    assert [r.best_test_err for r in before["trial_results"]] == [0.05, 0.54, 0.6, None]
    with engine.begin() as conn:
        command.upgrade(migrate.alembic_config(connection=conn), "0009")
    with engine.connect() as conn:
        assert {v: conn.exec_driver_sql(sql).all() for v, sql in read.items()} == before
        assert conn.exec_driver_sql("SELECT count(*) FROM trial_summaries").scalar() == 4
    with engine.begin() as conn:
        command.downgrade(migrate.alembic_config(connection=conn), "0008")
    with engine.connect() as conn:
        assert {v: conn.exec_driver_sql(sql).all() for v, sql in read.items()} == before
        assert "trial_summaries" not in sa.inspect(conn).get_table_names()
    engine.dispose()


@pytest.mark.postgres
def test_on_postgresql_curves_read_from_the_key_alone_and_trial_results_reads_no_curve(pg_url):
    """Migration 0008: metric_values' key carries the value (INCLUDE), so a trial's curve and its
    summary's recomputation are index-only scans, not a heap page per epoch. Migration 0009:
    `trial_results` reads one trial_summaries row per trial and never metric_values (the filter
    by axis at 2,000 trials x 200 epochs; docs/performance.md)."""
    from db.writes import _summary_upsert
    from tests.db.known import make_sweep

    engine = get_engine(pg_url)
    try:
        sweep = make_sweep(engine)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")  # index-only scans need the visibility map
            index = conn.exec_driver_sql("SELECT pg_get_indexdef('pk_metric_values'::regclass)").scalar()
            assert index.endswith("(trial_id, name_id, epoch) INCLUDE (value)"), index
            conn.exec_driver_sql("SET enable_seqscan = off")  # the plan for a big table, on a few rows
            view_plan = "\n".join(conn.exec_driver_sql(
                "EXPLAIN SELECT best_test_err, final_test_err FROM trial_results WHERE depth = 20").scalars())
            one = sweep.trials["A-0"]
            rewrite = {"trial_id": one, "epochs": 1, "final_epoch": 1, "final_train_err": 0.5, "final_test_err": 0.5,
                       "best_test_err": 0.5, "first_epoch": 1, "last_epoch": 1}  # epoch 1 again: recompute
            upsert = _summary_upsert("postgresql")
            for name, value in rewrite.items():
                upsert = upsert.replace(f"%({name})s", str(value))
            summary_plan = "\n".join(conn.exec_driver_sql("EXPLAIN " + upsert).scalars())
        assert "trial_summaries" in view_plan and "metric_values" not in view_plan, view_plan
        assert "Index Only Scan using pk_metric_values" in summary_plan, summary_plan
        assert not re.search(r"(?<!Only )Index Scan using pk_metric_values|Bitmap Heap Scan on metric_values",
                             summary_plan), summary_plan
    finally:
        engine.dispose()
