"""Alerts, incidents, their links and the incident timeline.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from daemon.store.tables import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("integration", sa.String(64), nullable=False),
        sa.Column("fingerprint", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("annotations", sa.JSON(), nullable=False),
        sa.Column("starts_at", UTCDateTime(), nullable=False),
        sa.Column("ends_at", UTCDateTime(), nullable=True),
        sa.Column("generator_url", sa.Text(), nullable=True),
        sa.Column("group_key", sa.Text(), nullable=False),
        sa.Column("ci_id", sa.String(255), nullable=True),
        sa.Column("occurrences", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("first_seen", UTCDateTime(), nullable=False),
        sa.Column("last_seen", UTCDateTime(), nullable=False),
        sa.Column("resolved_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
    )
    op.create_index(
        "uq_alerts_firing_identity",
        "alerts",
        ["source", "fingerprint"],
        unique=True,
        sqlite_where=sa.text("status = 'firing'"),
        postgresql_where=sa.text("status = 'firing'"),
    )
    op.create_index("ix_alerts_status_id", "alerts", ["status", "id"])

    op.create_table(
        "incidents",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("group_key", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("acknowledged_at", UTCDateTime(), nullable=True),
        sa.Column("resolved_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_incidents"),
    )
    op.create_index("ix_incidents_status_id", "incidents", ["status", "id"])
    op.create_index("ix_incidents_group_key_status", "incidents", ["group_key", "status"])

    op.create_table(
        "incident_alerts",
        sa.Column("incident_id", _ID, nullable=False),
        sa.Column("alert_id", _ID, nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("added_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"],
            name="fk_incident_alerts_incident_id_incidents", ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["alerts.id"],
            name="fk_incident_alerts_alert_id_alerts", ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("incident_id", "alert_id", name="pk_incident_alerts"),
    )
    op.create_index("ix_incident_alerts_alert_id", "incident_alerts", ["alert_id"])

    op.create_table(
        "timeline",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("incident_id", _ID, nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"],
            name="fk_timeline_incident_id_incidents", ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_timeline"),
    )
    op.create_index("ix_timeline_incident_id_id", "timeline", ["incident_id", "id"])


def downgrade() -> None:
    op.drop_table("timeline")
    op.drop_table("incident_alerts")
    op.drop_table("incidents")
    op.drop_index("uq_alerts_firing_identity", table_name="alerts")
    op.drop_table("alerts")
