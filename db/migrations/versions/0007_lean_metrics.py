"""Lean metrics: names stored once (metric_names), values clustered on their key with the name
as a small integer (metric_values, WITHOUT ROWID on SQLite, no second index); `metrics` becomes a
view with the documented columns (trial_id, epoch, name, value), so users' SQL keeps working.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

Frozen: never import db.models or db.views here. The views of 0001 (restored by downgrade) are
read from that file, itself frozen.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

METRIC_NAMES = ("epoch_time_s", "images_per_s", "lr", "test_err", "test_loss", "train_err", "train_loss", "val_err",
                "val_loss", "warmup_iterations")  # ids 1..10, in this (alphabetical) order

METRICS = """\
CREATE VIEW metrics AS
SELECT v.trial_id, v.epoch, n.name, v.value
FROM metric_values AS v
JOIN metric_names AS n ON n.id = v.name_id"""

TRIAL_RESULTS = """\
CREATE VIEW trial_results AS
SELECT
    s.name AS sweep,
    t.id AS trial_id,
    t.dataset,
    t.model,
    t.depth,
    t.block,
    t.shortcut,
    t.seed,
    t.status,
    (SELECT count(*) FROM metric_values AS m
      WHERE m.trial_id = t.id AND m.name_id = (SELECT id FROM metric_names WHERE name = 'train_err')) AS epochs,
    final_train.value AS final_train_err,
    final_test.value AS final_test_err,
    (SELECT min(m.value) FROM metric_values AS m
      WHERE m.trial_id = t.id AND m.name_id = (SELECT id FROM metric_names WHERE name = 'test_err')) AS best_test_err,
    t.params_count
FROM trials AS t
JOIN sweeps AS s ON s.id = t.sweep_id
LEFT JOIN metric_values AS final_train
       ON final_train.trial_id = t.id
      AND final_train.name_id = (SELECT id FROM metric_names WHERE name = 'train_err')
      AND final_train.epoch = (SELECT max(e.epoch) FROM metric_values AS e
                                WHERE e.trial_id = t.id
                                  AND e.name_id = (SELECT id FROM metric_names WHERE name = 'train_err'))
LEFT JOIN metric_values AS final_test
       ON final_test.trial_id = t.id
      AND final_test.name_id = (SELECT id FROM metric_names WHERE name = 'test_err')
      AND final_test.epoch = final_train.epoch"""

GRID_RESULTS = """\
CREATE VIEW grid_results AS
SELECT
    f.sweep,
    f.dataset,
    f.model,
    f.depth,
    f.block,
    f.shortcut,
    count(*) AS n_seeds,
    avg(f.final_train_err) AS train_err_mean,
    CASE WHEN count(f.final_train_err) > 1 THEN
        sqrt(sum((f.final_train_err - f.train_mean) * (f.final_train_err - f.train_mean))
             / (count(f.final_train_err) - 1))
    END AS train_err_std,
    avg(f.final_test_err) AS test_err_mean,
    CASE WHEN count(f.final_test_err) > 1 THEN
        sqrt(sum((f.final_test_err - f.test_mean) * (f.final_test_err - f.test_mean))
             / (count(f.final_test_err) - 1))
    END AS test_err_std
FROM (
    SELECT
        r.sweep, r.dataset, r.model, r.depth, r.block, r.shortcut,
        r.final_train_err,
        r.final_test_err,
        avg(r.final_train_err) OVER (
            PARTITION BY r.sweep, r.dataset, r.model, r.depth, r.block, r.shortcut) AS train_mean,
        avg(r.final_test_err) OVER (
            PARTITION BY r.sweep, r.dataset, r.model, r.depth, r.block, r.shortcut) AS test_mean
    FROM trial_results AS r
    WHERE r.status = 'terminated'
) AS f
GROUP BY f.sweep, f.dataset, f.model, f.depth, f.block, f.shortcut"""

VIEWS = {"metrics": METRICS, "trial_results": TRIAL_RESULTS, "grid_results": GRID_RESULTS}
OLD_VIEWS = ("trial_results", "grid_results")


def _initial_views() -> dict[str, str]:
    path = Path(__file__).with_name("0001_initial.py")
    spec = importlib.util.spec_from_file_location("resweep_migration_0001", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.VIEWS


def upgrade() -> None:
    for name in reversed(OLD_VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    names = op.create_table(
        "metric_names",
        sa.Column("id", sa.SmallInteger(), autoincrement=False, nullable=False,
                  comment="1..10 are METRIC_NAMES in alphabetical order (seeded by the migration); others are added as reported."),
        sa.Column("name", sa.String(length=64), nullable=False,
                  comment="train_loss, train_err, test_loss, test_err, val_loss, val_err, lr, ..."),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metric_names")),
        sa.UniqueConstraint("name", name=op.f("uq_metric_names_name")),
        comment="The metric names, each once: metric_values holds their ids.",
    )
    op.bulk_insert(names, [{"id": i, "name": n} for i, n in enumerate(METRIC_NAMES, start=1)])
    op.execute(
        "INSERT INTO metric_names (id, name) "
        f"SELECT {len(METRIC_NAMES)} + row_number() OVER (ORDER BY d.name), d.name "
        "FROM (SELECT DISTINCT name FROM metrics WHERE name NOT IN ("
        + ", ".join(f"'{n}'" for n in METRIC_NAMES) + ")) AS d"
    )
    op.create_table(
        "metric_values",
        sa.Column("trial_id", sa.Integer(), nullable=False, comment="The trial that reported it."),
        sa.Column("name_id", sa.SmallInteger(), nullable=False, comment="The metric (metric_names.id)."),
        sa.Column("epoch", sa.Integer(), nullable=False, comment="Epochs completed when reported (1-based)."),
        sa.Column("value", sa.Double(), nullable=True,
                  comment="The value; errors are fractions in [0, 1]; NULL when the trial reported NaN."),
        sa.ForeignKeyConstraint(["name_id"], ["metric_names.id"], name=op.f("fk_metric_values_name_id_metric_names")),
        sa.ForeignKeyConstraint(["trial_id"], ["trials.id"], name=op.f("fk_metric_values_trial_id_trials"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("trial_id", "name_id", "epoch", name=op.f("pk_metric_values")),
        comment="Per-epoch metrics of every trial, one row per value (read them through the metrics view).",
        sqlite_with_rowid=False,
    )
    op.execute(
        "INSERT INTO metric_values (trial_id, name_id, epoch, value) "
        "SELECT m.trial_id, n.id, m.epoch, m.value FROM metrics AS m JOIN metric_names AS n ON n.name = m.name "
        "ORDER BY m.trial_id, n.id, m.epoch"
    )
    op.drop_index(op.f("ix_metrics_trial_id_name_value"), table_name="metrics")
    op.drop_table("metrics")
    for sql in VIEWS.values():
        op.execute(sql)


def downgrade() -> None:
    for name in reversed(list(VIEWS)):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.create_table(
        "metrics",
        sa.Column("trial_id", sa.Integer(), nullable=False, comment="The trial that reported it."),
        sa.Column("name", sa.String(length=64), nullable=False,
                  comment="train_loss, train_err, test_loss, test_err, val_loss, val_err, lr, ..."),
        sa.Column("epoch", sa.Integer(), nullable=False, comment="Epochs completed when reported (1-based)."),
        sa.Column("value", sa.Double(), nullable=True,
                  comment="The value; errors are fractions in [0, 1]; NULL when the trial reported NaN."),
        sa.ForeignKeyConstraint(["trial_id"], ["trials.id"], name=op.f("fk_metrics_trial_id_trials"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("trial_id", "name", "epoch", name=op.f("pk_metrics")),
        comment="Per-epoch metrics of every trial, one row per value.",
        sqlite_with_rowid=False,
    )
    op.create_index(op.f("ix_metrics_trial_id_name_value"), "metrics", ["trial_id", "name", "value"], unique=False)
    op.execute(
        "INSERT INTO metrics (trial_id, name, epoch, value) "
        "SELECT v.trial_id, n.name, v.epoch, v.value FROM metric_values AS v JOIN metric_names AS n ON n.id = v.name_id"
    )
    op.drop_table("metric_values")
    op.drop_table("metric_names")
    for name, sql in _initial_views().items():
        op.execute(sql)
