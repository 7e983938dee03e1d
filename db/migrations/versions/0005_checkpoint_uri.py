"""trials.checkpoint_uri: where each trial's latest checkpoint lies (a path or an object-store URI).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

Frozen like 0001: never import db.models here.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

COMMENT = ("The trial's latest checkpoint directory as Ray Tune saved it: a local path, or a URI "
           "such as s3://bucket/prefix/... (NULL until its first checkpoint).")


def upgrade() -> None:
    op.add_column("trials", sa.Column("checkpoint_uri", sa.Text(), nullable=True, comment=COMMENT))


def downgrade() -> None:
    op.drop_column("trials", "checkpoint_uri")
