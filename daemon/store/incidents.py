"""Repository functions for incidents, their alert links and their timeline."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import GenericFunction

from daemon.models import (
    OPEN_STATUSES,
    AlertStatus,
    Incident,
    IncidentAlert,
    IncidentStatus,
    Link,
    Priority,
    Role,
    Severity,
    TimelineEntry,
    TimelineKind,
)
from daemon.store.tables import alerts, cis, incident_alerts, incidents, timeline

_OPEN = [s.value for s in OPEN_STATUSES]


@dataclass(frozen=True, slots=True, kw_only=True)
class NewIncident:
    title: str
    severity: Severity
    group_key: str
    alert_name: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class IncidentState:
    """The fields of an incident that transitions and metrics need."""

    id: int
    status: IncidentStatus
    severity: Severity
    created_at: datetime
    acknowledged_at: datetime | None
    resolved_at: datetime | None
    priority: Priority | None = None
    # The primary impacted business service: the most critical CI of `impacted_services`
    # (ties by id) that the CMDB still holds; None when there is none.
    service: str | None = None


class _json_elements(GenericFunction[Any]):
    """The elements of a JSON array column as text rows (`value`): SQLite's `json_each`."""

    name = "json_each"
    inherit_cache = True


@compiles(_json_elements, "postgresql")
def _json_elements_pg(element: _json_elements, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_array_elements_text({compiler.process(element.clauses, **kw)})"


def _primary_service() -> sa.Label[Any]:
    # Correlated to the incident row, so it works in RETURNING as in SELECT. SQLite
    # writes RETURNING columns unqualified: every name here must be unambiguous.
    elements = _json_elements(incidents.c.impacted_services).table_valued("value")
    return (
        sa.select(cis.c.id)
        .where(cis.c.id.in_(sa.select(elements.c.value)))
        .order_by(cis.c.criticality, cis.c.id)
        .limit(1)
        .correlate(incidents)
        .scalar_subquery()
        .label("primary_service")
    )


_STATE_COLUMNS = (
    incidents.c.id,
    incidents.c.status,
    incidents.c.severity,
    incidents.c.created_at,
    incidents.c.acknowledged_at,
    incidents.c.resolved_at,
    incidents.c.priority,
    _primary_service(),
)


def _state(row: Any) -> IncidentState:
    return IncidentState(
        id=row.id,
        status=IncidentStatus(row.status),
        severity=Severity(row.severity),
        created_at=row.created_at,
        acknowledged_at=row.acknowledged_at,
        resolved_at=row.resolved_at,
        priority=Priority(row.priority) if row.priority else None,
        service=row.primary_service,
    )


async def open_by_group_key(conn: AsyncConnection, keys: Iterable[str]) -> dict[str, int]:
    """The newest open incident of each group key that has one."""
    keys = list(set(keys))
    if not keys:
        return {}
    result = await conn.execute(
        sa.select(incidents.c.id, incidents.c.group_key)
        .where(incidents.c.group_key.in_(keys), incidents.c.status.in_(_OPEN))
        .order_by(incidents.c.id)
    )
    return {r.group_key: r.id for r in result}


async def insert_incidents(
    conn: AsyncConnection, new: Sequence[NewIncident], now: datetime
) -> list[int]:
    """Insert incidents; returns their ids in the order given."""
    if not new:
        return []
    stmt = sa.insert(incidents).returning(incidents.c.id, sort_by_parameter_order=True)
    rows = [
        {
            "title": n.title,
            "status": IncidentStatus.TRIGGERED.value,
            "severity": n.severity.value,
            "group_key": n.group_key,
            "alert_name": n.alert_name,
            "created_at": now,
        }
        for n in new
    ]
    return [r.id for r in await conn.execute(stmt, rows)]


async def link_alerts(
    conn: AsyncConnection, links: Sequence[tuple[int, int, str]], now: datetime
) -> None:
    """Link (incident_id, alert_id, role) triples."""
    if links:
        await conn.execute(
            sa.insert(incident_alerts),
            [{"incident_id": i, "alert_id": a, "role": r, "added_at": now} for i, a, r in links],
        )


async def add_timeline(
    conn: AsyncConnection, entries: Sequence[tuple[int, TimelineEntry]]
) -> None:
    if entries:
        await conn.execute(
            sa.insert(timeline),
            [
                {"incident_id": i, "at": e.at, "actor": e.actor, "kind": e.kind.value,
                 "detail": e.detail}
                for i, e in entries
            ],
        )


async def open_without_firing_alerts(
    conn: AsyncConnection, incident_ids: Iterable[int]
) -> list[int]:
    """Of these incidents, the open ones none of whose alerts is still firing."""
    ids = list(set(incident_ids))
    if not ids:
        return []
    firing = (
        sa.select(incident_alerts.c.incident_id)
        .join(alerts, alerts.c.id == incident_alerts.c.alert_id)
        .where(alerts.c.status == AlertStatus.FIRING.value, incident_alerts.c.incident_id.in_(ids))
    )
    result = await conn.execute(
        sa.select(incidents.c.id).where(
            incidents.c.id.in_(ids), incidents.c.status.in_(_OPEN), incidents.c.id.not_in(firing)
        )
    )
    return [r.id for r in result]


async def transition(
    conn: AsyncConnection,
    incident_ids: Sequence[int],
    *,
    allowed_from: Sequence[IncidentStatus],
    to: IncidentStatus,
    values: dict[str, Any],
    where_resolved_since: datetime | None = None,
) -> list[IncidentState]:
    """Move incidents to `to` where their status is in `allowed_from`; returns those moved."""
    if not incident_ids:
        return []
    query = (
        sa.update(incidents)
        .where(incidents.c.id.in_(incident_ids),
               incidents.c.status.in_([s.value for s in allowed_from]))
        .values(status=to.value, **values)
        .returning(*_STATE_COLUMNS)
    )
    if where_resolved_since is not None:
        query = query.where(incidents.c.resolved_at >= where_resolved_since)
    result = await conn.execute(query)
    return [_state(r) for r in result]


async def get_state(conn: AsyncConnection, incident_id: int) -> IncidentState | None:
    row = (
        await conn.execute(sa.select(*_STATE_COLUMNS).where(incidents.c.id == incident_id))
    ).first()
    return _state(row) if row else None


async def get_states(conn: AsyncConnection, incident_ids: Iterable[int]
                     ) -> dict[int, IncidentState]:
    """The states of these incidents now, in one query."""
    ids = sorted(set(incident_ids))
    if not ids:
        return {}
    result = await conn.execute(sa.select(*_STATE_COLUMNS).where(incidents.c.id.in_(ids)))
    return {r.id: _state(r) for r in result}


async def list_incidents(
    conn: AsyncConnection,
    *,
    statuses: Sequence[IncidentStatus] | None,
    limit: int,
    before_id: int | None,
) -> list[Incident]:
    """Newest first, keyset-paginated on id, each with its alerts (no timeline)."""
    query = sa.select(incidents).order_by(incidents.c.id.desc()).limit(limit)
    if statuses:
        query = query.where(incidents.c.status.in_([s.value for s in statuses]))
    if before_id is not None:
        query = query.where(incidents.c.id < before_id)
    rows = list(await conn.execute(query))
    members = await _alerts_of(conn, [r.id for r in rows])
    return [_incident(r, members.get(r.id, ()), ()) for r in rows]


async def get_incident(conn: AsyncConnection, incident_id: int) -> Incident | None:
    row = (await conn.execute(sa.select(incidents).where(incidents.c.id == incident_id))).first()
    if row is None:
        return None
    members = await _alerts_of(conn, [incident_id])
    entries = await conn.execute(
        sa.select(timeline).where(timeline.c.incident_id == incident_id).order_by(timeline.c.id)
    )
    history = tuple(
        TimelineEntry(at=e.at, actor=e.actor, kind=TimelineKind(e.kind), detail=e.detail)
        for e in entries
    )
    return _incident(row, members.get(incident_id, ()), history)


async def _alerts_of(
    conn: AsyncConnection, incident_ids: Sequence[int]
) -> dict[int, tuple[IncidentAlert, ...]]:
    if not incident_ids:
        return {}
    result = await conn.execute(
        sa.select(alerts, incident_alerts.c.incident_id, incident_alerts.c.role)
        .join(incident_alerts, incident_alerts.c.alert_id == alerts.c.id)
        .where(incident_alerts.c.incident_id.in_(incident_ids))
        .order_by(alerts.c.id)
    )
    out: dict[int, list[IncidentAlert]] = {}
    for r in result:
        out.setdefault(r.incident_id, []).append(alert_view(r, role=r.role))
    return {k: tuple(v) for k, v in out.items()}


def alert_view(r: Any, *, role: str) -> IncidentAlert:
    return IncidentAlert(
        id=r.id,
        fingerprint=r.fingerprint,
        source=r.source,
        status=AlertStatus(r.status),
        severity=Severity(r.severity),
        summary=r.summary,
        labels=r.labels,
        annotations=r.annotations,
        starts_at=r.starts_at,
        ends_at=r.ends_at,
        occurrences=r.occurrences,
        last_seen=r.last_seen,
        ci=r.ci_id,
        role=role,
        flapping=r.flapping,
        links=tuple(Link(href=x["href"], text=x.get("text", "")) for x in r.links),
        details=r.details,
    )


def _incident(
    row: Any, members: tuple[IncidentAlert, ...], history: tuple[TimelineEntry, ...]
) -> Incident:
    return Incident(
        id=row.id,
        title=row.title,
        status=IncidentStatus(row.status),
        severity=Severity(row.severity),
        group_key=row.group_key,
        created_at=row.created_at,
        acknowledged_at=row.acknowledged_at,
        resolved_at=row.resolved_at,
        root_cause_ci=row.root_cause_ci,
        priority=Priority(row.priority) if row.priority else None,
        impact=row.impact,
        urgency=row.urgency,
        priority_manual=row.priority_manual,
        closed_at=row.closed_at,
        impacted_cis=tuple(row.impacted_cis),
        impacted_services=tuple(row.impacted_services),
        merged_into=row.merged_into,
        alert_name=row.alert_name,
        alerts=members,
        timeline=history,
    )


async def open_incident_cis(
    conn: AsyncConnection, *, since: datetime
) -> dict[int, tuple[datetime, datetime, set[str]]]:
    """Open incidents active since `since` that have bound alerts:
    id → (created_at, last activity, their alerts' CIs).

    Last activity is the newest `last_seen` of an incident's bound alerts, so an
    incident is active exactly when one of them was seen since `since`. That test
    runs in SQL on the partial index ix_alerts_bound_last_seen, touching only
    recently seen alerts; only the active incidents' links are then read, one row
    per (incident, CI) however many alerts share the CI.
    """
    bound = alerts.c.ci_id.is_not(None)
    active = (
        sa.select(incident_alerts.c.incident_id)
        .join(alerts, alerts.c.id == incident_alerts.c.alert_id)
        .where(bound, alerts.c.last_seen >= since)
    )
    result = await conn.execute(
        sa.select(incidents.c.id, incidents.c.created_at, alerts.c.ci_id,
                  sa.func.max(alerts.c.last_seen).label("last_seen"))
        .join(incident_alerts, incident_alerts.c.incident_id == incidents.c.id)
        .join(alerts, alerts.c.id == incident_alerts.c.alert_id)
        .where(incidents.c.id.in_(active), incidents.c.status.in_(_OPEN), bound)
        .group_by(incidents.c.id, incidents.c.created_at, alerts.c.ci_id)
    )
    out: dict[int, tuple[datetime, datetime, set[str]]] = {}
    for r in result:
        created, last, cis = out.get(r.id, (r.created_at, r.last_seen, set()))
        cis.add(r.ci_id)
        out[r.id] = (created, max(last, r.last_seen), cis)
    return out


async def move_links(conn: AsyncConnection, *, from_id: int, into_id: int) -> None:
    await conn.execute(
        sa.update(incident_alerts).where(incident_alerts.c.incident_id == from_id)
        .values(incident_id=into_id)
    )


@dataclass(frozen=True, slots=True)
class CiState:
    """What the alerts of one incident on one CI (or on none: `ci_id` None) add up to."""

    incident_id: int
    ci_id: str | None
    firing: bool  # any of them firing
    worst: Severity  # the most severe of them


# Severity.rank in SQL, so the worst severity is a MIN over the alerts.
_RANK = sa.case({s.value: s.rank for s in Severity}, value=alerts.c.severity)
_BY_RANK = {s.rank: s for s in Severity}


async def ci_states(conn: AsyncConnection, incident_ids: Iterable[int]) -> list[CiState]:
    """One row per (incident, CI) however many alerts share the CI: an incident's
    assessment needs no more, and its cost stays flat as the incident grows."""
    ids = list(set(incident_ids))
    if not ids:
        return []
    firing = sa.case((alerts.c.status == AlertStatus.FIRING.value, 1), else_=0)
    result = await conn.execute(
        sa.select(incident_alerts.c.incident_id, alerts.c.ci_id,
                  sa.func.max(firing).label("firing"), sa.func.min(_RANK).label("rank"))
        .join(alerts, alerts.c.id == incident_alerts.c.alert_id)
        .where(incident_alerts.c.incident_id.in_(ids))
        .group_by(incident_alerts.c.incident_id, alerts.c.ci_id)
    )
    return [CiState(r.incident_id, r.ci_id, bool(r.firing), _BY_RANK[r.rank]) for r in result]


async def label_values(conn: AsyncConnection, incident_ids: Iterable[int],
                       names: Sequence[str]) -> dict[int, list[dict[str, str]]]:
    """The distinct combinations of the labels `names` among each incident's alerts, a
    label an alert lacks left out: all that matchers on those names can tell apart."""
    ids = list(set(incident_ids))
    if not ids or not names:
        return {}
    values = [alerts.c.labels[name].as_string() for name in names]
    result = await conn.execute(
        sa.select(incident_alerts.c.incident_id, *values).distinct()
        .join(alerts, alerts.c.id == incident_alerts.c.alert_id)
        .where(incident_alerts.c.incident_id.in_(ids))
    )
    out: dict[int, list[dict[str, str]]] = {}
    for incident_id, *found in result:
        labels = {n: v for n, v in zip(names, found, strict=True) if v is not None}
        out.setdefault(incident_id, []).append(labels)
    return out


@dataclass(frozen=True, slots=True)
class Assessed:
    """What correlation last concluded about an incident, as stored."""

    root_cause_ci: str | None
    severity: Severity
    priority: Priority | None
    priority_manual: bool
    impact: int | None
    urgency: int | None


async def assessed(conn: AsyncConnection, incident_ids: Iterable[int]) -> dict[int, Assessed]:
    result = await conn.execute(
        sa.select(incidents.c.id, incidents.c.root_cause_ci, incidents.c.severity,
                  incidents.c.priority, incidents.c.priority_manual, incidents.c.impact,
                  incidents.c.urgency)
        .where(incidents.c.id.in_(list(set(incident_ids))))
    )
    return {r.id: Assessed(r.root_cause_ci, Severity(r.severity),
                           Priority(r.priority) if r.priority else None, r.priority_manual,
                           r.impact, r.urgency)
            for r in result}


async def set_impact(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Rows of incident_id, root, cis, services, sev, priority, impact, urgency."""
    if rows:
        await conn.execute(
            sa.update(incidents).where(incidents.c.id == sa.bindparam("incident_id"))
            .values(root_cause_ci=sa.bindparam("root"), impacted_cis=sa.bindparam("cis"),
                    impacted_services=sa.bindparam("services"),
                    severity=sa.bindparam("sev"), priority=sa.bindparam("prio"),
                    impact=sa.bindparam("imp"), urgency=sa.bindparam("urg")),
            list(rows),
        )


async def set_roles(conn: AsyncConnection, roots: Mapping[int, str | None]) -> int:
    """Give the alerts of each incident their role from their CI and the incident's
    root-cause CI (incident id → root). Writes only the links whose role changes, in
    one statement; returns how many."""
    if not roots:
        return 0
    ci = (sa.select(alerts.c.ci_id).where(alerts.c.id == incident_alerts.c.alert_id)
          .scalar_subquery())
    known = {i: root for i, root in roots.items() if root is not None}
    root = sa.case(known, value=incident_alerts.c.incident_id) if known else sa.null()
    # A bound alert whose CI is not the root (or with no root) is a symptom: `ci == NULL`
    # is not true.
    role = sa.case((ci.is_(None), Role.UNBOUND.value), (ci == root, Role.ROOT_CAUSE.value),
                   else_=Role.SYMPTOM.value)
    result = await conn.execute(
        sa.update(incident_alerts)
        .where(incident_alerts.c.incident_id.in_(list(roots)),
               incident_alerts.c.role.is_distinct_from(role))
        .values(role=role)
    )
    return result.rowcount


async def resolved_before(conn: AsyncConnection, before: datetime, limit: int = 1000
                          ) -> list[int]:
    result = await conn.execute(
        sa.select(incidents.c.id)
        .where(incidents.c.status == IncidentStatus.RESOLVED.value,
               incidents.c.resolved_at < before)
        .order_by(incidents.c.id).limit(limit)
    )
    return [r.id for r in result]


async def set_priority(conn: AsyncConnection, incident_id: int, *, priority: Priority,
                       impact: int | None, urgency: int | None) -> None:
    await conn.execute(
        sa.update(incidents).where(incidents.c.id == incident_id)
        .values(priority=priority.value, impact=impact, urgency=urgency, priority_manual=True)
    )


async def last_entry(conn: AsyncConnection, incident_id: int, kind: TimelineKind
                     ) -> TimelineEntry | None:
    row = (await conn.execute(
        sa.select(timeline).where(timeline.c.incident_id == incident_id,
                                  timeline.c.kind == kind.value)
        .order_by(timeline.c.id.desc()).limit(1))).first()
    if row is None:
        return None
    return TimelineEntry(at=row.at, actor=row.actor, kind=TimelineKind(row.kind),
                         detail=row.detail)
