"""The schema, as SQLAlchemy Core tables. Alembic migrations create it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)


def in_utc(value: datetime) -> datetime:
    """An aware time in UTC; a naive one is refused (its zone would be a guess)."""
    if value.tzinfo is None:
        raise ValueError("naive datetime given to the store; use aware UTC datetimes")
    return value.astimezone(UTC)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite and PostgreSQL alike."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = in_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
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
    sa.Column("links", sa.JSON(), nullable=False, server_default="[]"),
    sa.Column("details", sa.JSON(), nullable=False, server_default="{}"),
    sa.Column("occurrences", sa.Integer(), nullable=False, server_default="1"),
    sa.Column("flapping", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("first_seen", UTCDateTime(), nullable=False),
    sa.Column("last_seen", UTCDateTime(), nullable=False),
    sa.Column("resolved_at", UTCDateTime(), nullable=True),
    # At most one firing alert per identity: the dedup upsert's conflict target.
    sa.Index(
        "uq_alerts_firing_identity",
        "source",
        "fingerprint",
        unique=True,
        sqlite_where=sa.text("status = 'firing'"),
        postgresql_where=sa.text("status = 'firing'"),
    ),
    sa.Index("ix_alerts_status_id", "status", "id"),
    sa.Index("ix_alerts_identity_first_seen", "source", "fingerprint", "first_seen"),
    # The correlator's window: bound alerts seen recently (migration 0010).
    sa.Index(
        "ix_alerts_bound_last_seen",
        "last_seen",
        sqlite_where=sa.text("ci_id IS NOT NULL"),
        postgresql_where=sa.text("ci_id IS NOT NULL"),
    ),
)

incidents = sa.Table(
    "incidents",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("title", sa.Text(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("group_key", sa.Text(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("acknowledged_at", UTCDateTime(), nullable=True),
    sa.Column("resolved_at", UTCDateTime(), nullable=True),
    sa.Column("root_cause_ci", sa.String(255), nullable=True),
    sa.Column("priority", sa.String(2), nullable=True),
    sa.Column("impact", sa.Integer(), nullable=True),
    sa.Column("urgency", sa.Integer(), nullable=True),
    # Set by hand: the matrix no longer recomputes it.
    sa.Column("priority_manual", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("closed_at", UTCDateTime(), nullable=True),
    sa.Column("impacted_cis", sa.JSON(), nullable=False, server_default="[]"),
    sa.Column("impacted_services", sa.JSON(), nullable=False, server_default="[]"),
    sa.Column("merged_into", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
    # The alert name of the alert that opened it: with the root-cause CI, what
    # recurring-incident (problem) detection compares.
    sa.Column("alert_name", sa.String(255), nullable=True),
    # When one of its alerts bound to a CI was last seen (the newest of their last_seen):
    # the correlator's test of an incident still active (migration 0014).
    sa.Column("last_alert_at", UTCDateTime(), nullable=True),
    sa.Index("ix_incidents_status_id", "status", "id"),
    sa.Index("ix_incidents_last_alert_at", "last_alert_at",
             sqlite_where=sa.text("last_alert_at IS NOT NULL"),
             postgresql_where=sa.text("last_alert_at IS NOT NULL")),
    sa.Index("ix_incidents_root_cause_ci_alert_name", "root_cause_ci", "alert_name"),
    sa.Index("ix_incidents_group_key_status", "group_key", "status"),
)

incident_alerts = sa.Table(
    "incident_alerts",
    metadata,
    sa.Column(
        "incident_id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        sa.ForeignKey("incidents.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column(
        "alert_id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        sa.ForeignKey("alerts.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    # How the alert relates to the incident: `trigger` opened it, `member` joined later.
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("added_at", UTCDateTime(), nullable=False),
    sa.Index("ix_incident_alerts_alert_id", "alert_id"),
    # The runbook triggers' alerts linked in this batch (migration 0012).
    sa.Index("ix_incident_alerts_incident_id_added_at", "incident_id", "added_at"),
)

# Moved by the database whenever alert links or alert states change outside an ingest
# batch (triggers, migration 0013): what tells the ingest writer that what it keeps of
# the open incidents' links is stale (`store.link_memory`). One row, id 1. `ingesting`
# is set by a batch on SQLite so that its own changes do not count (PostgreSQL uses a
# transaction-local setting instead: a column would be a row lock held all batch).
link_changes = sa.Table(
    "link_changes",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("n", sa.BigInteger(), nullable=False),
    sa.Column("ingesting", sa.Boolean(), nullable=False),
)

timeline = sa.Table(
    "timeline",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column(
        "incident_id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        sa.ForeignKey("incidents.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("detail", sa.JSON(), nullable=False),
    sa.Index("ix_timeline_incident_id_id", "incident_id", "id"),
)

changes = sa.Table(
    "changes",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("integration", sa.String(64), nullable=False),
    sa.Column("summary", sa.Text(), nullable=False),
    sa.Column("source", sa.Text(), nullable=True),
    # When the change happened, as the sender said; received_at is when we heard of it.
    sa.Column("occurred_at", UTCDateTime(), nullable=False),
    sa.Column("received_at", UTCDateTime(), nullable=False),
    sa.Column("details", sa.JSON(), nullable=False),
    sa.Column("links", sa.JSON(), nullable=False),
    # ITSM change record fields (a PagerDuty change event is a completed standard change).
    sa.Column("type", sa.String(16), nullable=False, server_default="standard"),
    sa.Column("state", sa.String(16), nullable=False, server_default="completed"),
    sa.Column("cis", sa.JSON(), nullable=False, server_default="[]"),
    sa.Column("planned_start", UTCDateTime(), nullable=True),
    sa.Column("planned_end", UTCDateTime(), nullable=True),
    sa.Column("approver", sa.String(255), nullable=True),
    sa.Column("outcome", sa.String(16), nullable=True),
    sa.Column("description", sa.Text(), nullable=True),
    sa.Column("updated_at", UTCDateTime(), nullable=True),
    sa.Index("ix_changes_occurred_at", "occurred_at"),
    sa.Index("ix_changes_state_planned_end", "state", "planned_end"),
)

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _incident_fk() -> sa.Column[Any]:
    return sa.Column("incident_id", _ID, sa.ForeignKey("incidents.id", ondelete="CASCADE"),
                     primary_key=True)


# One row per incident and SLA clock (`response`, `resolution`). Business time
# elapsed is `elapsed_seconds` up to `since`, plus the calendar's time from
# `since` to now while it runs (`since` is NULL when paused or stopped).
sla_clocks = sa.Table(
    "sla_clocks",
    metadata,
    _incident_fk(),
    sa.Column("clock", sa.String(16), primary_key=True),
    sa.Column("policy", sa.String(64), nullable=False),
    sa.Column("priority", sa.String(2), nullable=False),
    sa.Column("target_seconds", sa.Integer(), nullable=False),
    sa.Column("elapsed_seconds", sa.Float(), nullable=False, server_default="0"),
    sa.Column("since", UTCDateTime(), nullable=True),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    # running | met | breached | cancelled; `paused` is separate (a breached clock can pause)
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("paused", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("warned", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("due_at", UTCDateTime(), nullable=True),
    sa.Column("breached_at", UTCDateTime(), nullable=True),
    sa.Column("stopped_at", UTCDateTime(), nullable=True),
    # When the sweep must look at it next (a warning or the breach); NULL: never.
    sa.Column("next_check_at", UTCDateTime(), nullable=True),
    sa.Index("ix_sla_clocks_next_check_at", "next_check_at"),
)

# The escalation state of an incident: which level of which policy was notified.
escalations = sa.Table(
    "escalations",
    metadata,
    _incident_fk(),
    sa.Column("policy", sa.String(64), nullable=False),
    sa.Column("level", sa.Integer(), nullable=False),  # 0-based index into the levels
    sa.Column("cycle", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("state", sa.String(16), nullable=False),  # active | stopped | exhausted
    sa.Column("next_at", UTCDateTime(), nullable=True),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Index("ix_escalations_next_at", "next_at"),
)

problems = sa.Table(
    "problems",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("title", sa.Text(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # open | known_error | resolved | closed
    sa.Column("root_cause_ci", sa.String(255), nullable=True),
    sa.Column("alert_name", sa.String(255), nullable=True),
    sa.Column("description", sa.Text(), nullable=True),
    sa.Column("workaround", sa.Text(), nullable=True),
    sa.Column("created_by", sa.String(255), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("resolved_at", UTCDateTime(), nullable=True),
    sa.Index("ix_problems_root_cause_ci_alert_name", "root_cause_ci", "alert_name"),
)

problem_incidents = sa.Table(
    "problem_incidents",
    metadata,
    sa.Column("problem_id", _ID, sa.ForeignKey("problems.id", ondelete="CASCADE"),
              primary_key=True),
    _incident_fk(),
    sa.Column("linked_at", UTCDateTime(), nullable=False),
    sa.Index("ix_problem_incidents_incident_id", "incident_id"),
)

# Alerts that fired on a CI under an approved change's maintenance window.
change_alerts = sa.Table(
    "change_alerts",
    metadata,
    sa.Column("change_id", _ID, sa.ForeignKey("changes.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("alert_id", _ID, sa.ForeignKey("alerts.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("linked_at", UTCDateTime(), nullable=False),
    sa.Index("ix_change_alerts_alert_id", "alert_id"),
)

# Changes suspected of causing an incident (on its CIs or upstream, shortly before).
change_incidents = sa.Table(
    "change_incidents",
    metadata,
    sa.Column("change_id", _ID, sa.ForeignKey("changes.id", ondelete="CASCADE"),
              primary_key=True),
    _incident_fk(),
    sa.Column("linked_at", UTCDateTime(), nullable=False),
    sa.Index("ix_change_incidents_incident_id", "incident_id"),
)

cis = sa.Table(
    "cis",
    metadata,
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("name", sa.Text(), nullable=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("service", sa.String(255), nullable=True),
    sa.Column("owner_group", sa.String(255), nullable=True),
    sa.Column("criticality", sa.Integer(), nullable=False),
    sa.Column("environment", sa.String(64), nullable=True),
    sa.Column("attributes", sa.JSON(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Index("ix_cis_type", "type"),
    sa.Index("ix_cis_service", "service"),
)

# `ci_id` depends on `depends_on`. No foreign keys: a whole-file import is
# validated before it is written, and edges are replaced with their CI.
ci_edges = sa.Table(
    "ci_edges",
    metadata,
    sa.Column("ci_id", sa.String(255), primary_key=True),
    sa.Column("depends_on", sa.String(255), primary_key=True),
    sa.Index("ix_ci_edges_depends_on", "depends_on"),
)

# The outbox: one row per (event, target), written in the transaction of the
# change that caused the event; the sender delivers it, retrying, until it is
# delivered or dead. `event_id` is the same on every attempt and every target.
notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("event_id", sa.String(64), nullable=False),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("incident_id", _ID, nullable=True),
    # The timeline entry the event was made from, when it was (most are).
    sa.Column("timeline_id", _ID, nullable=True),
    sa.Column("target", sa.String(64), nullable=False),
    sa.Column("payload", sa.JSON(), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # pending | delivered | dead
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("last_status", sa.Integer(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("delivered_at", UTCDateTime(), nullable=True),
    sa.UniqueConstraint("event_id", "target"),
    sa.Index("ix_notifications_state_next_attempt_at", "state", "next_attempt_at"),
    sa.Index("ix_notifications_incident_id", "incident_id"),
)

# Signed action links work once: the nonce of each one used.
used_action_tokens = sa.Table(
    "used_action_tokens",
    metadata,
    sa.Column("nonce", sa.String(64), primary_key=True),
    sa.Column("incident_id", _ID, nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("used_at", UTCDateTime(), nullable=False),
)

# Console sessions ended by "Sign out" before their expiry (the cookie is signed and
# kept by the browser, so a copy would otherwise still work): the session's nonce,
# kept until the cookie would have expired anyway.
console_signouts = sa.Table(
    "console_signouts",
    metadata,
    sa.Column("session_id", sa.String(64), primary_key=True),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
)

# One row per runbook run: what triggered it, its guard decisions, and each step's
# rendered input and output (a JSON list, appended as steps finish, so a restart
# knows how far a run got).
runbook_runs = sa.Table(
    "runbook_runs",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("runbook", sa.String(128), nullable=False),
    sa.Column("incident_id", _ID, nullable=True),
    sa.Column("alert_id", _ID, nullable=True),
    sa.Column("ci_id", sa.String(255), nullable=True),
    # pending_approval | queued | running | succeeded | failed | denied | expired |
    # interrupted | skipped
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("dry_run", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("trigger", sa.String(16), nullable=False),  # alert | manual
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("approver", sa.String(255), nullable=True),
    sa.Column("params", sa.JSON(), nullable=False),
    sa.Column("context", sa.JSON(), nullable=False),  # alert, incident, CI as rendered from
    sa.Column("steps", sa.JSON(), nullable=False, server_default="[]"),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=True),
    sa.Column("finished_at", UTCDateTime(), nullable=True),
    sa.Column("approval_expires_at", UTCDateTime(), nullable=True),
    # The process running it, and when that process last said it still does: a
    # run whose owner fell silent is interrupted, on whichever replica notices.
    sa.Column("owner", sa.String(64), nullable=True),
    sa.Column("heartbeat_at", UTCDateTime(), nullable=True),
    sa.Index("ix_runbook_runs_status_id", "status", "id"),
    sa.Index("ix_runbook_runs_runbook_ci_id_created_at", "runbook", "ci_id", "created_at"),
    sa.Index("ix_runbook_runs_incident_id", "incident_id"),
    # One run per runbook and triggering alert: ingest may see the same alert twice.
    sa.Index("uq_runbook_runs_runbook_incident_id_alert_id", "runbook", "incident_id",
             "alert_id", unique=True),
    # The per-CI lock: at most one running run per CI, on every replica.
    sa.Index("uq_runbook_runs_running_ci", "ci_id", unique=True,
             sqlite_where=sa.text("status = 'running'"),
             postgresql_where=sa.text("status = 'running'")),
)

# Per runbook: the circuit breaker. The row named `*` is the global kill switch.
runbook_state = sa.Table(
    "runbook_state",
    metadata,
    sa.Column("runbook", sa.String(128), primary_key=True),
    sa.Column("consecutive_failures", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("reason", sa.Text(), nullable=True),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

# The ticket each ITSM suite connector keeps for an incident (ServiceNow sys_id and
# number, Jira issue id and key, a generic tool's id): stored once the suite made it,
# so every later event updates that ticket instead of opening another.
external_tickets = sa.Table(
    "external_tickets",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("incident_id", _ID, nullable=False),
    sa.Column("connector", sa.String(64), nullable=False),
    sa.Column("external_id", sa.String(255), nullable=False),
    sa.Column("external_key", sa.String(255), nullable=True),
    sa.Column("url", sa.Text(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("incident_id", "connector"),
    # Inbound updates name the suite's ticket: find the incident from it.
    sa.Index("ix_external_tickets_connector_external_id", "connector", "external_id"),
    sa.Index("ix_external_tickets_connector_external_key", "connector", "external_key"),
)
