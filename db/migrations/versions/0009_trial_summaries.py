"""Trial summaries: each trial's epochs, final and best errors in one row (trial_summaries), kept
by the writer in the transaction that writes the trial's metric values; `trial_results` (and
`grid_results` over it) read that row instead of aggregating each trial's curve, so filtering
2,000 trials by axis reads 2,000 rows, not 2,000 curves. The view's columns and meanings are
unchanged; existing trials are summarised here, from their metric_values.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07

Frozen: never import db.models or db.views here. The views 0007 made (restored by downgrade) are
read from that file, itself frozen.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

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
    coalesce(f.epochs, 0) AS epochs,
    f.final_train_err,
    f.final_test_err,
    f.best_test_err,
    t.params_count
FROM trials AS t
JOIN sweeps AS s ON s.id = t.sweep_id
LEFT JOIN trial_summaries AS f ON f.trial_id = t.id"""

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
REBUILT = ("trial_results", "grid_results")  # grid_results reads trial_results: drop in reverse

# Every trial's summary from its metric_values (db.writes.SUMMARY_UPSERT's recomputing branch, for all trials at once).
BACKFILL = """\
INSERT INTO trial_summaries
    (trial_id, epochs, final_epoch, final_train_err, final_test_err, best_test_err, last_epoch)
SELECT a.id, a.epochs, a.final_epoch,
       (SELECT v.value FROM metric_values AS v
         WHERE v.trial_id = a.id AND v.name_id = a.train AND v.epoch = a.final_epoch),
       (SELECT v.value FROM metric_values AS v
         WHERE v.trial_id = a.id AND v.name_id = a.test AND v.epoch = a.final_epoch),
       (SELECT min(v.value) FROM metric_values AS v WHERE v.trial_id = a.id AND v.name_id = a.test),
       CASE WHEN a.test_epoch IS NULL OR a.final_epoch >= a.test_epoch THEN coalesce(a.final_epoch, a.test_epoch)
            ELSE a.test_epoch END
FROM (SELECT t.id, n.train, n.test,
             (SELECT count(*) FROM metric_values AS v WHERE v.trial_id = t.id AND v.name_id = n.train) AS epochs,
             (SELECT max(v.epoch) FROM metric_values AS v WHERE v.trial_id = t.id AND v.name_id = n.train) AS final_epoch,
             (SELECT max(v.epoch) FROM metric_values AS v WHERE v.trial_id = t.id AND v.name_id = n.test) AS test_epoch
      FROM trials AS t
      CROSS JOIN (SELECT (SELECT id FROM metric_names WHERE name = 'train_err') AS train,
                         (SELECT id FROM metric_names WHERE name = 'test_err') AS test) AS n) AS a"""


def _lean_views() -> dict[str, str]:
    path = Path(__file__).with_name("0007_lean_metrics.py")
    spec = importlib.util.spec_from_file_location("resweep_migration_0007", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.VIEWS


def upgrade() -> None:
    for name in reversed(REBUILT):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.create_table(
        "trial_summaries",
        sa.Column("trial_id", sa.Integer(), autoincrement=False, nullable=False, comment="The trial summarised."),
        sa.Column("epochs", sa.Integer(), nullable=False, comment="Recorded epochs: the trial's train_err rows."),
        sa.Column("final_epoch", sa.Integer(), nullable=True, comment="The last of them (NULL: none recorded)."),
        sa.Column("final_train_err", sa.Double(), nullable=True, comment="train_err at final_epoch."),
        sa.Column("final_test_err", sa.Double(), nullable=True,
                  comment="test_err at final_epoch (NULL: not reported)."),
        sa.Column("best_test_err", sa.Double(), nullable=True, comment="The minimum test_err over all epochs."),
        sa.Column("last_epoch", sa.Integer(), nullable=True,
                  comment="The latest epoch with a train_err or test_err row: a write after it only appends."),
        sa.ForeignKeyConstraint(["trial_id"], ["trials.id"], name=op.f("fk_trial_summaries_trial_id_trials"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("trial_id", name=op.f("pk_trial_summaries")),
        comment="Per-trial epochs, final and best errors, derived from metric_values on every write.",
    )
    op.execute(BACKFILL)
    for name in REBUILT:
        op.execute(VIEWS[name])


def downgrade() -> None:
    for name in reversed(REBUILT):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.drop_table("trial_summaries")
    lean = _lean_views()
    for name in REBUILT:
        op.execute(lean[name])
