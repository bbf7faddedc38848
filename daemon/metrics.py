"""Every Prometheus metric the daemon exports, defined once, in one registry."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)

from daemon import __version__
from daemon.models import Severity

# `_created` series double the exposition and no dashboard of ours reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]
REGISTRY = CollectorRegistry(auto_describe=True)

# 30 s .. 24 h: enough resolution that p50/p90 of human response times mean something.
HUMAN_BUCKETS = (30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 43200, 86400)

BUILD_INFO = Info("incidentd_build", "Version of the running incidentd.", registry=REGISTRY)
BUILD_INFO.info({"version": __version__})

ALERTS_RECEIVED = Counter(
    "incidentd_alerts_received_total",
    "Alerts received and committed, by source format and reported status.",
    ["source", "status"],
    registry=REGISTRY,
)
ALERTS_DEDUPLICATED = Counter(
    "incidentd_alerts_deduplicated_total",
    "Firing alerts that repeated an alert already firing (no new incident).",
    ["source"],
    registry=REGISTRY,
)
ALERTS_REJECTED = Counter(
    "incidentd_alerts_rejected_total",
    "Alert requests refused, by source and reason (invalid, unauthorized, too_large, overloaded,"
    " store_unavailable).",
    ["source", "reason"],
    registry=REGISTRY,
)
INCIDENTS_OPENED = Counter(
    "incidentd_incidents_opened_total",
    "Incidents opened, by severity.",
    ["severity"],
    registry=REGISTRY,
)
INCIDENTS_RESOLVED = Counter(
    "incidentd_incidents_resolved_total",
    "Incidents resolved, by severity and how (manual or automatic).",
    ["severity", "how"],
    registry=REGISTRY,
)
INCIDENTS_REOPENED = Counter(
    "incidentd_incidents_reopened_total",
    "Resolved incidents reopened, by hand or by an alert firing again within the window.",
    ["severity"],
    registry=REGISTRY,
)
INCIDENTS_OPEN = Gauge(
    "incidentd_incidents_open",
    "Incidents currently open (triggered, acknowledged or on hold), by severity.",
    ["severity"],
    registry=REGISTRY,
)
TIME_TO_ACKNOWLEDGE = Histogram(
    "incidentd_incident_time_to_acknowledge_seconds",
    "Time from an incident opening to its first acknowledgement (MTTA).",
    ["severity"],
    buckets=HUMAN_BUCKETS,
    registry=REGISTRY,
)
TIME_TO_RESOLVE = Histogram(
    "incidentd_incident_time_to_resolve_seconds",
    "Time from an incident opening to its resolution (MTTR).",
    ["severity"],
    buckets=HUMAN_BUCKETS,
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
ALERTS_SUPPRESSED = Counter(
    "incidentd_alerts_suppressed_total",
    "New firing alerts that opened no incident because a maintenance window (an approved"
    " change) covered their CI.",
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

for _sev in Severity:
    INCIDENTS_OPEN.labels(_sev.value)
    INCIDENTS_OPENED.labels(_sev.value)


def set_open_incidents(counts: Mapping[Severity, int]) -> None:
    """Rebuild the open-incident gauge from the store, at start."""
    for sev in Severity:
        INCIDENTS_OPEN.labels(sev.value).set(counts.get(sev, 0))
