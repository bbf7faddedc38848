"""The correlator's window test: bound alerts by last_seen.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# Partial: unbound alerts never take part in topology correlation, so their
# last_seen updates (every re-fire) need not maintain this index.
_BOUND = sa.text("ci_id IS NOT NULL")


def upgrade() -> None:
    op.create_index("ix_alerts_bound_last_seen", "alerts", ["last_seen"],
                    sqlite_where=_BOUND, postgresql_where=_BOUND)


def downgrade() -> None:
    op.drop_index("ix_alerts_bound_last_seen", table_name="alerts")
