"""PostgreSQL: metric_values' primary key carries the value (INCLUDE), so the views' final and
best values and a trial's curve are read from the key's index alone (index-only scans) instead
of one heap page per epoch. SQLite needs nothing: its table is clustered on the key already
(WITHOUT ROWID, migration 0007).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03

Frozen: never import db.models or db.views here. The key is rebuilt in one ALTER TABLE (one
pass over the table); INCLUDE needs PostgreSQL 11 or later.
"""

from __future__ import annotations

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

KEY = "pk_metric_values PRIMARY KEY (trial_id, name_id, epoch)"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE metric_values DROP CONSTRAINT pk_metric_values, ADD CONSTRAINT {KEY} INCLUDE (value)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE metric_values DROP CONSTRAINT pk_metric_values, ADD CONSTRAINT {KEY}")
