"""When an incident's bound alerts were last seen, kept on the incident.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

# The correlator asks every ingest batch which open incidents were active within its
# window: the newest `last_seen` of their alerts bound to a CI. Worked out from the
# alerts, that read every link of every open incident (thousands for a large one);
# kept on the incident, it is a column of the few open incidents, and an index on it
# finds those seen within the window without reading the others.
_BACKFILL = """
UPDATE incidents SET last_alert_at = (
    SELECT max(alerts.last_seen) FROM incident_alerts
    JOIN alerts ON alerts.id = incident_alerts.alert_id
    WHERE incident_alerts.incident_id = incidents.id AND alerts.ci_id IS NOT NULL)
"""


# Partial: incidents with no bound alert (grouped by labels alone) never take part.
_BOUND = sa.text("last_alert_at IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("incidents") as batch:
        batch.add_column(sa.Column("last_alert_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(_BACKFILL)
    op.create_index("ix_incidents_last_alert_at", "incidents", ["last_alert_at"],
                    sqlite_where=_BOUND, postgresql_where=_BOUND)


def downgrade() -> None:
    op.drop_index("ix_incidents_last_alert_at", table_name="incidents")
    with op.batch_alter_table("incidents") as batch:
        batch.drop_column("last_alert_at")
