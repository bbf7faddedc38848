"""Every Prometheus metric the daemon exports, defined once, in one registry.

Label values are bounded: sources, priorities, statuses, outcomes and reasons are
fixed sets; `service` names a business-service CI of the CMDB; `runbook`,
`target` and `policy` name entries of the configuration. No label ever holds an
incident id, an alert fingerprint or free text.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)

from daemon import __version__

# `_created` series double the exposition and no dashboard of ours reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]
REGISTRY = CollectorRegistry(auto_describe=True)

# Automation resolves in seconds, people in minutes to hours: 1 s .. 24 h, dense
# enough from 30 s to 24 h that p50/p90 of human response times mean something.
HUMAN_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 43200,
                 86400)

NO_PRIORITY = "none"  # the `priority` label of an incident not prioritised (yet)
NO_SERVICE = "none"  # the `service` label of an incident that impacts no business service
PRIORITIES = ("P1", "P2", "P3", "P4", "P5", NO_PRIORITY)
OPEN_STATUSES = ("triggered", "acknowledged", "on_hold")
RESOLVED_HOW = ("manual", "automatic", "automation")
ALERT_OUTCOMES = ("new", "correlated", "duplicate", "suppressed")
SLA_CLOCKS = ("response", "resolution")

BUILD_INFO = Info("incidentd_build", "Version of the running incidentd.", registry=REGISTRY)
BUILD_INFO.info({"version": __version__})

ALERTS_RECEIVED = Counter(
    "incidentd_alerts_received_total",
    "Alert events received and committed, by source format and reported status (firing,"
    " resolved, acknowledge).",
    ["source", "status"],
    registry=REGISTRY,
)
ALERTS_PROCESSED = Counter(
    "incidentd_alerts_processed_total",
    "Firing alerts by what became of them: new (opened an incident), correlated (joined an"
    " open incident, reopened a resolved one, or came back flapping), duplicate (repeat of an"
    " alert already firing), suppressed (held back by a maintenance window).",
    ["source", "outcome"],
    registry=REGISTRY,
)
ALERTS_REJECTED = Counter(
    "incidentd_alerts_rejected_total",
    "Alert requests refused, by source and reason (invalid, unauthorized, too_large, overloaded,"
    " store_unavailable).",
    ["source", "reason"],
    registry=REGISTRY,
)
ALERTS_SUPPRESSED = Counter(
    "incidentd_alerts_suppressed_total",
    "New firing alerts that opened no incident because a maintenance window (an approved"
    " change) covered their CI.",
    registry=REGISTRY,
)

INCIDENTS_OPENED = Counter(
    "incidentd_incidents_opened_total",
    "Incidents opened, by priority (as assessed when opened; none when not prioritised).",
    ["priority"],
    registry=REGISTRY,
)
INCIDENTS_RESOLVED = Counter(
    "incidentd_incidents_resolved_total",
    "Incidents resolved, by priority and how: manual (a person), automatic (all its alerts"
    " cleared), automation (a runbook resolved it, or its alerts cleared while one worked).",
    ["priority", "how"],
    registry=REGISTRY,
)
INCIDENTS_REOPENED = Counter(
    "incidentd_incidents_reopened_total",
    "Resolved incidents reopened, by hand or by an alert firing again within the window.",
    ["priority"],
    registry=REGISTRY,
)
INCIDENTS_OPEN = Gauge(
    "incidentd_incidents_open",
    "Incidents currently open, by priority and status (triggered, acknowledged, on_hold).",
    ["priority", "status"],
    registry=REGISTRY,
)
TIME_TO_ACKNOWLEDGE = Histogram(
    "incidentd_incident_time_to_acknowledge_seconds",
    "Time from an incident opening to its first acknowledgement (MTTA), by its primary"
    " impacted business service and priority.",
    ["service", "priority"],
    buckets=HUMAN_BUCKETS,
    registry=REGISTRY,
)
TIME_TO_RESOLVE = Histogram(
    "incidentd_incident_time_to_resolve_seconds",
    "Time from an incident opening to its resolution (MTTR), by its primary impacted"
    " business service and priority.",
    ["service", "priority"],
    buckets=HUMAN_BUCKETS,
    registry=REGISTRY,
)

SLA_WARNINGS = Counter(
    "incidentd_sla_warnings_total",
    "SLA clocks that crossed a warning fraction of their target, by clock and priority.",
    ["clock", "priority"],
    registry=REGISTRY,
)
SLA_BREACHES = Counter(
    "incidentd_sla_breaches_total",
    "SLA clocks that reached their target (response: not acknowledged in time; resolution:"
    " not resolved in time), by clock and priority.",
    ["clock", "priority"],
    registry=REGISTRY,
)
SLA_MET = Counter(
    "incidentd_sla_met_total",
    "SLA clocks stopped before their target, by clock and priority.",
    ["clock", "priority"],
    registry=REGISTRY,
)
ESCALATIONS = Counter(
    "incidentd_escalations_total",
    "Escalation levels notified, by policy and reason (opened, timeout, manual, restarted).",
    ["policy", "reason"],
    registry=REGISTRY,
)
PROBLEMS_OPENED = Counter(
    "incidentd_problems_opened_total",
    "Problem records opened, by how (recurrence or manual).",
    ["how"],
    registry=REGISTRY,
)

RUNBOOK_RUNS = Counter(
    "incidentd_runbook_runs_total",
    "Runbook runs finished, by runbook and outcome (succeeded, failed, dry_run, denied,"
    " expired, interrupted, skipped).",
    ["runbook", "outcome"],
    registry=REGISTRY,
)
RUNBOOK_DURATION = Histogram(
    "incidentd_runbook_duration_seconds",
    "Time from a runbook run starting to its end.",
    ["runbook"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
    registry=REGISTRY,
)
RUNBOOK_PENDING_APPROVALS = Gauge(
    "incidentd_runbook_pending_approvals",
    "Runbook runs waiting for a person to approve them.",
    registry=REGISTRY,
)

NOTIFICATIONS = Counter(
    "incidentd_notifications_total",
    "Notification delivery attempts, by target and outcome (delivered, retry, dead).",
    ["target", "outcome"],
    registry=REGISTRY,
)
OUTBOX_PENDING = Gauge(
    "incidentd_outbox_pending",
    "Notifications waiting in the outbox for delivery (including ones backing off).",
    registry=REGISTRY,
)

INGEST_DURATION = Histogram(
    "incidentd_ingest_duration_seconds",
    "Time to dedup, correlate and commit one ingest batch.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
INGEST_BATCH_ALERTS = Histogram(
    "incidentd_ingest_batch_alerts",
    "Alerts committed per ingest batch (group commit size).",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500),
    registry=REGISTRY,
)
INGEST_QUEUED = Gauge(
    "incidentd_ingest_queued_alerts",
    "Alerts waiting for the ingest writer.",
    registry=REGISTRY,
)
# Named like Prometheus' and Alertmanager's own, so the same alert rule fits all three.
CONFIG_RELOAD_SUCCESSFUL = Gauge(
    "incidentd_config_last_reload_successful",
    "Whether the last configuration reload (SIGHUP or POST /-/reload) succeeded (1) or was"
    " refused, keeping the running configuration (0).",
    registry=REGISTRY,
)
CONFIG_RELOAD_SUCCESS_TIME = Gauge(
    "incidentd_config_last_reload_success_timestamp_seconds",
    "Unix time of the last successful configuration load (the start, or a reload).",
    registry=REGISTRY,
)

# Series that exist from the start, at 0: `rate()` and ratios over them return data
# (not "no data") on a quiet daemon, and a gauge reads 0 rather than disappearing.
for _priority in PRIORITIES:
    INCIDENTS_OPENED.labels(_priority)
    INCIDENTS_REOPENED.labels(_priority)
    for _how in RESOLVED_HOW:
        INCIDENTS_RESOLVED.labels(_priority, _how)
    for _status in OPEN_STATUSES:
        INCIDENTS_OPEN.labels(_priority, _status)
    for _clock in SLA_CLOCKS:
        SLA_MET.labels(_clock, _priority)
        SLA_BREACHES.labels(_clock, _priority)


def priority_label(priority: str | None) -> str:
    return priority or NO_PRIORITY


class OpenIncidents:
    """`incidentd_incidents_open`, kept from the (priority, status) last seen of each open
    incident: a transition moves its incident from its old pair to its new one, so a
    priority that changed in between (correlation re-assessed it, a person set it) never
    leaves a count behind, and no count goes below zero. Rebuilt from the store at start
    and every few seconds after (`mark`, read, `replace`), which also takes in what other
    replicas did."""

    def __init__(self, gauge: Gauge) -> None:
        self._gauge = gauge
        self._seen: dict[int, tuple[str, str]] = {}
        # While a read of the store is in flight: what was observed meanwhile, which
        # that read may predate; `replace` lays it over what was read.
        self._journal: dict[int, tuple[str | None, str]] | None = None

    def observe(self, incident_id: int, priority: str | None, status: str) -> None:
        """The incident is now in `status` with `priority` (committed)."""
        if self._journal is not None:
            self._journal[incident_id] = (priority, status)
        new = (priority_label(priority), status) if status in OPEN_STATUSES else None
        old = self._seen.get(incident_id)
        if old == new:
            return
        if old is not None:
            self._gauge.labels(*old).dec()
        if new is None:
            self._seen.pop(incident_id, None)
        else:
            self._seen[incident_id] = new
            self._gauge.labels(*new).inc()

    def mark(self) -> None:
        """A read of every open incident from the store starts now."""
        self._journal = {}

    def replace(self, rows: Iterable[tuple[int, str | None, str]]) -> None:
        """Every open incident as (id, priority, status), as read since `mark`."""
        journal, self._journal = self._journal or {}, None
        current = {i: (p, s) for i, p, s in rows}
        current.update(journal)
        self._seen = {i: (priority_label(p), s) for i, (p, s) in current.items()
                      if s in OPEN_STATUSES}
        counts: dict[tuple[str, str], int] = {}
        for pair in self._seen.values():
            counts[pair] = counts.get(pair, 0) + 1
        for pair in {*counts, *((p, s) for p in PRIORITIES for s in OPEN_STATUSES)}:
            self._gauge.labels(*pair).set(counts.get(pair, 0))


OPEN_INCIDENTS = OpenIncidents(INCIDENTS_OPEN)
