"""Events from the timeline into the outbox, routed to the targets that want them.

Every incident state change writes a timeline entry in its transaction; at the
end of that transaction `Notifier.enqueue_from_timeline` turns the entries
written at that instant into events, and inserts one `notifications` row per
(event, target) in the same transaction. So an event exists exactly when the
change that caused it was committed, and the sender (`daemon.itsm.delivery`)
delivers it afterwards, across restarts.

An event's id is derived from its timeline entry, so it is the same on every
target and every attempt (receivers deduplicate on it), and enqueueing the
same entries twice inserts nothing the second time.

Routing: a target gets an event when any of its routes matches; a route
matches when every condition it gives holds (`events`: exact types or
`prefix*`; `services`: an impacted business service among them; `priorities`;
`escalation_levels`: only `incident.escalated` events notifying one of these
1-based levels). An `incident.escalated` event also always goes to the targets
its level names as `webhook:<name>` or `slack:<name>`: that is how an
escalation level pages a chat channel.

ITSM suite connectors (`connectors:` in the config) get rows the same way, by their
own routes, except for an event whose timeline entry came from that same connector
(`origin` in its detail): a change a suite made is never sent back to it.

Runbook runs are events too (`runbook.pending_approval`, `runbook.started`,
`runbook.succeeded`, `runbook.failed`, `runbook.notify`); a pending approval's
`actions` hold signed `approve` / `deny` links for the run (detail `run`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.clock import timestamp
from daemon.config import ConnectorConfig, NotificationRoute, NotificationsConfig
from daemon.itsm.action_links import ActionLinks
from daemon.models import OPEN_STATUSES, incident_key
from daemon.store import notifications as store
from daemon.store import sla as sla_store
from daemon.store.notifications import NewNotification, TimelineRow
from daemon.store.sla import ClockRow

# Timeline kinds that are events, and the event type each becomes.
EVENT_OF_KIND: Mapping[str, str] = {
    "opened": "incident.triggered",
    "acknowledged": "incident.acknowledged",
    "escalated": "incident.escalated",
    "resolved": "incident.resolved",
    "reopened": "incident.reopened",
    "priority_changed": "incident.priority_updated",
    "sla_warning": "incident.sla_warning",
    "sla_breached": "incident.sla_breached",
    "runbook_pending_approval": "runbook.pending_approval",
    "runbook_started": "runbook.started",
    "runbook_succeeded": "runbook.succeeded",
    "runbook_failed": "runbook.failed",
    "runbook_notify": "runbook.notify",
}

ESCALATED = "incident.escalated"
# A run waits for someone: its event carries signed approve/deny links for the run.
PENDING_APPROVAL = "runbook.pending_approval"
# Escalation level targets that name a notification target.
_PAGED_KINDS = ("webhook", "slack")
_OPEN = frozenset(s.value for s in OPEN_STATUSES)


def event_id(public_url: str, timeline_id: int) -> str:
    """The stable id of the event made from one timeline entry."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{public_url}/timeline/{timeline_id}"))


@dataclass(frozen=True, slots=True)
class Subject:
    """What routing looks at: the event and the incident it is about."""

    event_type: str
    services: frozenset[str]
    priority: str | None
    level: int | None  # escalation events: the 1-based level notified
    paged: frozenset[str]  # escalation events: target names the level pages

    @classmethod
    def of(cls, event_type: str, detail: Mapping[str, Any], incident: Mapping[str, Any]
           ) -> Subject:
        level, paged = None, frozenset[str]()
        if event_type == ESCALATED:
            level = detail.get("level") if isinstance(detail.get("level"), int) else None
            paged = frozenset(name for kind, _, name in
                              (str(t).partition(":") for t in detail.get("targets") or [])
                              if kind in _PAGED_KINDS and name)
        return cls(event_type, frozenset(incident.get("impacted_services") or ()),
                   incident.get("priority"), level, paged)


def event_matches(pattern: str, event_type: str) -> bool:
    if pattern.endswith("*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


def route_matches(route: NotificationRoute, subject: Subject) -> bool:
    """Every condition the route gives holds; a route without conditions matches all."""
    if route.events is not None and not any(event_matches(p, subject.event_type)
                                            for p in route.events):
        return False
    if route.services is not None and not set(route.services) & subject.services:
        return False
    if route.priorities is not None and subject.priority not in route.priorities:
        return False
    return route.escalation_levels is None or (
        subject.event_type == ESCALATED and subject.level in route.escalation_levels)


class Routed(Protocol):
    """A notification target or a connector: a name and its routes."""

    @property
    def name(self) -> str: ...

    @property
    def routes(self) -> Sequence[NotificationRoute]: ...


def wants(target: Routed, subject: Subject) -> bool:
    """Whether `target` gets the event: paged by name, or any of its routes matches."""
    if target.name in subject.paged:
        return True
    return any(route_matches(r, subject) for r in target.routes)


class Notifier:
    """Writes routed events into the outbox, in the caller's transaction."""

    def __init__(self, config: NotificationsConfig, *, links: ActionLinks, public_url: str,
                 connectors: Sequence[ConnectorConfig] = ()) -> None:
        self._targets: tuple[Routed, ...] = (*config.targets, *connectors)
        self._connectors = frozenset(c.name for c in connectors)
        self._links = links
        self._base = public_url.rstrip("/")

    @property
    def enabled(self) -> bool:
        return bool(self._targets)

    async def enqueue_from_timeline(self, conn: AsyncConnection, incident_ids: Iterable[int],
                                    now: datetime) -> int:
        """Enqueue the events of these incidents' timeline entries written at `now`.

        Idempotent: another call for the same entries inserts nothing. Returns the
        number of outbox rows inserted.
        """
        if not self._targets:
            return 0
        ids = sorted(set(incident_ids))
        if not ids:
            return 0
        entries = await store.timeline_at(conn, ids, now, EVENT_OF_KIND)
        if not entries:
            return 0
        snapshots = await self._snapshots(conn, sorted({e.incident_id for e in entries}))
        rows = [row for entry in entries if entry.incident_id in snapshots
                for row in self._rows(entry, snapshots[entry.incident_id])]
        return await store.insert_new(conn, rows, now)

    # -- building ------------------------------------------------------------

    def _rows(self, entry: TimelineRow, incident: dict[str, Any]) -> list[NewNotification]:
        event_type = EVENT_OF_KIND[entry.kind]
        subject = Subject.of(event_type, entry.detail, incident)
        eid = event_id(self._base, entry.id)
        event = {
            "id": eid,
            "event_type": event_type,
            "occurred_at": timestamp(entry.at),
            "actor": entry.actor,
            "detail": entry.detail,
            "incident": incident,
        }
        return [
            NewNotification(event_id=eid, event_type=event_type,
                            incident_id=entry.incident_id, timeline_id=entry.id,
                            target=target.name,
                            payload={"event": event | {"actions": self._actions(
                                incident, target.name, _pending_run(event_type, entry.detail))}})
            for target in self._targets if wants(target, subject)
            and not self._echo(target.name, entry.detail)
        ]

    def _echo(self, target: str, detail: Mapping[str, Any]) -> bool:
        """The entry came from this connector: sending it back would loop."""
        return target in self._connectors and detail.get("origin") == target

    def _actions(self, incident: Mapping[str, Any], person: str, run_id: int | None
                 ) -> dict[str, str]:
        """Signed links naming the target as the person: acknowledge and resolve while the
        incident is open; approve and deny when the event is a run waiting for approval."""
        links: dict[str, str] = {}
        if run_id is not None:
            links |= {action: self._links.url(incident["id"], action, person, run_id)
                      for action in ("approve", "deny")}
        if incident["status"] in _OPEN:
            links |= {action: self._links.url(incident["id"], action, person)
                      for action in ("acknowledge", "resolve")}
        return links

    async def _snapshots(self, conn: AsyncConnection, ids: Sequence[int]
                         ) -> dict[int, dict[str, Any]]:
        """Each incident as the event shows it: a snapshot at event time."""
        rows = await store.incident_rows(conn, ids)
        clocks: dict[int, list[ClockRow]] = {}
        for clock in await sla_store.clocks_of(conn, ids):
            clocks.setdefault(clock.incident_id, []).append(clock)
        return {i: self._incident(r, clocks.get(i, [])) for i, r in rows.items()}

    def _incident(self, r: Any, clocks: list[ClockRow]) -> dict[str, Any]:
        return {
            "id": r.id,
            "key": incident_key(r.id),
            "title": r.title,
            "status": r.status,
            "priority": r.priority,
            "severity": r.severity,
            "created_at": timestamp(r.created_at),
            "acknowledged_at": timestamp(r.acknowledged_at),
            "resolved_at": timestamp(r.resolved_at),
            "root_cause_ci": r.root_cause_ci,
            "impacted_services": list(r.impacted_services or ()),
            "impacted_cis": list(r.impacted_cis or ()),
            "alerts_count": r.alerts_count,
            "url": f"{self._base}/api/v1/incidents/{r.id}",
            "sla": [_clock(c) for c in sorted(clocks, key=_clock_order)],
            "escalation": (None if r.escalation_policy is None else
                           {"policy": r.escalation_policy, "level": r.escalation_level + 1}),
        }


def _pending_run(event_type: str, detail: Mapping[str, Any]) -> int | None:
    """The run a pending-approval event is about (its timeline detail names it as `run`)."""
    run = detail.get("run") if event_type == PENDING_APPROVAL else None
    return run if isinstance(run, int) and not isinstance(run, bool) else None


def _clock_order(c: ClockRow) -> int:
    return 0 if c.clock == "response" else 1


def _clock(c: ClockRow) -> dict[str, Any]:
    return {"clock": c.clock, "policy": c.policy, "state": c.state, "paused": c.paused,
            "target_seconds": c.target_seconds, "due_at": timestamp(c.due_at),
            "breached_at": timestamp(c.breached_at)}
