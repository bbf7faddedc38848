"""The notification outbox and used action-link nonces.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from daemon.store.tables import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("incident_id", _ID, nullable=True),
        sa.Column("timeline_id", _ID, nullable=True),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("delivered_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_notifications"),
        sa.UniqueConstraint("event_id", "target", name="uq_notifications_event_id_target"),
    )
    op.create_index("ix_notifications_state_next_attempt_at", "notifications",
                    ["state", "next_attempt_at"])
    op.create_index("ix_notifications_incident_id", "notifications", ["incident_id"])
    op.create_table(
        "used_action_tokens",
        sa.Column("nonce", sa.String(64), primary_key=True),
        sa.Column("incident_id", _ID, nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("nonce", name="pk_used_action_tokens"),
    )


def downgrade() -> None:
    op.drop_table("used_action_tokens")
    op.drop_table("notifications")
