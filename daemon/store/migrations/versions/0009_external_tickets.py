"""ITSM suite connectors: the external ticket of each (incident, connector).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from daemon.store.tables import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "external_tickets",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("incident_id", _ID, nullable=False),
        sa.Column("connector", sa.String(64), nullable=False),
        sa.Column("external_id", sa.String(255), nullable=False),
        sa.Column("external_key", sa.String(255), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_external_tickets"),
        sa.UniqueConstraint("incident_id", "connector",
                            name="uq_external_tickets_incident_id_connector"),
    )
    op.create_index("ix_external_tickets_connector_external_id", "external_tickets",
                    ["connector", "external_id"])
    op.create_index("ix_external_tickets_connector_external_key", "external_tickets",
                    ["connector", "external_key"])


def downgrade() -> None:
    op.drop_table("external_tickets")
