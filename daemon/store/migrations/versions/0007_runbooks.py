"""Runbook runs and runbook state (circuit breakers, the kill switch).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from daemon.store.tables import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "runbook_runs",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("runbook", sa.String(128), nullable=False),
        sa.Column("incident_id", _ID, nullable=True),
        sa.Column("alert_id", _ID, nullable=True),
        sa.Column("ci_id", sa.String(255), nullable=True),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("approver", sa.String(255), nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("context", sa.JSON(), nullable=False),
        sa.Column("steps", sa.JSON(), nullable=False, server_default="[]"),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("approval_expires_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_runbook_runs"),
    )
    op.create_index("ix_runbook_runs_status_id", "runbook_runs", ["status", "id"])
    op.create_index("ix_runbook_runs_runbook_ci_id_created_at", "runbook_runs",
                    ["runbook", "ci_id", "created_at"])
    op.create_index("ix_runbook_runs_incident_id", "runbook_runs", ["incident_id"])
    op.create_index("uq_runbook_runs_runbook_incident_id_alert_id", "runbook_runs",
                    ["runbook", "incident_id", "alert_id"], unique=True)
    op.create_index("uq_runbook_runs_running_ci", "runbook_runs", ["ci_id"], unique=True,
                    sqlite_where=sa.text("status = 'running'"),
                    postgresql_where=sa.text("status = 'running'"))
    op.create_table(
        "runbook_state",
        sa.Column("runbook", sa.String(128), primary_key=True),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("runbook", name="pk_runbook_state"),
    )


def downgrade() -> None:
    op.drop_table("runbook_state")
    op.drop_table("runbook_runs")
