"""ITSM core: SLA clocks, escalations, problems, change records and their links.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from daemon.store.tables import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _incident_fk() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column("incident_id", _ID,
                     sa.ForeignKey("incidents.id", ondelete="CASCADE",
                                   name=None), primary_key=True)


def upgrade() -> None:
    with op.batch_alter_table("incidents") as batch:
        batch.add_column(sa.Column("alert_name", sa.String(255), nullable=True))
    op.create_index("ix_incidents_root_cause_ci_alert_name", "incidents",
                    ["root_cause_ci", "alert_name"])
    with op.batch_alter_table("changes") as batch:
        batch.add_column(sa.Column("type", sa.String(16), nullable=False,
                                   server_default="standard"))
        batch.add_column(sa.Column("state", sa.String(16), nullable=False,
                                   server_default="completed"))
        batch.add_column(sa.Column("cis", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("planned_start", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("planned_end", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("approver", sa.String(255), nullable=True))
        batch.add_column(sa.Column("outcome", sa.String(16), nullable=True))
        batch.add_column(sa.Column("description", sa.Text(), nullable=True))
        batch.add_column(sa.Column("updated_at", UTCDateTime(), nullable=True))
    op.create_index("ix_changes_state_planned_end", "changes", ["state", "planned_end"])

    op.create_table(
        "sla_clocks",
        _incident_fk(),
        sa.Column("clock", sa.String(16), primary_key=True),
        sa.Column("policy", sa.String(64), nullable=False),
        sa.Column("priority", sa.String(2), nullable=False),
        sa.Column("target_seconds", sa.Integer(), nullable=False),
        sa.Column("elapsed_seconds", sa.Float(), nullable=False, server_default="0"),
        sa.Column("since", UTCDateTime(), nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("warned", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("due_at", UTCDateTime(), nullable=True),
        sa.Column("breached_at", UTCDateTime(), nullable=True),
        sa.Column("stopped_at", UTCDateTime(), nullable=True),
        sa.Column("next_check_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("incident_id", "clock", name="pk_sla_clocks"),
    )
    op.create_index("ix_sla_clocks_next_check_at", "sla_clocks", ["next_check_at"])
    op.create_table(
        "escalations",
        _incident_fk(),
        sa.Column("policy", sa.String(64), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("cycle", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("next_at", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("incident_id", name="pk_escalations"),
    )
    op.create_index("ix_escalations_next_at", "escalations", ["next_at"])
    op.create_table(
        "problems",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("root_cause_ci", sa.String(255), nullable=True),
        sa.Column("alert_name", sa.String(255), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("workaround", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("resolved_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_problems"),
    )
    op.create_index("ix_problems_root_cause_ci_alert_name", "problems",
                    ["root_cause_ci", "alert_name"])
    op.create_table(
        "problem_incidents",
        sa.Column("problem_id", _ID, sa.ForeignKey("problems.id", ondelete="CASCADE"),
                  primary_key=True),
        _incident_fk(),
        sa.Column("linked_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("problem_id", "incident_id", name="pk_problem_incidents"),
    )
    op.create_index("ix_problem_incidents_incident_id", "problem_incidents", ["incident_id"])
    for name, other, column in (("change_alerts", "alerts", "alert_id"),
                                ("change_incidents", "incidents", "incident_id")):
        op.create_table(
            name,
            sa.Column("change_id", _ID, sa.ForeignKey("changes.id", ondelete="CASCADE"),
                      primary_key=True),
            sa.Column(column, _ID, sa.ForeignKey(f"{other}.id", ondelete="CASCADE"),
                      primary_key=True),
            sa.Column("linked_at", UTCDateTime(), nullable=False),
            sa.PrimaryKeyConstraint("change_id", column, name=f"pk_{name}"),
        )
        op.create_index(f"ix_{name}_{column}", name, [column])


def downgrade() -> None:
    for name in ("change_incidents", "change_alerts", "problem_incidents", "problems",
                 "escalations", "sla_clocks"):
        op.drop_table(name)
    op.drop_index("ix_changes_state_planned_end", "changes")
    with op.batch_alter_table("changes") as batch:
        for column in ("updated_at", "description", "outcome", "approver", "planned_end",
                       "planned_start", "cis", "state", "type"):
            batch.drop_column(column)
    op.drop_index("ix_incidents_root_cause_ci_alert_name", "incidents")
    with op.batch_alter_table("incidents") as batch:
        batch.drop_column("alert_name")
