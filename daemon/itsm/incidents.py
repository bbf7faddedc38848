"""The incident lifecycle: opening, attaching alerts, acknowledging, resolving.

Every state change is checked here, written with its timeline entry in the
caller's transaction, and returned as a `Transition` so the caller can
update metrics (and, later, notify) once the transaction has committed.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from daemon import metrics
from daemon.correlation.engine import Group, Placed
from daemon.errors import InvalidInput, InvalidTransition, NotFound
from daemon.itsm.priority import PriorityMatrix
from daemon.models import (
    SYSTEM_ACTOR,
    Acknowledgement,
    Alert,
    IncidentStatus,
    Priority,
    Role,
    TimelineEntry,
    TimelineKind,
    incident_key,
)
from daemon.store import alerts as alert_store
from daemon.store import incidents as store
from daemon.store import runbooks as runbook_store
from daemon.store.alerts import EarlierFirings, ResolvedAlert
from daemon.store.incidents import IncidentState, NewIncident


class How(enum.StrEnum):
    """Who caused a transition: a person, the alerts themselves, or a runbook."""

    MANUAL = "manual"
    AUTOMATIC = "automatic"
    AUTOMATION = "automation"


RUNBOOK_ACTOR = "runbook:"  # timeline actors of runbooks: `runbook:<name>`


def how_of(actor: str) -> How:
    """A runbook moving an incident (`actor=runbook:<name>`) is automation, not a person."""
    return How.AUTOMATION if actor.startswith(RUNBOOK_ACTOR) else How.MANUAL


@dataclass(frozen=True, slots=True)
class Earlier:
    """Who did it first, when a move asked for had already been made."""

    actor: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Transition:
    incident: IncidentState
    previous: IncidentStatus | None  # None: the incident was just opened
    how: How
    # Set when nothing moved because it already had been (a second acknowledgement).
    already: Earlier | None = None


async def open_incidents(
    conn: AsyncConnection, groups: Sequence[Group], now: datetime
) -> list[Transition]:
    """Open one incident per group, titled after its most severe alert."""
    if not groups:
        return []
    specs = []
    for group in groups:
        lead = min(group.alerts, key=lambda m: m[0].severity.rank)[0]
        specs.append(NewIncident(title=lead.summary, severity=lead.severity,
                                 group_key=group.group_key, alert_name=alert_name(lead)))
    ids = await store.insert_incidents(conn, specs, now)
    links: list[tuple[int, int, str]] = []
    entries: list[tuple[int, TimelineEntry]] = []
    for incident_id, group in zip(ids, groups, strict=True):
        links.extend((incident_id, alert_id, initial_role(a)) for a, alert_id in group.alerts)
        first = group.alerts[0][0]
        entries.append((incident_id, TimelineEntry(
            at=now, actor=SYSTEM_ACTOR, kind=TimelineKind.OPENED,
            detail={"source": first.source, "group_key": group.group_key,
                    "alerts": [a.fingerprint for a, _ in group.alerts]},
        )))
    await store.link_alerts(conn, links, now)
    await store.add_timeline(conn, entries)
    return [
        Transition(
            IncidentState(id=i, status=IncidentStatus.TRIGGERED, severity=s.severity,
                          created_at=now, acknowledged_at=None, resolved_at=None),
            None,
            How.AUTOMATIC,
        )
        for i, s in zip(ids, specs, strict=True)
    ]


def alert_name(alert: Alert) -> str:
    """What kind of failure an alert reports: its `alertname`, else its summary."""
    return (alert.labels.get("alertname") or alert.summary)[:255]


def initial_role(alert: Alert) -> str:
    """Until the root cause is worked out, a bound alert is a symptom."""
    return Role.SYMPTOM if alert.ci_id else Role.UNBOUND


async def attach_alerts(
    conn: AsyncConnection, joins: Mapping[int, Sequence[Placed]], now: datetime,
    *, flapping: bool = False,
) -> None:
    links = [(inc, alert_id, initial_role(a)) for inc, members in joins.items()
             for a, alert_id in members]
    detail_extra = {"flapping": True} if flapping else {}
    entries = [
        (inc, TimelineEntry(at=now, actor=SYSTEM_ACTOR, kind=TimelineKind.ALERT_ATTACHED,
                            detail={"fingerprint": a.fingerprint, "summary": a.summary,
                                    "ci": a.ci_id, **detail_extra}))
        for inc, members in joins.items()
        for a, _ in members
    ]
    await store.link_alerts(conn, links, now)
    await store.add_timeline(conn, entries)


async def merge_incidents(
    conn: AsyncConnection, merges: Sequence[tuple[int, int]], now: datetime
) -> list[Transition]:
    """Fold each incident into the older one an alert connected it to; it closes as merged."""
    moved = await store.merge(conn, merges, now)
    await store.add_timeline(conn, [
        entry
        for from_id, into_id in merges
        for entry in (
            (from_id, TimelineEntry(at=now, actor=SYSTEM_ACTOR, kind=TimelineKind.MERGED,
                                    detail={"into": incident_key(into_id)})),
            (into_id, TimelineEntry(at=now, actor=SYSTEM_ACTOR, kind=TimelineKind.MERGED,
                                    detail={"from": incident_key(from_id)})),
        )
    ])
    return [Transition(m, _was(m), How.AUTOMATIC) for m in moved]


async def resolve_cleared(
    conn: AsyncConnection, resolved: Sequence[ResolvedAlert], now: datetime
) -> list[Transition]:
    """Record resolved alerts; resolve the open incidents that have no firing alert left."""
    entries = [
        (inc, TimelineEntry(at=now, actor=SYSTEM_ACTOR, kind=TimelineKind.ALERT_RESOLVED,
                            detail={"fingerprint": r.fingerprint}))
        for r in resolved
        for inc in r.incident_ids
    ]
    await store.add_timeline(conn, entries)
    cleared = await store.open_without_firing_alerts(conn, (i for i, _ in entries))
    moved = await store.transition(
        conn, cleared, allowed_from=_OPEN, to=IncidentStatus.RESOLVED,
        values={"resolved_at": now},
    )
    # Alerts that clear while a runbook is at work on the incident: the fix did it.
    fixing = await runbook_store.running_fixes(conn, [m.id for m in moved])
    await store.add_timeline(conn, [(m.id, _cleared(fixing.get(m.id), now)) for m in moved])
    return [Transition(m, _was(m), How.AUTOMATION if m.id in fixing else How.AUTOMATIC)
            for m in moved]


def _cleared(runbook: str | None, now: datetime) -> TimelineEntry:
    if runbook is None:
        return TimelineEntry(at=now, actor=SYSTEM_ACTOR, kind=TimelineKind.RESOLVED,
                             detail={"reason": "all alerts resolved"})
    return TimelineEntry(at=now, actor=f"{RUNBOOK_ACTOR}{runbook}", kind=TimelineKind.RESOLVED,
                         detail={"reason": f"resolved by automation: {runbook}"})


def _was(state: IncidentState) -> IncidentStatus:
    """The open status an incident left: only acknowledged ones have `acknowledged_at`."""
    return IncidentStatus.ACKNOWLEDGED if state.acknowledged_at else IncidentStatus.TRIGGERED


async def acknowledge_from_sources(
    conn: AsyncConnection,
    acknowledged: Sequence[tuple[Acknowledgement, tuple[int, ...]]],
    now: datetime,
) -> list[Transition]:
    """A source acknowledged its alert: acknowledge the incidents still triggered."""
    actor_of = {inc: ack.integration for ack, incs in acknowledged for inc in incs}
    moved = await store.transition(
        conn, list(actor_of), allowed_from=(IncidentStatus.TRIGGERED,),
        to=IncidentStatus.ACKNOWLEDGED, values={"acknowledged_at": now},
    )
    await store.add_timeline(conn, [
        (m.id, TimelineEntry(at=now, actor=actor_of[m.id], kind=TimelineKind.ACKNOWLEDGED,
                             detail={"via": "source"}))
        for m in moved
    ])
    return [Transition(m, IncidentStatus.TRIGGERED, How.AUTOMATIC) for m in moved]


_OPEN = (IncidentStatus.TRIGGERED, IncidentStatus.ACKNOWLEDGED, IncidentStatus.ON_HOLD)


@dataclass(frozen=True, slots=True)
class _Move:
    allowed_from: tuple[IncidentStatus, ...]
    to: IncidentStatus
    kind: TimelineKind
    stamp: str | None  # the column that takes the time of the move
    clear: tuple[str, ...] = ()


MOVES = {
    "acknowledge": _Move((IncidentStatus.TRIGGERED,), IncidentStatus.ACKNOWLEDGED,
                         TimelineKind.ACKNOWLEDGED, "acknowledged_at"),
    "hold": _Move((IncidentStatus.TRIGGERED, IncidentStatus.ACKNOWLEDGED),
                  IncidentStatus.ON_HOLD, TimelineKind.HELD, None),
    "resolve": _Move(_OPEN, IncidentStatus.RESOLVED, TimelineKind.RESOLVED, "resolved_at"),
    "close": _Move((IncidentStatus.RESOLVED,), IncidentStatus.CLOSED, TimelineKind.CLOSED,
                   "closed_at"),
    "reopen": _Move((IncidentStatus.RESOLVED,), IncidentStatus.TRIGGERED,
                    TimelineKind.REOPENED, None, ("resolved_at", "acknowledged_at")),
}


async def move(conn: AsyncConnection, incident_id: int, action: str, *, actor: str,
               note: str | None, now: datetime, origin: str | None = None) -> Transition:
    """A person moves an incident: acknowledge, hold, resume, resolve, close or reopen.

    `origin`: the ITSM connector the move came from, kept in the timeline detail."""
    if action == "resume":
        return await _resume(conn, incident_id, actor=actor, note=note, now=now, origin=origin)
    if action == "acknowledge":
        earlier = await _acknowledged_before(conn, incident_id)
        if earlier is not None:
            return earlier
    spec = MOVES[action]
    values: dict[str, datetime | None] = dict.fromkeys(spec.clear)
    if spec.stamp:
        values[spec.stamp] = now
    transition = await _manual(conn, incident_id, actor=actor, note=note, now=now,
                               allowed_from=spec.allowed_from, to=spec.to, values=values,
                               kind=spec.kind, origin=origin)
    if action == "resolve":
        # Its firing alerts resolve with it, so a later repeat of one opens a new
        # incident instead of being taken as a duplicate (as PagerDuty does).
        await alert_store.resolve_of_incident(conn, incident_id, now)
    return transition


async def _acknowledged_before(conn: AsyncConnection, incident_id: int) -> Transition | None:
    """A second acknowledgement (two people pressing the button) is harmless: it moves
    nothing and says who acknowledged first."""
    state = await store.get_state(conn, incident_id)
    if state is None or state.status is not IncidentStatus.ACKNOWLEDGED:
        return None
    first = await store.last_entry(conn, incident_id, TimelineKind.ACKNOWLEDGED)
    assert state.acknowledged_at is not None
    actor = first.actor if first else SYSTEM_ACTOR
    return Transition(state, state.status, How.MANUAL,
                      already=Earlier(actor=actor, at=state.acknowledged_at))


async def _resume(conn: AsyncConnection, incident_id: int, *, actor: str, note: str | None,
                  now: datetime, origin: str | None = None) -> Transition:
    state = await store.get_state(conn, incident_id)
    back = (IncidentStatus.ACKNOWLEDGED if state and state.acknowledged_at
            else IncidentStatus.TRIGGERED)
    return await _manual(conn, incident_id, actor=actor, note=note, now=now,
                         allowed_from=(IncidentStatus.ON_HOLD,), to=back, values={},
                         kind=TimelineKind.RESUMED, origin=origin)


async def set_priority(conn: AsyncConnection, incident_id: int, *, priority: Priority | None,
                       impact: int | None, urgency: int | None, reason: str, actor: str,
                       now: datetime, matrix: PriorityMatrix) -> None:
    """Set the priority by hand (directly, or through impact and urgency); it then stays."""
    current = (await store.assessed(conn, [incident_id])).get(incident_id)
    if current is None:
        raise NotFound(f"no incident {incident_key(incident_id)}")
    if priority is None:
        if impact is None or urgency is None:
            raise InvalidInput("give priority, or impact and urgency", [
                {"field": "priority", "reason": "give priority, or impact and urgency"}])
        try:
            priority = matrix.priority(impact, urgency)
        except IndexError:
            raise InvalidInput("impact or urgency is outside the priority matrix", [
                {"field": "impact", "reason": "outside the priority matrix"}]) from None
    await store.set_priority(conn, incident_id, priority=priority, impact=impact,
                             urgency=urgency)
    await store.add_timeline(conn, [(incident_id, TimelineEntry(
        at=now, actor=actor, kind=TimelineKind.PRIORITY_CHANGED,
        detail={"from": current.priority.value if current.priority else None,
                "to": priority.value, "reason": reason}))])


async def reopen_for_alerts(
    conn: AsyncConnection, new: Sequence[Placed], now: datetime, *, window_seconds: int,
    earlier: EarlierFirings,
) -> tuple[list[Transition], dict[int, list[Placed]], list[Placed]]:
    """An alert firing again on an incident resolved within the window reopens it.

    Returns the reopenings, the alerts to attach to them, and the other alerts.
    """
    if not new or window_seconds <= 0:
        return [], {}, list(new)
    since = now - timedelta(seconds=window_seconds)
    prior = {alert_id: earlier.since(alert, since) for alert, alert_id in new}
    incidents_of = await alert_store.incident_ids_of(
        conn, [latest for count, latest in prior.values() if count])
    candidates = {max(incs) for incs in incidents_of.values() if incs}
    reopened = await store.transition(
        conn, sorted(candidates), allowed_from=(IncidentStatus.RESOLVED,),
        to=IncidentStatus.TRIGGERED, values={"resolved_at": None, "acknowledged_at": None},
        where_resolved_since=since,
    )
    ids = {r.id for r in reopened}
    joins: dict[int, list[Placed]] = {}
    rest: list[Placed] = []
    for alert, alert_id in new:
        _, latest = prior[alert_id]
        target = max(incidents_of.get(latest, (0,)))
        if target in ids:
            joins.setdefault(target, []).append((alert, alert_id))
        else:
            rest.append((alert, alert_id))
    await store.add_timeline(conn, [
        (inc, TimelineEntry(at=now, actor=SYSTEM_ACTOR, kind=TimelineKind.REOPENED,
                            detail={"fingerprints": [a.fingerprint for a, _ in placed]}))
        for inc, placed in joins.items()
    ])
    return [Transition(r, IncidentStatus.RESOLVED, How.AUTOMATIC) for r in reopened], joins, rest


async def close_quiet(conn: AsyncConnection, *, resolved_before: datetime, now: datetime
                      ) -> list[Transition]:
    """Close incidents resolved longer ago than the quiet period."""
    ids = await store.resolved_before(conn, resolved_before)
    closed = await store.transition(conn, ids, allowed_from=(IncidentStatus.RESOLVED,),
                                    to=IncidentStatus.CLOSED, values={"closed_at": now})
    await store.add_timeline(conn, [
        (c.id, TimelineEntry(at=now, actor=SYSTEM_ACTOR, kind=TimelineKind.CLOSED,
                             detail={"reason": "quiet period over"}))
        for c in closed
    ])
    return [Transition(c, IncidentStatus.RESOLVED, How.AUTOMATIC) for c in closed]


async def _manual(
    conn: AsyncConnection,
    incident_id: int,
    *,
    actor: str,
    note: str | None,
    now: datetime,
    allowed_from: tuple[IncidentStatus, ...],
    to: IncidentStatus,
    values: dict[str, datetime | None],
    kind: TimelineKind,
    origin: str | None = None,
) -> Transition:
    before = await store.get_state(conn, incident_id)
    if before is None:
        raise NotFound(f"no incident {incident_key(incident_id)}")
    if before.status not in allowed_from:
        raise InvalidTransition(
            f"{incident_key(incident_id)} is {before.status.value}; it can be {to.value} only "
            f"from {' or '.join(s.value for s in allowed_from)}"
        )
    moved = await store.transition(
        conn, [incident_id], allowed_from=allowed_from, to=to, values=values
    )
    if not moved:  # changed between our read and our write (another replica)
        raise InvalidTransition(f"{incident_key(incident_id)} changed meanwhile; try again")
    detail = ({"note": note} if note else {}) | ({"origin": origin} if origin else {})
    await store.add_timeline(
        conn, [(incident_id, TimelineEntry(at=now, actor=actor, kind=kind, detail=detail))]
    )
    return Transition(moved[0], before.status, how_of(actor))


def record_metrics(transitions: Iterable[Transition]) -> None:
    """Count committed incident transitions. Call only after the commit.

    Labels: `priority` (P1..P5, or none) and `service` (the primary impacted business
    service, or none) as the incident has them in the transition's state.
    """
    for t in transitions:
        inc = t.incident
        metrics.OPEN_INCIDENTS.observe(inc.id, inc.priority, inc.status.value)
        priority = metrics.priority_label(inc.priority)
        service = inc.service or metrics.NO_SERVICE
        if t.previous is None:
            metrics.INCIDENTS_OPENED.labels(priority).inc()
        elif inc.status is IncidentStatus.ACKNOWLEDGED and inc.acknowledged_at and (
                t.previous is IncidentStatus.TRIGGERED):
            waited = _seconds(inc.created_at, inc.acknowledged_at)
            metrics.TIME_TO_ACKNOWLEDGE.labels(service, priority).observe(waited)
        elif inc.status is IncidentStatus.RESOLVED and inc.resolved_at and t.previous in _OPEN:
            metrics.INCIDENTS_RESOLVED.labels(priority, t.how.value).inc()
            metrics.TIME_TO_RESOLVE.labels(service, priority).observe(
                _seconds(inc.created_at, inc.resolved_at))
        elif inc.status is IncidentStatus.TRIGGERED and t.previous is IncidentStatus.RESOLVED:
            metrics.INCIDENTS_REOPENED.labels(priority).inc()


def _seconds(start: datetime, end: datetime) -> float:
    return max(0.0, (end - start).total_seconds())
