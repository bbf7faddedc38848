"""Repository functions for escalation state: one `escalations` row per incident.

Set-based: each function runs one statement for a whole batch of incidents.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.models import IncidentStatus, Priority
from daemon.store.in_lists import padded
from daemon.store.tables import escalations, incidents


class LadderState(enum.StrEnum):
    ACTIVE = "active"  # the timer runs: `next_at` is when the next level is notified
    STOPPED = "stopped"  # acknowledged, held, resolved or closed
    EXHAUSTED = "exhausted"  # every level and repeat notified, nobody acknowledged


@dataclass(frozen=True, slots=True, kw_only=True)
class Ladder:
    """Where an incident stands on its escalation policy."""

    incident_id: int
    policy: str
    level: int  # 0-based index into the policy's levels
    cycle: int  # 0 on the first pass through the levels
    state: LadderState
    next_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Subject:
    """What choosing and running a policy needs to know of an incident."""

    id: int
    status: IncidentStatus
    priority: Priority | None
    services: tuple[str, ...]


_SUBJECT_COLUMNS = (incidents.c.id, incidents.c.status, incidents.c.priority,
                    incidents.c.impacted_services)


def _subject(r: Any) -> Subject:
    return Subject(id=r.id, status=IncidentStatus(r.status),
                   priority=Priority(r.priority) if r.priority else None,
                   services=tuple(r.impacted_services or ()))


def _ladder(r: Any) -> Ladder:
    return Ladder(incident_id=r.incident_id, policy=r.policy, level=r.level, cycle=r.cycle,
                  state=LadderState(r.state), next_at=r.next_at, updated_at=r.updated_at)


def _values(ladder: Ladder) -> dict[str, Any]:
    return {"incident_id": ladder.incident_id, "policy": ladder.policy, "level": ladder.level,
            "cycle": ladder.cycle, "state": ladder.state.value, "next_at": ladder.next_at,
            "updated_at": ladder.updated_at}


async def subjects(conn: AsyncConnection, incident_ids: Iterable[int]) -> dict[int, Subject]:
    ids = sorted(set(incident_ids))
    if not ids:
        return {}
    result = await conn.execute(sa.select(*_SUBJECT_COLUMNS).where(incidents.c.id.in_(padded(ids))))
    return subjects_of(result)


def subjects_of(rows: Iterable[Any]) -> dict[int, Subject]:
    """The subjects of incident rows already read (any select with these columns)."""
    return {r.id: _subject(r) for r in rows}


async def ladders(conn: AsyncConnection, incident_ids: Iterable[int], *, lock: bool = False
                  ) -> dict[int, Ladder]:
    """The ladders of these incidents; `lock`: held until the transaction ends
    (PostgreSQL; SQLite has one writer at a time anyway)."""
    ids = sorted(set(incident_ids))
    if not ids:
        return {}
    query = (sa.select(escalations).where(escalations.c.incident_id.in_(padded(ids)))
             .order_by(escalations.c.incident_id))  # one lock order: no deadlocks
    if lock:
        query = query.with_for_update()
    return {r.incident_id: _ladder(r) for r in await conn.execute(query)}


async def insert(conn: AsyncConnection, new: Sequence[Ladder]) -> set[int]:
    """Insert ladders; an incident that already has one keeps it. Returns the ids inserted."""
    if not new:
        return set()
    stmt = (postgresql.insert(escalations) if conn.dialect.name == "postgresql"
            else sqlite.insert(escalations))
    stmt = stmt.on_conflict_do_nothing(index_elements=[escalations.c.incident_id])
    # Skipped conflicts return no row, so what comes back is exactly what was inserted.
    result = await conn.execute(stmt.returning(escalations.c.incident_id),
                                [_values(n) for n in new])
    return {r.incident_id for r in result}


async def save(conn: AsyncConnection, changed: Sequence[Ladder]) -> None:
    """Write these ladders over the stored ones (the caller holds their locks)."""
    if not changed:
        return
    await conn.execute(
        sa.update(escalations).where(escalations.c.incident_id == sa.bindparam("id"))
        .values(policy=sa.bindparam("policy"), level=sa.bindparam("level"),
                cycle=sa.bindparam("cycle"), state=sa.bindparam("state"),
                next_at=sa.bindparam("next_at"), updated_at=sa.bindparam("updated_at")),
        [{**_values(c), "id": c.incident_id} for c in changed],
    )


async def due(conn: AsyncConnection, now: datetime, *, limit: int
              ) -> list[tuple[Ladder, Subject]]:
    """Active ladders whose timer has run out, with their incidents, oldest first.

    On PostgreSQL the ladders are locked and those another replica holds are
    skipped, so no level is notified twice. Their incidents are locked too: an
    acknowledgement in flight holds its incident's row, so the ladder is skipped
    rather than escalated past an acknowledgement that is about to commit; and an
    acknowledgement arriving after the lock waits, so it comes after the level.
    """
    query = (
        sa.select(escalations, *_SUBJECT_COLUMNS)
        .join(incidents, incidents.c.id == escalations.c.incident_id)
        .where(escalations.c.state == LadderState.ACTIVE.value, escalations.c.next_at <= now)
        .order_by(escalations.c.next_at, escalations.c.incident_id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=[escalations, incidents])
    )
    return [(_ladder(r), _subject(r)) for r in await conn.execute(query)]
