"""Initial schema: sweeps, trials, metrics, layer_stats and the views trial_results and
grid_results.

Revision ID: 0001
Revises:
Create Date: 2026-11-28

Migrations freeze what they create (tables, views) in this file: never import db.models or
db.views here, or an old migration would silently change when the models do.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
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


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("id", sa.Integer(), nullable=False, comment="Surrogate key."),
        sa.Column("name", sa.String(length=200), nullable=False, comment="The sweep's name, unique per database."),
        sa.Column("spec", sa.Text(), nullable=False, comment="The sweep YAML file as launched, verbatim."),
        sa.Column("spec_hash", sa.String(length=64), nullable=False, comment="SHA-256 of the normalised spec."),
        sa.Column("git_commit", sa.String(length=40), nullable=True, comment="Commit of the code that ran the sweep (NULL outside git)."),
        sa.Column("git_dirty", sa.Boolean(), nullable=True, comment="Whether the working tree had uncommitted changes at launch."),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, comment="When the sweep was first launched (UTC)."),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True, comment="When the sweep ended (UTC); NULL while it runs."),
        sa.Column("status", sa.String(length=16), nullable=False, comment="running | finished | failed | interrupted."),
        sa.Column("storage_path", sa.Text(), nullable=True, comment="Ray Tune's experiment directory (checkpoints, for resume)."),
        sa.CheckConstraint("status IN ('running', 'finished', 'failed', 'interrupted')", name=op.f("ck_sweeps_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sweeps")),
        sa.UniqueConstraint("name", name=op.f("uq_sweeps_name")),
        comment="One row per launched sweep file.",
    )
    op.create_table(
        "trials",
        sa.Column("id", sa.Integer(), nullable=False, comment="Surrogate key."),
        sa.Column("sweep_id", sa.Integer(), nullable=False, comment="The sweep the trial belongs to."),
        sa.Column("trial_key", sa.String(length=64), nullable=False, comment="Ray Tune's trial id, unique within the sweep."),
        sa.Column("status", sa.String(length=16), nullable=False, comment="pending | running | terminated | error | stopped."),
        sa.Column("dataset", sa.String(length=32), nullable=False, comment="cifar10 | cifar100 | digits | synthetic."),
        sa.Column("model", sa.String(length=32), nullable=False, comment="cifar (6n+2) | imagenet."),
        sa.Column("depth", sa.Integer(), nullable=False, comment="Number of weighted layers (20, 56, 110, 50, ...)."),
        sa.Column("block", sa.String(length=16), nullable=False, comment="basic | bottleneck."),
        sa.Column("shortcut", sa.String(length=8), nullable=False, comment="none (plain net) | A | B | C, as in the paper's Table 3."),
        sa.Column("seed", sa.Integer(), nullable=False, comment="Random seed of the trial."),
        sa.Column("config", sa.JSON(), nullable=False, comment="Every hyperparameter of the trial: the flat trial config as JSON."),
        sa.Column("params_count", sa.BigInteger(), nullable=True, comment="Number of trainable parameters of the network."),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True, comment="When the trial first started (UTC)."),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True, comment="When the trial last ended (UTC)."),
        sa.Column("error", sa.Text(), nullable=True, comment="The error of a failed trial (status error)."),
        sa.CheckConstraint("status IN ('pending', 'running', 'terminated', 'error', 'stopped')", name=op.f("ck_trials_status")),
        sa.ForeignKeyConstraint(["sweep_id"], ["sweeps.id"], name=op.f("fk_trials_sweep_id_sweeps"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trials")),
        sa.UniqueConstraint("sweep_id", "trial_key", name=op.f("uq_trials_sweep_id_trial_key")),
        comment="One row per Ray Tune trial of a sweep.",
    )
    op.create_index(op.f("ix_trials_sweep_id_status"), "trials", ["sweep_id", "status"], unique=False)
    op.create_table(
        "metrics",
        sa.Column("trial_id", sa.Integer(), nullable=False, comment="The trial that reported it."),
        sa.Column("name", sa.String(length=64), nullable=False, comment="train_loss, train_err, test_loss, test_err, val_loss, val_err, lr, ..."),
        sa.Column("epoch", sa.Integer(), nullable=False, comment="Epochs completed when reported (1-based)."),
        sa.Column("value", sa.Double(), nullable=True, comment="The value; errors are fractions in [0, 1]; NULL when the trial reported NaN."),
        sa.ForeignKeyConstraint(["trial_id"], ["trials.id"], name=op.f("fk_metrics_trial_id_trials"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("trial_id", "name", "epoch", name=op.f("pk_metrics")),
        comment="Per-epoch metrics of every trial, one row per value.",
        sqlite_with_rowid=False,
    )
    op.create_index(op.f("ix_metrics_trial_id_name_value"), "metrics", ["trial_id", "name", "value"], unique=False)
    op.create_table(
        "layer_stats",
        sa.Column("trial_id", sa.Integer(), nullable=False, comment="The trial that was probed."),
        sa.Column("epoch", sa.Integer(), nullable=False, comment="Epochs completed when probed (1-based)."),
        sa.Column("layer", sa.Integer(), nullable=False, comment="0-based order of the layer in the forward pass."),
        sa.Column("name", sa.String(length=200), nullable=False, comment="Module path of the conv layer."),
        sa.Column("stage", sa.Integer(), nullable=False, comment="Stage (group of blocks) the layer belongs to."),
        sa.Column("std", sa.Double(), nullable=True, comment="Std of the layer's response after BN, before ReLU/addition, over the test set."),
        sa.Column("mean", sa.Double(), nullable=True, comment="Mean of the same response (NULL: NaN)."),
        sa.ForeignKeyConstraint(["trial_id"], ["trials.id"], name=op.f("fk_layer_stats_trial_id_trials"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("trial_id", "epoch", "layer", name=op.f("pk_layer_stats")),
        comment="Per-layer response statistics at probed epochs.",
        sqlite_with_rowid=False,
    )
    for sql in VIEWS.values():
        op.execute(sql)


def downgrade() -> None:
    for name in reversed(list(VIEWS)):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.drop_table("layer_stats")
    op.drop_index(op.f("ix_metrics_trial_id_name_value"), table_name="metrics")
    op.drop_table("metrics")
    op.drop_index(op.f("ix_trials_sweep_id_status"), table_name="trials")
    op.drop_table("trials")
    op.drop_table("sweeps")
