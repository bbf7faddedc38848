"""A counter the database moves when alert links or alert states change outside ingest.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# The ingest writer keeps what the links of open incidents add up to (their CIs, which
# of those still fire, the worst severity) between batches instead of reading a large
# incident whole every batch (`store.link_memory`). What it keeps stays true while
# nothing but its own batches changes `incident_alerts` or an alert's status, CI or
# severity. These triggers make every other writer, now or later, in this process or
# not (a hand resolve that resolves alerts, another replica, someone at a SQL prompt),
# move `link_changes.n`; the writer compares `n` with what it left at its last commit.
#
# An ingest batch marks itself (SQLite: the row's `ingesting` flag, set at its start and
# cleared in its last statement; PostgreSQL: a transaction-local setting) so that its own
# changes, which it applies to what it keeps as it makes them, do not count.
_TRIGGERS_SQLITE = {
    "tr_incident_alerts_insert_link_changes": "AFTER INSERT ON incident_alerts",
    "tr_incident_alerts_delete_link_changes": "AFTER DELETE ON incident_alerts",
    "tr_incident_alerts_update_link_changes":
        "AFTER UPDATE OF incident_id, alert_id ON incident_alerts",
    "tr_alerts_update_link_changes": "AFTER UPDATE OF status, ci_id, severity ON alerts",
    "tr_alerts_delete_link_changes": "AFTER DELETE ON alerts",
}

# PostgreSQL: deferred to the commit, so a writer takes the counter's row lock last,
# holding no lock an ingest batch could be waiting for (no deadlock), and the counter
# moves in the same commit as the change it announces; once per transaction.
_FUNCTION_PG = """
CREATE FUNCTION incidentd_link_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('incidentd.link_changed', true), '') <> 'on' THEN
        UPDATE link_changes SET n = n + 1 WHERE id = 1;
        PERFORM set_config('incidentd.link_changed', 'on', true);
    END IF;
    RETURN NULL;
END $$
"""
_NOT_INGEST_PG = "coalesce(current_setting('incidentd.ingesting', true), '') <> 'on'"
_TRIGGERS_PG = {
    "tr_incident_alerts_link_changes":
        "AFTER INSERT OR DELETE OR UPDATE OF incident_id, alert_id ON incident_alerts",
    "tr_alerts_link_changes": "AFTER DELETE OR UPDATE OF status, ci_id, severity ON alerts",
}


def upgrade() -> None:
    op.create_table(
        "link_changes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("ingesting", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_link_changes"),
    )
    op.execute("INSERT INTO link_changes (id, n, ingesting) VALUES (1, 0, false)")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_FUNCTION_PG)
        for name, event in _TRIGGERS_PG.items():
            op.execute(f"CREATE CONSTRAINT TRIGGER {name} {event} DEFERRABLE INITIALLY "
                       f"DEFERRED FOR EACH ROW WHEN ({_NOT_INGEST_PG}) "
                       "EXECUTE FUNCTION incidentd_link_changed()")
    else:
        for name, event in _TRIGGERS_SQLITE.items():
            op.execute(f"CREATE TRIGGER {name} {event} "
                       "WHEN (SELECT ingesting FROM link_changes WHERE id = 1) = 0 "
                       "BEGIN UPDATE link_changes SET n = n + 1 WHERE id = 1; END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name, event in _TRIGGERS_PG.items():
            table = event.rsplit(" ON ", 1)[1]
            op.execute(f"DROP TRIGGER {name} ON {table}")
        op.execute("DROP FUNCTION incidentd_link_changed()")
    else:
        for name in _TRIGGERS_SQLITE:
            op.execute(f"DROP TRIGGER {name}")
    op.drop_table("link_changes")
