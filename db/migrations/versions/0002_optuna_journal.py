"""The optuna_journal table: the Optuna study of an optuna sweep, kept in the result store.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03

Frozen like 0001: never import db.models here.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    op.create_table(
        "optuna_journal",
        sa.Column("id", sa.Integer(), nullable=False, comment="Surrogate key."),
        sa.Column("sweep_id", sa.Integer(), nullable=False, comment="The sweep whose study the log belongs to."),
        sa.Column("seq", sa.Integer(), nullable=False, comment="The log's number within the sweep's journal (0-based, consecutive)."),
        sa.Column("log", sa.Text(), nullable=False, comment="One Optuna journal log (an operation on the study) as JSON."),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, comment="When the log was appended (UTC)."),
        sa.ForeignKeyConstraint(["sweep_id"], ["sweeps.id"], name=op.f("fk_optuna_journal_sweep_id_sweeps"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_optuna_journal")),
        sa.UniqueConstraint("sweep_id", "seq", name=op.f("uq_optuna_journal_sweep_id_seq")),
        comment="The Optuna study of each optuna sweep, as Optuna's journal: one row per log.",
    )
    op.create_index(op.f("ix_optuna_journal_sweep_id"), "optuna_journal", ["sweep_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_optuna_journal_sweep_id"), table_name="optuna_journal")
    op.drop_table("optuna_journal")
