"""Incident priority (impact by urgency, or set by hand) and closing.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from daemon.store.tables import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("incidents") as batch:
        batch.add_column(sa.Column("priority", sa.String(2), nullable=True))
        batch.add_column(sa.Column("impact", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("urgency", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("priority_manual", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
        batch.add_column(sa.Column("closed_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("incidents") as batch:
        for column in ("closed_at", "priority_manual", "urgency", "impact", "priority"):
            batch.drop_column(column)
