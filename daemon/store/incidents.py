"""Repository functions for incidents, their alert links and their timeline."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
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
from daemon.store.in_lists import in_found, padded
from daemon.store.link_memory import LinkMemory
from daemon.store.tables import (
    UTCDateTime,
    alerts,
    cis,
    incident_alerts,
    incidents,
    timeline,
)

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


def _primary_service(dialect: str) -> sa.Label[Any]:
    # Correlated to the incident row, so it works in RETURNING as in SELECT. SQLite
    # writes RETURNING columns unqualified: every name here must be unambiguous, so
    # there it is `cis.id IN (the services)` (json_each has an `id` of its own).
    # PostgreSQL is driven from the incident's few services instead, each looked up by
    # primary key: with the IN form (or a join), a PostgreSQL that had not analysed the
    # tables yet scanned all of `cis` once per incident (100 ms for 40 incidents with
    # 10,000 CIs); a lookup by key is a lookup by key whatever the statistics say.
    elements = _json_elements(incidents.c.impacted_services).table_valued("value")
    if dialect == "postgresql":
        service = elements.c.value
        criticality = (sa.select(cis.c.criticality).where(cis.c.id == service)
                       .scalar_subquery())
        # Not EXISTS: PostgreSQL would make that a semi-join and scan `cis` again.
        query = (sa.select(service).where(criticality.is_not(None))
                 .order_by(criticality, service))
    else:
        query = (sa.select(cis.c.id).where(cis.c.id.in_(sa.select(elements.c.value)))
                 .order_by(cis.c.criticality, cis.c.id))
    return (
        query
        .limit(1)
        .correlate(incidents)
        .scalar_subquery()
        .label("primary_service")
    )


def _state_columns(dialect: str) -> tuple[Any, ...]:
    return (incidents.c.id, incidents.c.status, incidents.c.severity, incidents.c.created_at,
            incidents.c.acknowledged_at, incidents.c.resolved_at, incidents.c.priority,
            _primary_service(dialect))


# The columns of an IncidentState, by dialect (conn.dialect.name).
_STATE_COLUMNS = {d: _state_columns(d) for d in ("sqlite", "postgresql")}


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
        .where(incidents.c.group_key.in_(padded(keys)), incidents.c.status.in_(_OPEN))
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
    """Link (incident_id, alert_id, role) triples of alerts seen at `now`."""
    if links:
        await conn.execute(
            sa.insert(incident_alerts),
            [{"incident_id": i, "alert_id": a, "role": r, "added_at": now} for i, a, r in links],
        )
        await active_at(conn, {i for i, _, role in links if role != Role.UNBOUND}, now)


async def alerts_seen(conn: AsyncConnection, alert_ids: Collection[int], now: datetime) -> None:
    """Alerts bound to a CI were seen at `now` (again, or resolving): their incidents
    were active then."""
    if not alert_ids:
        return
    of_alerts = incident_alerts.c.alert_id.in_(padded(alert_ids))
    if conn.dialect.name == "postgresql":
        # As `id IN (subquery)`, a database never analysed probed the links of every
        # incident (11 ms at 2,000).
        which = in_found(incidents.c.id, incident_alerts.c.incident_id, of_alerts)
    else:
        which = incidents.c.id.in_(sa.select(incident_alerts.c.incident_id).where(of_alerts))
    await _seen(conn, which, now)


async def active_at(conn: AsyncConnection, incident_ids: Collection[int], now: datetime
                    ) -> None:
    """Alerts bound to a CI of these incidents were seen at `now`."""
    if incident_ids:
        await _seen(conn, incidents.c.id.in_(padded(incident_ids)), now)


async def _seen(conn: AsyncConnection, which: sa.ColumnElement[bool], now: datetime) -> None:
    """`last_alert_at` of the incidents `which` picks moves to `now`, only forward: a
    batch's `now` may trail another writer's."""
    at = sa.bindparam("now", type_=UTCDateTime())
    await conn.execute(
        sa.update(incidents)
        .where(which,
               sa.or_(incidents.c.last_alert_at.is_(None), incidents.c.last_alert_at < at))
        .values(last_alert_at=at), {"now": now})


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
    return list((await conn.execute(_OPEN_WITHOUT_FIRING, {"ids": padded(ids)})).scalars())


# NOT EXISTS, correlated: per incident, its links are looked up by index and the search
# stops at the first firing alert, so a big incident costs one lookup, whatever the
# planner believes about the tables (a `NOT IN (all firing alerts of these incidents)`
# took 2.8 s on a PostgreSQL not yet analysed, a nested loop over 5,000 by 4,000 rows).
_OPEN_WITHOUT_FIRING = sa.select(incidents.c.id).where(
    incidents.c.id.in_(sa.bindparam("ids", expanding=True)), incidents.c.status.in_(_OPEN),
    ~sa.exists().where(incident_alerts.c.incident_id == incidents.c.id,
                       alerts.c.id == incident_alerts.c.alert_id,
                       alerts.c.status == AlertStatus.FIRING.value),
)


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
        .where(incidents.c.id.in_(padded(incident_ids)),
               incidents.c.status.in_([s.value for s in allowed_from]))
        .values(status=to.value, **values)
        .returning(*_STATE_COLUMNS[conn.dialect.name])
    )
    if where_resolved_since is not None:
        query = query.where(incidents.c.resolved_at >= where_resolved_since)
    result = await conn.execute(query)
    return [_state(r) for r in result]


async def get_state(conn: AsyncConnection, incident_id: int) -> IncidentState | None:
    row = (
        await conn.execute(sa.select(*_STATE_COLUMNS[conn.dialect.name])
                           .where(incidents.c.id == incident_id))
    ).first()
    return _state(row) if row else None


# Whole incident rows and their primary service, by dialect.
_ROW_COLUMNS = {d: (incidents, _primary_service(d)) for d in ("sqlite", "postgresql")}


async def rows_by_id(conn: AsyncConnection, incident_ids: Iterable[int]) -> dict[int, Any]:
    """Whole rows of these incidents with their `primary_service`, in one query: the
    follow-up reads them once for all its parts (SLA, escalation, problems, runbook
    triggers) and the ingest's final states (`state_of`), instead of once each."""
    ids = sorted(set(incident_ids))
    if not ids:
        return {}
    result = await conn.execute(sa.select(*_ROW_COLUMNS[conn.dialect.name])
                                .where(incidents.c.id.in_(padded(ids))))
    return {r.id: r for r in result}


def state_of(row: Any) -> IncidentState:
    """The state of a row from `rows_by_id` (as `get_states` would read it)."""
    return _state(row)


async def get_states(conn: AsyncConnection, incident_ids: Iterable[int]
                     ) -> dict[int, IncidentState]:
    """The states of these incidents now, in one query."""
    ids = sorted(set(incident_ids))
    if not ids:
        return {}
    result = await conn.execute(sa.select(*_STATE_COLUMNS[conn.dialect.name])
                                .where(incidents.c.id.in_(padded(ids))))
    return {r.id: _state(r) for r in result}


async def list_incidents(
    conn: AsyncConnection,
    *,
    statuses: Sequence[IncidentStatus] | None,
    limit: int,
    before_id: int | None,
    priority: Priority | None = None,
    service: str | None = None,
) -> list[Incident]:
    """Newest first, keyset-paginated on id, each with its alerts (no timeline).
    `service`: only incidents with that CI among their impacted services."""
    query = sa.select(incidents).order_by(incidents.c.id.desc()).limit(limit)
    if statuses:
        query = query.where(incidents.c.status.in_([s.value for s in statuses]))
    if priority is not None:
        query = query.where(incidents.c.priority == priority.value)
    if service is not None:
        elements = _json_elements(incidents.c.impacted_services).table_valued("value")
        query = query.where(sa.literal(service).in_(sa.select(elements.c.value)))
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
        .where(incident_alerts.c.incident_id.in_(padded(incident_ids)))
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


# Open incidents with a bound alert seen since :since, read from the incidents
# themselves (`last_alert_at`), whatever the number of their alerts: the index on
# last_alert_at finds those seen within the window. The status is tested row by row
# (written so that no planner takes the status index instead: that would read every
# open incident, those grouped by labels alone and those long quiet included).
_ACTIVE_INCIDENTS = (
    sa.select(incidents.c.id, incidents.c.created_at, incidents.c.last_alert_at)
    .where(incidents.c.last_alert_at >= sa.bindparam("since", type_=UTCDateTime()),
           incidents.c.status.concat("").in_(_OPEN))
)


async def open_incident_cis(
    conn: AsyncConnection, *, since: datetime, links: LinkMemory
) -> dict[int, tuple[datetime, datetime, set[str]]]:
    """Open incidents active since `since` that have bound alerts:
    id → (created_at, last activity, their alerts' CIs).

    Last activity is the newest `last_seen` of an incident's bound alerts (kept on the
    incident as `last_alert_at`), so an incident is active exactly when one of them was
    seen since `since`. One statement
    for the active incidents and their times (a row each); their CIs come from `links`
    (kept between batches: a large incident is not read whole every time). What
    `links` keeps of incidents no longer active is dropped.
    """
    active = (await conn.execute(_ACTIVE_INCIDENTS, {"since": since})).all()
    links.keep_only(i for i, _, _ in active)
    if not active:
        return {}
    summaries = await links.summaries(conn, (i for i, _, _ in active))
    return {i: (created, last, summaries[i].cis) for i, created, last in active}


async def open_touching_ci(conn: AsyncConnection, ci_id: str, *, limit: int) -> list[Any]:
    """Open incidents whose root cause is `ci_id` or whose impacted CIs include it, newest
    first (id, title, status, priority, created_at): the console's CI page. Scans the open
    incidents only (index on status), which stay few."""
    elements = _json_elements(incidents.c.impacted_cis).table_valued("value")
    impacted = (sa.select(elements.c.value).where(elements.c.value == ci_id)
                .correlate(incidents).exists())
    result = await conn.execute(
        sa.select(incidents.c.id, incidents.c.title, incidents.c.status, incidents.c.priority,
                  incidents.c.created_at)
        .where(incidents.c.status.in_(_OPEN),
               sa.or_(incidents.c.root_cause_ci == ci_id, impacted))
        .order_by(incidents.c.id.desc()).limit(limit)
    )
    return list(result.all())


async def merge(conn: AsyncConnection, merges: Sequence[tuple[int, int]], now: datetime
                ) -> list[IncidentState]:
    """Fold incidents into others ((from, into) pairs; no `into` is also a `from`): their
    alert links move, and those still open close as merged. Two statements however many
    merges; returns the incidents closed, in the order of `merges`.

    An `into` keeps its own `last_alert_at`: the bound alert that related the incidents
    is linked to it at this instant, which is later than any sighting it takes in."""
    if not merges:
        return []
    into = dict(merges)
    await conn.execute(
        sa.update(incident_alerts)
        .where(incident_alerts.c.incident_id.in_(list(into)))
        .values(incident_id=sa.case(into, value=incident_alerts.c.incident_id))
    )
    result = await conn.execute(
        sa.update(incidents)
        .where(incidents.c.id.in_(list(into)), incidents.c.status.in_(_OPEN))
        .values(status=IncidentStatus.CLOSED.value, resolved_at=now,
                merged_into=sa.case(into, value=incidents.c.id))
        .returning(*_STATE_COLUMNS[conn.dialect.name])
    )
    closed = {r.id: _state(r) for r in result}
    return [closed[f] for f, _ in merges if f in closed]


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
        .where(incident_alerts.c.incident_id.in_(padded(ids)))
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
        .where(incidents.c.id.in_(padded(set(incident_ids))))
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


async def set_roles(conn: AsyncConnection, incident_ids: Collection[int], *,
                    settled: Collection[int] = (), added_at: datetime | None = None) -> int:
    """Give the alerts of each incident their role from their CI and the incident's
    stored root-cause CI (`set_impact` writes it first). Writes only the links whose
    role changes; returns how many.

    `settled`: incidents whose root did not change and that took no links from another
    incident. A role depends only on the alert's CI, which never changes, and the root,
    so of their links only those added at `added_at` (linked with a first guess) can be
    wrong: only those are looked at (an index seek), a big incident's others not at all.
    One statement for the settled incidents, one for the others."""
    unsettled = [i for i in incident_ids if i not in settled]
    settled_ids = [i for i in incident_ids if i in settled] if added_at is not None else []
    if not unsettled and not settled_ids:
        return 0
    ci, root = alerts.c.ci_id, incidents.c.root_cause_ci
    # A bound alert whose CI is not the root (or with no root) is a symptom: `ci == NULL`
    # is not true.
    role = sa.case((ci.is_(None), Role.UNBOUND.value), (ci == root, Role.ROOT_CAUSE.value),
                   else_=Role.SYMPTOM.value)
    # UPDATE … FROM alerts, incidents (SQLite ≥ 3.33, PostgreSQL): one lookup of the
    # alert per link, where a subquery for its CI was run once per mention (four); the
    # root read from the incident, so the text is the same whatever the incidents.
    update = (sa.update(incident_alerts)
              .where(alerts.c.id == incident_alerts.c.alert_id,
                     incidents.c.id == incident_alerts.c.incident_id,
                     incident_alerts.c.role.is_distinct_from(role))
              .values(role=role))
    written = 0
    if unsettled:
        of_unsettled: sa.ColumnElement[bool] = incident_alerts.c.incident_id.in_(
            padded(unsettled))
        if conn.dialect.name == "postgresql":
            # Joined plainly, a database never analysed hashed every alert (17 ms at
            # 100,000): their alerts are sought by key.
            linked = incident_alerts.alias("linked")
            of_unsettled = sa.and_(of_unsettled, in_found(
                alerts.c.id, linked.c.alert_id, linked.c.incident_id.in_(padded(unsettled))))
        result = await conn.execute(update.where(of_unsettled))
        written += result.rowcount
    if settled_ids:
        result = await conn.execute(
            update.where(incident_alerts.c.incident_id.in_(padded(settled_ids)),
                         incident_alerts.c.added_at == added_at))
        written += result.rowcount
    return written


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
