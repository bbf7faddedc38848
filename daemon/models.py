"""Domain values that cross stage boundaries.

Plain, typed, immutable, no I/O: receivers produce `Alert`s, the ingest flow
hands them to dedup and correlation, the ITSM layer turns them into
`Incident`s. Tables are the store's business, not these classes'.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class AlertStatus(enum.StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


class Severity(enum.StrEnum):
    """PagerDuty Events v2 severities, highest first."""

    CRITICAL = "critical"
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]

    @classmethod
    def parse(cls, value: str | None, default: Severity) -> Severity:
        """Map the many spellings monitoring tools use onto the four levels."""
        if not value:
            return default
        return _SEVERITY_ALIASES.get(value.strip().lower(), default)


_SEVERITY_RANK = {
    Severity.CRITICAL: 0,
    Severity.ERROR: 1,
    Severity.WARNING: 2,
    Severity.INFO: 3,
}

_SEVERITY_ALIASES: dict[str, Severity] = {
    "critical": Severity.CRITICAL,
    "crit": Severity.CRITICAL,
    "page": Severity.CRITICAL,
    "fatal": Severity.CRITICAL,
    "emergency": Severity.CRITICAL,
    "disaster": Severity.CRITICAL,
    "p1": Severity.CRITICAL,
    "error": Severity.ERROR,
    "err": Severity.ERROR,
    "high": Severity.ERROR,
    "major": Severity.ERROR,
    "p2": Severity.ERROR,
    "warning": Severity.WARNING,
    "warn": Severity.WARNING,
    "average": Severity.WARNING,
    "medium": Severity.WARNING,
    "minor": Severity.WARNING,
    "p3": Severity.WARNING,
    "info": Severity.INFO,
    "informational": Severity.INFO,
    "low": Severity.INFO,
    "none": Severity.INFO,
    "ok": Severity.INFO,
    "p4": Severity.INFO,
    "p5": Severity.INFO,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    """One alert as a source reported it, normalised.

    `fingerprint` is the source's own identity where it has one (Alertmanager
    `fingerprint`, PagerDuty `dedup_key`), else a stable hash of the labels.
    `group_key` is the source's grouping (Alertmanager `groupKey`); alerts of
    one group open one incident until topology correlation takes over.
    """

    source: str
    integration: str
    fingerprint: str
    status: AlertStatus
    severity: Severity
    summary: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: datetime
    ends_at: datetime | None
    generator_url: str | None
    group_key: str
    ci_id: str | None = None
    # Links a person may want to follow (dashboards, runbooks, silences), kept as sent.
    links: tuple[Link, ...] = ()
    # Source-specific context that is not a label: PagerDuty custom_details,
    # Grafana values, images, client. Shown, never matched on.
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Link:
    href: str
    text: str = ""

    def as_json(self) -> dict[str, str]:
        """As the store keeps it (a JSON object in a `links` column)."""
        return {"href": self.href, "text": self.text}


@dataclass(frozen=True, slots=True, kw_only=True)
class Acknowledgement:
    """A source saying its alert is being handled (PagerDuty `acknowledge`).

    It acknowledges the incident the alert belongs to, with the integration
    as the actor; it never opens anything.
    """

    source: str
    integration: str
    fingerprint: str


AlertEvent = Alert | Acknowledgement


class IncidentStatus(enum.StrEnum):
    TRIGGERED = "triggered"
    ACKNOWLEDGED = "acknowledged"
    ON_HOLD = "on_hold"  # waiting on someone else; SLA clocks pause
    RESOLVED = "resolved"
    CLOSED = "closed"  # final: after a quiet period, by hand, or merged into another

    @property
    def is_open(self) -> bool:
        return self in OPEN_STATUSES


class Role(enum.StrEnum):
    """How an alert relates to its incident."""

    ROOT_CAUSE = "root_cause"  # on the incident's root-cause CI
    SYMPTOM = "symptom"  # on a CI that depends on it, or related to it
    UNBOUND = "unbound"  # on no known CI; grouped by labels


OPEN_STATUSES: tuple[IncidentStatus, ...] = (
    IncidentStatus.TRIGGERED,
    IncidentStatus.ACKNOWLEDGED,
    IncidentStatus.ON_HOLD,
)


class Priority(enum.StrEnum):
    P1 = "P1"
    P2 = "P2"
    P3 = "P3"
    P4 = "P4"
    P5 = "P5"


class TimelineKind(enum.StrEnum):
    OPENED = "opened"
    ALERT_ATTACHED = "alert_attached"
    ALERT_RESOLVED = "alert_resolved"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    MERGED = "merged"
    ROOT_CAUSE_CHANGED = "root_cause_changed"
    SEVERITY_RAISED = "severity_raised"
    PRIORITY_CHANGED = "priority_changed"
    HELD = "held"
    RESUMED = "resumed"
    REOPENED = "reopened"
    CLOSED = "closed"
    SLA_WARNING = "sla_warning"
    SLA_BREACHED = "sla_breached"
    ESCALATED = "escalated"
    PROBLEM_LINKED = "problem_linked"
    WORKAROUND = "workaround"
    CHANGE_SUSPECTED = "change_suspected"
    RUNBOOK_PENDING_APPROVAL = "runbook_pending_approval"
    RUNBOOK_STARTED = "runbook_started"
    RUNBOOK_SUCCEEDED = "runbook_succeeded"
    RUNBOOK_FAILED = "runbook_failed"  # also denied, expired, interrupted, skipped
    RUNBOOK_NOTIFY = "runbook_notify"
    NOTE = "note"  # a comment or re-assignment made in an ITSM suite


SYSTEM_ACTOR = "incidentd"
# Actors the daemon itself writes; a person or a tool may not claim them (they
# decide, e.g., whether a resolution counts as automation).
RESERVED_ACTOR_PREFIXES = ("runbook:",)


def person_actor(value: str) -> str:
    """Validate an actor given from outside (API body, bot request)."""
    if value == SYSTEM_ACTOR or value.startswith(RESERVED_ACTOR_PREFIXES):
        raise ValueError(f"actor {value!r} is reserved for incidentd itself")
    return value


def incident_key(incident_id: int) -> str:
    """The short, human key of an incident: `INC-000123`."""
    return f"INC-{incident_id:06d}"


@dataclass(frozen=True, slots=True, kw_only=True)
class TimelineEntry:
    at: datetime
    actor: str
    kind: TimelineKind
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class IncidentAlert:
    """An alert as seen from the incident it belongs to."""

    id: int
    fingerprint: str
    source: str
    status: AlertStatus
    severity: Severity
    summary: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: datetime
    ends_at: datetime | None
    occurrences: int
    last_seen: datetime
    ci: str | None
    role: str
    flapping: bool = False
    links: tuple[Link, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Incident:
    id: int
    title: str
    status: IncidentStatus
    severity: Severity
    group_key: str
    created_at: datetime
    acknowledged_at: datetime | None
    resolved_at: datetime | None
    root_cause_ci: str | None = None
    priority: Priority | None = None
    impact: int | None = None
    urgency: int | None = None
    priority_manual: bool = False
    closed_at: datetime | None = None
    impacted_cis: tuple[str, ...] = ()
    impacted_services: tuple[str, ...] = ()
    merged_into: int | None = None
    alert_name: str | None = None
    alerts: tuple[IncidentAlert, ...] = ()
    timeline: tuple[TimelineEntry, ...] = ()

    @property
    def key(self) -> str:
        return incident_key(self.id)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeRecord:
    """A change someone made (a deploy, a config push), as a change event reported it."""

    integration: str
    summary: str
    source: str | None
    occurred_at: datetime
    details: dict[str, Any] = field(default_factory=dict)
    links: tuple[Link, ...] = ()
    # ITSM change record fields; the defaults describe a change event (a deploy
    # that already happened). Values are those of `daemon.itsm.changes`' enums.
    type: str = "standard"  # standard | normal | emergency
    # requested | approved | in_progress | completed | cancelled | rejected
    state: str = "completed"
    cis: tuple[str, ...] = ()  # CMDB CI ids it touches
    planned_start: datetime | None = None
    planned_end: datetime | None = None
    approver: str | None = None
    outcome: str | None = None  # successful | failed | backed_out, once completed
    description: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigurationItem:
    """A CMDB record. A business service is a CI of type `service`."""

    id: str
    name: str
    type: str
    service: str | None = None  # id of the business-service CI it belongs to
    owner_group: str | None = None
    criticality: int = 3  # 1 (highest) .. 5
    environment: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()  # ids of the CIs this one needs

    @property
    def is_service(self) -> bool:
        return self.type == SERVICE_TYPE


SERVICE_TYPE = "service"
