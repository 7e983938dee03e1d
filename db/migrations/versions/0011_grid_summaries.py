"""Grid summaries: each sweep's grid points with their seeds pooled in one row (grid_summaries),
kept by the writer in the transaction of every write that changes a point's finished trials;
`grid_results` reads those rows instead of pooling every trial of the sweep, so a sweep's grid
costs one row per grid point. The view's columns and meanings are unchanged; existing sweeps
are pooled here, from their trials. An index on the trials' grid point (sweep, axes, status)
lets each point be recomputed from its own trials, and a trigger keeps a point right when one
of its finished trials is deleted by hand.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07

Frozen: never import db.models, db.views or db.writes here. The views 0009 made (restored by
downgrade) are read from that file, itself frozen.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
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
    s.name AS sweep,
    g.dataset,
    g.model,
    g.depth,
    g.block,
    g.shortcut,
    g.n_seeds,
    g.train_err_mean,
    g.train_err_std,
    g.test_err_mean,
    g.test_err_std
FROM grid_summaries AS g
JOIN sweeps AS s ON s.id = g.sweep_id
WHERE g.n_seeds > 0"""

VIEWS = {"metrics": METRICS, "trial_results": TRIAL_RESULTS, "grid_results": GRID_RESULTS}

# db.writes.GRID_POOLING at 0011: the points of {points}, pooled from their finished trials.
POOLING = """\
INSERT INTO grid_summaries
    (sweep_id, dataset, model, depth, block, shortcut, n_seeds, train_err_mean, train_err_std, test_err_mean, test_err_std)
SELECT p.sweep_id, p.dataset, p.model, p.depth, p.block, p.shortcut,
       count(m.trial_id), avg(m.final_train_err),
       CASE WHEN count(m.final_train_err) > 1 THEN sqrt(sum((m.final_train_err - m.mean_final_train_err)
            * (m.final_train_err - m.mean_final_train_err)) / (count(m.final_train_err) - 1)) END,
       avg(m.final_test_err),
       CASE WHEN count(m.final_test_err) > 1 THEN sqrt(sum((m.final_test_err - m.mean_final_test_err)
            * (m.final_test_err - m.mean_final_test_err)) / (count(m.final_test_err) - 1)) END
FROM ({points}) AS p
LEFT JOIN (
    SELECT t.id AS trial_id, t.sweep_id, t.dataset, t.model, t.depth, t.block, t.shortcut,
           f.final_train_err, f.final_test_err,
           avg(f.final_train_err) OVER (PARTITION BY t.sweep_id, t.dataset, t.model, t.depth, t.block, t.shortcut)
               AS mean_final_train_err,
           avg(f.final_test_err) OVER (PARTITION BY t.sweep_id, t.dataset, t.model, t.depth, t.block, t.shortcut)
               AS mean_final_test_err
    FROM ({points}) AS q
    JOIN trials AS t ON t.sweep_id = q.sweep_id AND t.dataset = q.dataset AND t.model = q.model
                        AND t.depth = q.depth AND t.block = q.block AND t.shortcut = q.shortcut
    LEFT JOIN trial_summaries AS f ON f.trial_id = t.id
    WHERE t.status = 'terminated'
) AS m ON m.sweep_id = p.sweep_id AND m.dataset = p.dataset AND m.model = p.model
          AND m.depth = p.depth AND m.block = p.block AND m.shortcut = p.shortcut
WHERE true
GROUP BY p.sweep_id, p.dataset, p.model, p.depth, p.block, p.shortcut
ON CONFLICT (sweep_id, dataset, model, depth, block, shortcut) DO UPDATE SET
    n_seeds = excluded.n_seeds, train_err_mean = excluded.train_err_mean, train_err_std = excluded.train_err_std,
    test_err_mean = excluded.test_err_mean, test_err_std = excluded.test_err_std"""

BACKFILL = POOLING.format(points="SELECT DISTINCT sweep_id, dataset, model, depth, block, shortcut FROM trials")

# A deleted trial's point, where it has a row (not when its whole sweep is being deleted: the
# cascade takes the point's row too, and an insert would name a sweep that is gone).
DELETED_POINT = """\
SELECT e.sweep_id, e.dataset, e.model, e.depth, e.block, e.shortcut FROM grid_summaries AS e
WHERE e.sweep_id = OLD.sweep_id AND e.dataset = OLD.dataset AND e.model = OLD.model AND e.depth = OLD.depth
      AND e.block = OLD.block AND e.shortcut = OLD.shortcut"""
TRIGGER = "trials_delete_pools_grid"
SQLITE_TRIGGER = f"""\
CREATE TRIGGER {TRIGGER} AFTER DELETE ON trials FOR EACH ROW WHEN OLD.status = 'terminated'
BEGIN
{POOLING.format(points=DELETED_POINT)};
END"""
PG_FUNCTION = f"""\
CREATE FUNCTION {TRIGGER}() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
{POOLING.format(points=DELETED_POINT)};
RETURN NULL;
END
$f$"""
PG_TRIGGER = (f"CREATE TRIGGER {TRIGGER} AFTER DELETE ON trials FOR EACH ROW WHEN (OLD.status = 'terminated') "
              f"EXECUTE FUNCTION {TRIGGER}()")


def _summary_views() -> dict[str, str]:
    path = Path(__file__).with_name("0009_trial_summaries.py")
    spec = importlib.util.spec_from_file_location("resweep_migration_0009", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.VIEWS


def upgrade() -> None:
    op.execute("DROP VIEW IF EXISTS grid_results")
    op.create_table(
        "grid_summaries",
        sa.Column("sweep_id", sa.Integer(), nullable=False, comment="The sweep the grid point belongs to."),
        sa.Column("dataset", sa.String(length=32), nullable=False, comment="The grid point's dataset (trials.dataset)."),
        sa.Column("model", sa.String(length=32), nullable=False, comment="Its model family (trials.model)."),
        sa.Column("depth", sa.Integer(), nullable=False, comment="Its depth (trials.depth)."),
        sa.Column("block", sa.String(length=32), nullable=False, comment="Its block (trials.block)."),
        sa.Column("shortcut", sa.String(length=8), nullable=False, comment="Its shortcut (trials.shortcut)."),
        sa.Column("n_seeds", sa.Integer(), nullable=False, comment="Finished (terminated) trials of the point; 0: none."),
        sa.Column("train_err_mean", sa.Double(), nullable=True, comment="Mean of their final train_err."),
        sa.Column("train_err_std", sa.Double(), nullable=True, comment="Sample std (n - 1) of it; NULL below two values."),
        sa.Column("test_err_mean", sa.Double(), nullable=True, comment="Mean of their final test_err."),
        sa.Column("test_err_std", sa.Double(), nullable=True, comment="Sample std (n - 1) of it; NULL below two values."),
        sa.ForeignKeyConstraint(["sweep_id"], ["sweeps.id"], name=op.f("fk_grid_summaries_sweep_id_sweeps"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("sweep_id", "dataset", "model", "depth", "block", "shortcut",
                                name=op.f("pk_grid_summaries")),
        comment="Per sweep and grid point: mean and sample std over seeds of the finished trials' final errors.",
    )
    op.create_index("ix_trials_grid_point", "trials",
                    ["sweep_id", "depth", "shortcut", "block", "dataset", "model", "status"])
    op.execute(BACKFILL)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_FUNCTION)
        op.execute(PG_TRIGGER)
    else:
        op.execute(SQLITE_TRIGGER)
    op.execute(GRID_RESULTS)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS grid_results")
    op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER}" + (" ON trials" if op.get_bind().dialect.name == "postgresql" else ""))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS {TRIGGER}()")
    op.drop_index("ix_trials_grid_point", table_name="trials")
    op.drop_table("grid_summaries")
    op.execute(_summary_views()["grid_results"])
