"""Console sign-outs: sessions ended before their cookie's expiry.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from daemon.store.tables import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # No index on expires_at: rows live at most a session's length (12 h by default)
    # and only a sign-out scans them, to drop the expired ones.
    op.create_table(
        "console_signouts",
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("session_id", name="pk_console_signouts"),
    )


def downgrade() -> None:
    op.drop_table("console_signouts")
