"""CMDB (CIs and dependency edges); incident root cause, impact and merges; flapping alerts.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from daemon.store.tables import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "cis",
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("service", sa.String(255), nullable=True),
        sa.Column("owner_group", sa.String(255), nullable=True),
        sa.Column("criticality", sa.Integer(), nullable=False),
        sa.Column("environment", sa.String(64), nullable=True),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_cis"),
    )
    op.create_index("ix_cis_type", "cis", ["type"])
    op.create_index("ix_cis_service", "cis", ["service"])
    op.create_table(
        "ci_edges",
        sa.Column("ci_id", sa.String(255), nullable=False),
        sa.Column("depends_on", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("ci_id", "depends_on", name="pk_ci_edges"),
    )
    op.create_index("ix_ci_edges_depends_on", "ci_edges", ["depends_on"])
    with op.batch_alter_table("incidents") as batch:
        batch.add_column(sa.Column("root_cause_ci", sa.String(255), nullable=True))
        batch.add_column(sa.Column("impacted_cis", sa.JSON(), nullable=False,
                                   server_default="[]"))
        batch.add_column(sa.Column("impacted_services", sa.JSON(), nullable=False,
                                   server_default="[]"))
        batch.add_column(sa.Column("merged_into", _ID, nullable=True))
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(sa.Column("flapping", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
    op.create_index("ix_alerts_identity_first_seen", "alerts",
                    ["source", "fingerprint", "first_seen"])


def downgrade() -> None:
    op.drop_index("ix_alerts_identity_first_seen", table_name="alerts")
    with op.batch_alter_table("alerts") as batch:
        batch.drop_column("flapping")
    with op.batch_alter_table("incidents") as batch:
        for column in ("merged_into", "impacted_services", "impacted_cis", "root_cause_ci"):
            batch.drop_column(column)
    op.drop_table("ci_edges")
    op.drop_table("cis")
