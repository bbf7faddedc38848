"""Repository functions for alerts. Set-based: one statement per batch, never per alert."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.models import Alert, AlertStatus, Link, Severity
from daemon.store import incidents as incident_store
from daemon.store.in_lists import padded
from daemon.store.tables import UTCDateTime, alerts, in_utc, incident_alerts

FIRING = sa.text("status = 'firing'")


def identities(keys: Iterable[tuple[str, str]]) -> sa.ColumnElement[bool]:
    """`(source, fingerprint) IN keys`, written as `source = s AND fingerprint IN (...)`
    per source: SQLite seeks an index for that, while for a row-value IN it scanned
    every alert ever stored, every batch."""
    by_source: dict[str, list[str]] = {}
    for source, fingerprint in keys:
        by_source.setdefault(source, []).append(fingerprint)
    return sa.or_(*(sa.and_(alerts.c.source == source,
                            alerts.c.fingerprint.in_(padded(fingerprints)))
                    for source, fingerprints in sorted(by_source.items())))


@dataclass(frozen=True, slots=True)
class UpsertedAlert:
    id: int
    source: str
    fingerprint: str
    occurrences: int

    @property
    def is_new(self) -> bool:
        return self.occurrences == 1


@dataclass(frozen=True, slots=True)
class ResolvedAlert:
    id: int
    source: str
    fingerprint: str
    ci_id: str | None
    incident_ids: tuple[int, ...]


def _on_conflict(stmt: Any) -> Any:
    """A repeat of a firing alert: one more occurrence, its latest text and times."""
    return stmt.on_conflict_do_update(
        index_elements=[alerts.c.source, alerts.c.fingerprint],
        index_where=FIRING,
        set_={
            "occurrences": alerts.c.occurrences + 1,
            "last_seen": stmt.excluded.last_seen,
            "summary": stmt.excluded.summary,
            "annotations": stmt.excluded.annotations,
            "ends_at": stmt.excluded.ends_at,
            "generator_url": stmt.excluded.generator_url,
            "links": stmt.excluded.links,
            "details": stmt.excluded.details,
        },
    ).returning(alerts.c.id, alerts.c.source, alerts.c.fingerprint, alerts.c.occurrences)


# The columns an alert brings, as PostgreSQL arrays of these element types (JSON as text).
_ARRAYS: dict[str, Any] = {
    "source": sa.Text(), "integration": sa.Text(), "fingerprint": sa.Text(),
    "severity": sa.Text(), "summary": sa.Text(), "labels": sa.Text(),
    "annotations": sa.Text(), "starts_at": sa.DateTime(timezone=True),
    "ends_at": sa.DateTime(timezone=True), "generator_url": sa.Text(), "group_key": sa.Text(),
    "ci_id": sa.Text(), "links": sa.Text(), "details": sa.Text(),
}
_JSON_COLUMNS = frozenset({"labels", "annotations", "links", "details"})


def _pg_upsert() -> Any:
    """PostgreSQL: the batch as one array per column, unnested. Its text is the same
    whatever the batch's size, so it is prepared once; with a VALUES row per alert each
    new row count was a new text, which PostgreSQL took 20 to 40 ms to prepare for 800
    alerts (measured), and SQLAlchemy bound every row's 18 values one by one."""
    given = sa.func.unnest(*(sa.bindparam(name, type_=postgresql.ARRAY(element))
                             for name, element in _ARRAYS.items())
                           ).table_valued(*_ARRAYS).render_derived()
    now = sa.bindparam("now", type_=UTCDateTime())
    values = {name: sa.cast(given.c[name], postgresql.JSON) if name in _JSON_COLUMNS
              else given.c[name] for name in _ARRAYS}
    values |= {"status": sa.literal(AlertStatus.FIRING.value), "occurrences": sa.literal(1),
               "first_seen": now, "last_seen": now}
    rows = sa.select(*values.values())
    return _on_conflict(postgresql.insert(alerts).from_select(list(values), rows))


def _sqlite_upsert() -> Any:
    """SQLite: the batch as one JSON array, read with `json_each`: one text at any batch
    size (SQLite prepares a VALUES row per alert anew for each row count), and the
    values are taken apart by SQLite, not bound one by one by SQLAlchemy."""
    each = sa.func.json_each(sa.bindparam("batch", type_=sa.Text())).table_valued("value")
    now = sa.bindparam("now", type_=UTCDateTime())
    values: dict[str, Any] = {name: sa.func.json_extract(each.c.value, f"$.{name}")
                              for name in _ARRAYS}
    values |= {"status": sa.literal(AlertStatus.FIRING.value), "occurrences": sa.literal(1),
               "first_seen": now, "last_seen": now}
    # `WHERE true`: SQLite reads INSERT … SELECT … ON CONFLICT as a join without it.
    rows = sa.select(*values.values()).where(sa.true())
    return _on_conflict(sqlite.insert(alerts).from_select(list(values), rows))


# Built once: a statement built per call costs its cache key every time.
_UPSERT = {"postgresql": _pg_upsert(), "sqlite": _sqlite_upsert()}


async def upsert_firing(
    conn: AsyncConnection, batch: Sequence[Alert], now: datetime
) -> list[UpsertedAlert]:
    """Insert firing alerts; an identity that is already firing is updated instead.

    The caller guarantees each (source, fingerprint) appears once in `batch`:
    PostgreSQL refuses to update one row twice in a statement.
    """
    if not batch:
        return []
    dialect = conn.dialect.name
    params = _arrays(batch, now) if dialect == "postgresql" else _json_batch(batch, now)
    result = await conn.execute(_UPSERT[dialect], params)
    return [UpsertedAlert(r.id, r.source, r.fingerprint, r.occurrences) for r in result]


def _arrays(batch: Sequence[Alert], now: datetime) -> dict[str, Any]:
    dumps = orjson.dumps
    return {
        "source": [a.source for a in batch],
        "integration": [a.integration for a in batch],
        "fingerprint": [a.fingerprint for a in batch],
        "severity": [a.severity.value for a in batch],
        "summary": [a.summary for a in batch],
        "labels": [dumps(a.labels).decode() for a in batch],
        "annotations": [dumps(a.annotations).decode() for a in batch],
        "starts_at": [in_utc(a.starts_at) for a in batch],
        "ends_at": [None if a.ends_at is None else in_utc(a.ends_at) for a in batch],
        "generator_url": [a.generator_url for a in batch],
        "group_key": [a.group_key for a in batch],
        "ci_id": [a.ci_id for a in batch],
        "links": [dumps([k.as_json() for k in a.links]).decode() for a in batch],
        "details": [dumps(a.details).decode() for a in batch],
        "now": now,
    }


def _json_batch(batch: Sequence[Alert], now: datetime) -> dict[str, Any]:
    rows = [{
        "source": a.source,
        "integration": a.integration,
        "fingerprint": a.fingerprint,
        "severity": a.severity.value,
        "summary": a.summary,
        "labels": a.labels,
        "annotations": a.annotations,
        "starts_at": _sqlite_time(a.starts_at),
        "ends_at": None if a.ends_at is None else _sqlite_time(a.ends_at),
        "generator_url": a.generator_url,
        "group_key": a.group_key,
        "ci_id": a.ci_id,
        "links": [link.as_json() for link in a.links],
        "details": a.details,
    } for a in batch]
    return {"batch": orjson.dumps(rows).decode(), "now": now}


def _sqlite_time(at: datetime) -> str:
    """A time as `UTCDateTime` stores it on SQLite (SQLAlchemy's text form, in UTC), so
    that the stored text compares and reads back like every other time."""
    return in_utc(at).replace(tzinfo=None).isoformat(" ", "microseconds")


async def resolve_firing(
    conn: AsyncConnection, batch: Sequence[Alert], now: datetime
) -> list[ResolvedAlert]:
    """Resolve the firing alerts named in `batch`; names with nothing firing are skipped."""
    if not batch:
        return []
    ends = {(a.source, a.fingerprint): a.ends_at or now for a in batch}
    # The firing alerts and their incidents in one read (an alert in no incident: a row
    # with no incident id).
    found: dict[int, tuple[str, str, str | None, list[int]]] = {}
    for alert_id, source, fingerprint, ci_id, incident_id in await conn.execute(
            _FIRING_WITH_INCIDENTS.where(identities(ends))):
        links = found.setdefault(alert_id, (source, fingerprint, ci_id, []))[3]
        if incident_id is not None:
            links.append(incident_id)
    if not found:
        return []
    await conn.execute(_RESOLVE, [{"alert_id": i, "now": now, "ends": ends[(s, f)]}
                                  for i, (s, f, _, _) in found.items()])
    return [ResolvedAlert(i, s, f, ci, tuple(links)) for i, (s, f, ci, links) in found.items()]


# "Firing", written so that no planner looks it up in the index on status: SQLite,
# without statistics, took that index for a few identities and read every firing alert.
# The identities' index finds their few rows (each time they fired), tested one by one.
_FIRING_NOT_INDEXED = alerts.c.status.concat("") == AlertStatus.FIRING.value
_FIRING_WITH_INCIDENTS = (
    sa.select(alerts.c.id, alerts.c.source, alerts.c.fingerprint, alerts.c.ci_id,
              incident_alerts.c.incident_id)
    .outerjoin(incident_alerts, incident_alerts.c.alert_id == alerts.c.id)
    .where(_FIRING_NOT_INDEXED)
    .order_by(alerts.c.id)
)
_RESOLVE = (
    sa.update(alerts)
    .where(alerts.c.id == sa.bindparam("alert_id"))
    .values(status=AlertStatus.RESOLVED.value,
            resolved_at=sa.bindparam("now", type_=UTCDateTime()),
            last_seen=sa.bindparam("now", type_=UTCDateTime()),
            ends_at=sa.bindparam("ends", type_=UTCDateTime()))
)


async def resolve_of_incident(conn: AsyncConnection, incident_id: int, now: datetime) -> int:
    """Resolve every firing alert of an incident resolved by hand; returns how many."""
    member = sa.select(incident_alerts.c.alert_id).where(
        incident_alerts.c.incident_id == incident_id
    )
    result = await conn.execute(
        sa.update(alerts)
        .where(alerts.c.id.in_(member), alerts.c.status == AlertStatus.FIRING.value)
        .values(status=AlertStatus.RESOLVED.value, resolved_at=now, last_seen=now,
                ends_at=sa.func.coalesce(alerts.c.ends_at, now))
        .returning(alerts.c.ci_id)
    )
    resolved = result.scalars().all()
    if any(ci is not None for ci in resolved):  # their last_seen moved: so does the incident's
        await incident_store.active_at(conn, [incident_id], now)
    return len(resolved)


async def firing_incident_ids(
    conn: AsyncConnection, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], tuple[int, ...]]:
    """For each (source, fingerprint) that is firing, the incidents its alert belongs to."""
    result = await conn.execute(
        sa.select(alerts.c.source, alerts.c.fingerprint, incident_alerts.c.incident_id)
        .join(incident_alerts, incident_alerts.c.alert_id == alerts.c.id)
        .where(_FIRING_NOT_INDEXED, identities(keys))
    )
    out: dict[tuple[str, str], list[int]] = {}
    for r in result:
        out.setdefault((r.source, r.fingerprint), []).append(r.incident_id)
    return {k: tuple(v) for k, v in out.items()}


async def incident_ids_of(
    conn: AsyncConnection, alert_ids: Sequence[int]
) -> dict[int, tuple[int, ...]]:
    if not alert_ids:
        return {}
    result = await conn.execute(
        sa.select(incident_alerts.c.alert_id, incident_alerts.c.incident_id).where(
            incident_alerts.c.alert_id.in_(padded(alert_ids))
        )
    )
    out: dict[int, list[int]] = {}
    for r in result:
        out.setdefault(r.alert_id, []).append(r.incident_id)
    return {k: tuple(v) for k, v in out.items()}


async def list_alerts(
    conn: AsyncConnection, *, status: AlertStatus | None, limit: int, before_id: int | None
) -> list[sa.Row[Any]]:
    """Newest first, keyset-paginated on id."""
    query = sa.select(alerts).order_by(alerts.c.id.desc()).limit(limit)
    if status is not None:
        query = query.where(alerts.c.status == status.value)
    if before_id is not None:
        query = query.where(alerts.c.id < before_id)
    return list(await conn.execute(query))


@dataclass(frozen=True, slots=True)
class EarlierFirings:
    """Earlier alerts of the identities of new alerts: (alert id, first seen), oldest first."""

    by_identity: dict[tuple[str, str], list[tuple[int, datetime]]]

    def since(self, alert: Alert, start: datetime) -> tuple[int, int]:
        """How often the alert's identity fired since `start`, and the latest of those ids."""
        found = [i for i, seen in self.by_identity.get((alert.source, alert.fingerprint), ())
                 if seen >= start]
        return len(found), max(found, default=0)


_EARLIER = (
    sa.select(alerts.c.source, alerts.c.fingerprint, alerts.c.id, alerts.c.first_seen)
    .where(alerts.c.first_seen >= sa.bindparam("since", type_=UTCDateTime()),
           alerts.c.id.not_in(sa.bindparam("ids", expanding=True)))
    .order_by(alerts.c.id)
)


# PostgreSQL: the batch's identities as arrays, joined. Its plan does not depend on
# statistics: with `fingerprint IN (…)` a table never analysed (a server with autovacuum
# off) was read by source and time only, every alert of the window filtered (27 ms a
# batch at 80,000 alerts); a join from the few identities seeks each one.
_KEYS = sa.func.unnest(sa.bindparam("sources", type_=postgresql.ARRAY(sa.Text())),
                       sa.bindparam("fingerprints", type_=postgresql.ARRAY(sa.Text()))
                       ).table_valued("source", "fingerprint").render_derived()
_PG_EARLIER = (
    sa.select(alerts.c.source, alerts.c.fingerprint, alerts.c.id, alerts.c.first_seen)
    .select_from(_KEYS)
    .join(alerts, sa.and_(alerts.c.source == _KEYS.c.source,
                          alerts.c.fingerprint == _KEYS.c.fingerprint))
    .where(alerts.c.first_seen >= sa.bindparam("since", type_=UTCDateTime()),
           alerts.c.id != sa.all_(sa.bindparam("ids", type_=postgresql.ARRAY(sa.BigInteger()))))
    .order_by(alerts.c.id)
)


async def earlier_firings(
    conn: AsyncConnection, new: Sequence[tuple[Alert, int]], *, since: datetime
) -> EarlierFirings:
    """One query per batch serves both flapping and reopening."""
    if not new:
        return EarlierFirings({})
    ids = [i for _, i in new]
    if conn.dialect.name == "postgresql":
        keys = sorted({(a.source, a.fingerprint) for a, _ in new})
        result = await conn.execute(_PG_EARLIER, {
            "since": since, "ids": ids, "sources": [k[0] for k in keys],
            "fingerprints": [k[1] for k in keys]})
    else:
        result = await conn.execute(
            _EARLIER.where(identities((a.source, a.fingerprint) for a, _ in new)),
            {"since": since, "ids": padded(ids)})
    out: dict[tuple[str, str], list[tuple[int, datetime]]] = {}
    for r in result:
        out.setdefault((r.source, r.fingerprint), []).append((r.id, r.first_seen))
    return EarlierFirings(out)


async def mark_flapping(conn: AsyncConnection, alert_ids: Sequence[int]) -> None:
    if alert_ids:
        await conn.execute(
            sa.update(alerts).where(alerts.c.id.in_(padded(alert_ids))).values(flapping=True)
        )


def alert_from_row(row: Any) -> Alert:
    """The domain value of a stored alert (a row of `alerts`), e.g. to correlate it later."""
    return Alert(
        source=row.source,
        integration=row.integration,
        fingerprint=row.fingerprint,
        status=AlertStatus(row.status),
        severity=Severity(row.severity),
        summary=row.summary,
        labels=row.labels,
        annotations=row.annotations,
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        generator_url=row.generator_url,
        group_key=row.group_key,
        ci_id=row.ci_id,
        links=tuple(Link(href=x["href"], text=x.get("text", "")) for x in row.links),
        details=row.details,
    )
