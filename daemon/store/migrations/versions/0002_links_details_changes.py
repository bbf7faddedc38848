"""Alert links and details; change records (PagerDuty change events).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from daemon.store.tables import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(sa.Column("links", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("details", sa.JSON(), nullable=False, server_default="{}"))
    op.create_table(
        "changes",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("integration", sa.String(64), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("links", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_changes"),
    )
    op.create_index("ix_changes_occurred_at", "changes", ["occurred_at"])


def downgrade() -> None:
    op.drop_table("changes")
    with op.batch_alter_table("alerts") as batch:
        batch.drop_column("details")
        batch.drop_column("links")
