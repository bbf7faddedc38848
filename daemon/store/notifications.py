"""Repository functions for the notification outbox (`notifications`).

The outbox is written in the transaction of the change that caused each event
and read by the sender in short transactions of its own: claim what is due
(with a lease), deliver outside any transaction, record the outcomes.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.store.in_lists import padded
from daemon.store.tables import (
    escalations,
    incident_alerts,
    incidents,
    notifications,
    timeline,
)


class State(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


@dataclass(frozen=True, slots=True, kw_only=True)
class TimelineRow:
    id: int
    incident_id: int
    at: datetime
    actor: str
    kind: str
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class NewNotification:
    event_id: str
    event_type: str
    incident_id: int | None
    timeline_id: int | None
    target: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class Notification:
    """One row of the outbox, as stored (`payload` only when asked for)."""

    id: int
    event_id: str
    event_type: str
    incident_id: int | None
    timeline_id: int | None
    target: str
    state: State
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    last_status: int | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None
    payload: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What one delivery attempt ended in, to be written over the claimed row."""

    id: int
    state: State
    attempts: int
    next_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    delivered_at: datetime | None


_SUMMARY = tuple(c for c in notifications.c if c.name != "payload")


def _row(r: Any, *, payload: bool) -> Notification:
    return Notification(
        id=r.id, event_id=r.event_id, event_type=r.event_type, incident_id=r.incident_id,
        timeline_id=r.timeline_id, target=r.target, state=State(r.state), attempts=r.attempts,
        next_attempt_at=r.next_attempt_at, last_error=r.last_error, last_status=r.last_status,
        created_at=r.created_at, updated_at=r.updated_at, delivered_at=r.delivered_at,
        payload=r.payload if payload else None,
    )


# -- writing events ----------------------------------------------------------


async def timeline_at(conn: AsyncConnection, incident_ids: Iterable[int], at: datetime,
                      kinds: Iterable[str]) -> list[TimelineRow]:
    """The timeline entries of these incidents written at `at`, of these kinds, in order."""
    ids = sorted(set(incident_ids))
    if not ids:
        return []
    result = await conn.execute(
        sa.select(timeline)
        .where(timeline.c.incident_id.in_(padded(ids)), timeline.c.at == at,
               timeline.c.kind.in_(list(kinds)))
        .order_by(timeline.c.id)
    )
    return [TimelineRow(id=r.id, incident_id=r.incident_id, at=r.at, actor=r.actor,
                        kind=r.kind, detail=r.detail) for r in result]


async def incident_rows(conn: AsyncConnection, incident_ids: Iterable[int]) -> dict[int, Any]:
    """Each incident's row, with `alerts_count`, `escalation_policy` and `escalation_level`
    (0-based; None without a ladder), in one query."""
    ids = sorted(set(incident_ids))
    if not ids:
        return {}
    count = (sa.select(sa.func.count()).select_from(incident_alerts)
             .where(incident_alerts.c.incident_id == incidents.c.id)
             .scalar_subquery().label("alerts_count"))
    result = await conn.execute(
        sa.select(incidents, count, escalations.c.policy.label("escalation_policy"),
                  escalations.c.level.label("escalation_level"))
        .select_from(incidents.outerjoin(escalations,
                                         escalations.c.incident_id == incidents.c.id))
        .where(incidents.c.id.in_(padded(ids)))
    )
    return {r.id: r for r in result}


async def insert_new(conn: AsyncConnection, rows: Sequence[NewNotification], now: datetime
                     ) -> int:
    """Insert pending notifications; one already there for (event, target) is kept.

    Returns how many were inserted.
    """
    if not rows:
        return 0
    stmt = (postgresql.insert(notifications) if conn.dialect.name == "postgresql"
            else sqlite.insert(notifications))
    stmt = stmt.on_conflict_do_nothing(
        index_elements=[notifications.c.event_id, notifications.c.target])
    values = [{"event_id": n.event_id, "event_type": n.event_type,
               "incident_id": n.incident_id, "timeline_id": n.timeline_id,
               "target": n.target, "payload": n.payload, "state": State.PENDING.value,
               "attempts": 0, "next_attempt_at": now, "created_at": now, "updated_at": now}
              for n in rows]
    # Skipped conflicts return no row: what comes back is exactly what was inserted.
    result = await conn.execute(stmt.returning(notifications.c.id), values)
    return len(result.all())


# -- the sender --------------------------------------------------------------


async def due(conn: AsyncConnection, now: datetime, *, limit: int,
              ordered: Collection[str] = ()) -> list[Notification]:
    """Pending notifications whose time has come, oldest first, with their payloads.

    On PostgreSQL they stay locked until the caller's transaction ends and rows
    another replica holds are skipped; SQLite has one writer, which is as good.

    For the targets named in `ordered` (ITSM connectors) an incident's events go one
    at a time, in order: a row is not due while an earlier row of the same target and
    incident is still pending (leased or waiting to retry), so a suite never sees a
    resolution before the creation of its ticket. A dead row no longer holds others up.
    """
    query = (
        sa.select(notifications)
        .where(notifications.c.state == State.PENDING.value,
               notifications.c.next_attempt_at <= now)
        .order_by(notifications.c.next_attempt_at, notifications.c.id)
        .limit(limit)
    )
    if ordered:
        earlier = notifications.alias("earlier")
        waiting = (sa.select(earlier.c.id)
                   .where(earlier.c.target == notifications.c.target,
                          earlier.c.incident_id == notifications.c.incident_id,
                          earlier.c.state == State.PENDING.value,
                          earlier.c.id < notifications.c.id)
                   .correlate(notifications))
        query = query.where(sa.or_(notifications.c.target.not_in(sorted(ordered)),
                                   notifications.c.incident_id.is_(None),
                                   ~sa.exists(waiting)))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return [_row(r, payload=True) for r in await conn.execute(query)]


async def postpone(conn: AsyncConnection, until: Sequence[tuple[int, datetime]],
                   now: datetime) -> None:
    """Set `next_attempt_at` of these (id, when) pairs: a lease, or a rate-limit wait."""
    if until:
        await conn.execute(
            sa.update(notifications).where(notifications.c.id == sa.bindparam("k_id"))
            .values(next_attempt_at=sa.bindparam("v_at"), updated_at=now),
            [{"k_id": i, "v_at": at} for i, at in until],
        )


async def record(conn: AsyncConnection, outcomes: Sequence[Outcome], now: datetime) -> None:
    """Write the outcome of each attempt over its (still pending) row."""
    if not outcomes:
        return
    await conn.execute(
        sa.update(notifications)
        .where(notifications.c.id == sa.bindparam("k_id"),
               notifications.c.state == State.PENDING.value)
        .values(state=sa.bindparam("v_state"), attempts=sa.bindparam("v_attempts"),
                next_attempt_at=sa.bindparam("v_next"), last_status=sa.bindparam("v_status"),
                last_error=sa.bindparam("v_error"), delivered_at=sa.bindparam("v_delivered"),
                updated_at=now),
        [{"k_id": o.id, "v_state": o.state.value, "v_attempts": o.attempts,
          "v_next": o.next_attempt_at, "v_status": o.last_status, "v_error": o.last_error,
          "v_delivered": o.delivered_at} for o in outcomes],
    )


async def pending_and_due(conn: AsyncConnection, now: datetime) -> tuple[int, int]:
    """How many notifications are pending, and how many of those are due by `now`."""
    is_due = sa.case((notifications.c.next_attempt_at <= now, 1), else_=0)
    row = (await conn.execute(
        sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(is_due), 0))
        .select_from(notifications)
        .where(notifications.c.state == State.PENDING.value))).one()
    return int(row[0]), int(row[1])


# -- the API -----------------------------------------------------------------


async def list_notifications(conn: AsyncConnection, *, state: State | None,
                             incident_id: int | None, target: str | None, limit: int,
                             before_id: int | None) -> list[Notification]:
    """Newest first, keyset-paginated on id, without payloads."""
    query = sa.select(*_SUMMARY).order_by(notifications.c.id.desc()).limit(limit)
    if state is not None:
        query = query.where(notifications.c.state == state.value)
    if incident_id is not None:
        query = query.where(notifications.c.incident_id == incident_id)
    if target is not None:
        query = query.where(notifications.c.target == target)
    if before_id is not None:
        query = query.where(notifications.c.id < before_id)
    return [_row(r, payload=False) for r in await conn.execute(query)]


async def get(conn: AsyncConnection, notification_id: int) -> Notification | None:
    row = (await conn.execute(
        sa.select(notifications).where(notifications.c.id == notification_id))).first()
    return _row(row, payload=True) if row else None


async def resend(conn: AsyncConnection, notification_id: int, now: datetime) -> bool:
    """Make a delivered or dead notification pending again, due now, as if new.

    False when there is no such row or it is pending already.
    """
    result = await conn.execute(
        sa.update(notifications)
        .where(notifications.c.id == notification_id,
               notifications.c.state.in_([State.DELIVERED.value, State.DEAD.value]))
        .values(state=State.PENDING.value, attempts=0, next_attempt_at=now, last_error=None,
                last_status=None, delivered_at=None, updated_at=now)
        .returning(notifications.c.id)
    )
    return result.first() is not None
