"""trials.block widened to 32 characters: "preact_bottleneck" (17) did not fit VARCHAR(16).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

PostgreSQL will not alter the type of a column a view reads, so there the two views are dropped
first and created again from the SQL frozen here (the same as 0001's; never import db.views here);
the ALTER changes no row.

SQLite never enforced the length, and its usual way to change a column (batch mode: copy the
table, DROP the old one) would empty every child table: with foreign keys on, DROP TABLE deletes
its rows first and ON DELETE CASCADE takes the metrics, layer_stats and attempts with them. So
on SQLite only the declared type in the stored schema is changed, by SQLite's own procedure for
changes that leave the file's format alone (sqlite.org/lang_altertable.html, "Making Other Kinds
Of Table Schema Changes": writable_schema, then bump schema_version).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

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
    (SELECT count(*) FROM metrics AS m
      WHERE m.trial_id = t.id AND m.name = 'train_err') AS epochs,
    final_train.value AS final_train_err,
    final_test.value AS final_test_err,
    (SELECT min(m.value) FROM metrics AS m
      WHERE m.trial_id = t.id AND m.name = 'test_err') AS best_test_err,
    t.params_count
FROM trials AS t
JOIN sweeps AS s ON s.id = t.sweep_id
LEFT JOIN metrics AS final_train
       ON final_train.trial_id = t.id AND final_train.name = 'train_err'
      AND final_train.epoch = (SELECT max(e.epoch) FROM metrics AS e
                                WHERE e.trial_id = t.id AND e.name = 'train_err')
LEFT JOIN metrics AS final_test
       ON final_test.trial_id = t.id AND final_test.name = 'test_err'
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

VIEWS = {"trial_results": TRIAL_RESULTS, "grid_results": GRID_RESULTS}


def _alter_block(old: int, new: int) -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        version = bind.exec_driver_sql("PRAGMA schema_version").scalar()
        bind.exec_driver_sql("PRAGMA writable_schema=ON")
        bind.exec_driver_sql(
            "UPDATE sqlite_master SET sql = replace(sql, 'block VARCHAR({0}) NOT NULL', 'block VARCHAR({1}) NOT NULL') "
            "WHERE type = 'table' AND name = 'trials'".format(old, new))
        bind.exec_driver_sql(f"PRAGMA schema_version={version + 1}")
        bind.exec_driver_sql("PRAGMA writable_schema=OFF")
        return
    for name in reversed(list(VIEWS)):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.alter_column("trials", "block", existing_type=sa.String(length=old), type_=sa.String(length=new),
                    existing_nullable=False, comment="basic | bottleneck | preact | preact_bottleneck."
                    if new == 32 else "basic | bottleneck.", existing_comment=None)
    for sql in VIEWS.values():
        op.execute(sql)


def upgrade() -> None:
    _alter_block(16, 32)


def downgrade() -> None:
    _alter_block(32, 16)
