"""The runbook triggers' read of the alerts just linked: incident_alerts by (incident, added_at).

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


# `store.runbooks.linked_at` asks, every ingest batch, for the links an incident got at
# one instant; without this index that scans all the links of the incident (thousands
# for a large one) to find the few of this batch.
def upgrade() -> None:
    op.create_index("ix_incident_alerts_incident_id_added_at", "incident_alerts",
                    ["incident_id", "added_at"])


def downgrade() -> None:
    op.drop_index("ix_incident_alerts_incident_id_added_at", table_name="incident_alerts")
