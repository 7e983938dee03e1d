"""Where each trial ran: trials.node_ip, hostname, attempts, and one trial_attempts row per attempt.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

Frozen like 0001: never import db.models here.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    # plain ALTERs (SQLite >= 3.35 drops columns itself): a batch copy of `trials` would break
    # the views that read it
    op.add_column("trials", sa.Column("node_ip", sa.String(64), nullable=True,
                                   comment="IP of the Ray node that ran the trial's latest attempt."))
    op.add_column("trials", sa.Column("hostname", sa.String(255), nullable=True,
                                      comment="Host name of the node that ran the trial's latest attempt."))
    op.add_column("trials", sa.Column("attempts", sa.Integer(), server_default="0", nullable=False,
                                      comment="How many times the trial was started: 1 + restarts (0: never started)."))
    op.create_table(
        "trial_attempts",
        sa.Column("id", sa.Integer(), nullable=False, comment="Surrogate key."),
        sa.Column("trial_id", sa.Integer(), nullable=False, comment="The trial this attempt ran."),
        sa.Column("attempt", sa.Integer(), nullable=False, comment="1-based number of the attempt within its trial."),
        sa.Column("node_ip", sa.String(64), nullable=True, comment="IP of the Ray node the attempt ran on (NULL: never known)."),
        sa.Column("hostname", sa.String(255), nullable=True, comment="Host name of that node."),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False, comment="When the attempt started (UTC)."),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True, comment="When it ended (UTC); NULL while it runs."),
        sa.Column("error", sa.Text(), nullable=True, comment="Why the attempt failed; NULL if it did not."),
        sa.ForeignKeyConstraint(["trial_id"], ["trials.id"], name=op.f("fk_trial_attempts_trial_id_trials"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trial_attempts")),
        sa.UniqueConstraint("trial_id", "attempt", name=op.f("uq_trial_attempts_trial_id_attempt")),
        comment="Every attempt of every trial: a failure and its host stay after a successful retry.",
    )


def downgrade() -> None:
    op.drop_table("trial_attempts")
    for column in ("attempts", "hostname", "node_ip"):
        op.drop_column("trials", column)
