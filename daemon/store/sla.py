"""Repository functions for SLA clocks: read, insert, update and find the ones due."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.store.in_lists import padded
from daemon.store.tables import incidents, sla_clocks


@dataclass(frozen=True, slots=True, kw_only=True)
class ClockRow:
    """One row of `sla_clocks`, as stored (see tables.py for what each column means)."""

    incident_id: int
    clock: str
    policy: str
    priority: str
    target_seconds: int
    elapsed_seconds: float
    since: datetime | None
    started_at: datetime
    state: str
    paused: bool
    warned: int
    due_at: datetime | None
    breached_at: datetime | None
    stopped_at: datetime | None
    next_check_at: datetime | None

    @property
    def key(self) -> tuple[int, str]:
        return self.incident_id, self.clock


@dataclass(frozen=True, slots=True, kw_only=True)
class IncidentFacts:
    """What decides whether an incident's clocks run, pause or stop."""

    id: int
    status: str
    priority: str | None
    created_at: datetime
    acknowledged_at: datetime | None
    resolved_at: datetime | None
    merged_into: int | None


_FIELDS = tuple(ClockRow.__dataclass_fields__)
_KEY = ("incident_id", "clock")


def _row(r: Any) -> ClockRow:
    return ClockRow(**{name: getattr(r, name) for name in _FIELDS})


async def incident_facts(conn: AsyncConnection, incident_ids: Iterable[int]
                         ) -> dict[int, IncidentFacts]:
    ids = sorted(set(incident_ids))
    if not ids:
        return {}
    result = await conn.execute(
        sa.select(incidents.c.id, incidents.c.status, incidents.c.priority,
                  incidents.c.created_at, incidents.c.acknowledged_at,
                  incidents.c.resolved_at, incidents.c.merged_into)
        .where(incidents.c.id.in_(padded(ids)))
    )
    return facts_of(result)


def facts_of(rows: Iterable[Any]) -> dict[int, IncidentFacts]:
    """The facts of incident rows already read (any select with these columns)."""
    return {r.id: IncidentFacts(id=r.id, status=r.status, priority=r.priority,
                                created_at=r.created_at, acknowledged_at=r.acknowledged_at,
                                resolved_at=r.resolved_at, merged_into=r.merged_into)
            for r in rows}


async def clocks_of(conn: AsyncConnection, incident_ids: Iterable[int], *, lock: bool = False
                    ) -> list[ClockRow]:
    """The clocks of these incidents; `lock`: held until the transaction ends (PostgreSQL;
    SQLite has one writer at a time anyway).

    Whoever rewrites clocks from what it read must lock them: the sweep of another
    replica may have breached one and not committed yet. Reading it unlocked, a
    concurrent reconcile would see it still running and breach it a second time.
    """
    ids = sorted(set(incident_ids))
    if not ids:
        return []
    query = (sa.select(sla_clocks).where(sla_clocks.c.incident_id.in_(padded(ids)))
             .order_by(sla_clocks.c.incident_id, sla_clocks.c.clock))  # one lock order
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return [_row(r) for r in await conn.execute(query)]


async def due(conn: AsyncConnection, now: datetime, *, limit: int) -> list[ClockRow]:
    """Clocks whose next check has come, oldest first.

    On PostgreSQL the rows stay locked until the caller's transaction ends and rows
    another transaction holds are skipped, so two replicas never fire the same
    warning or breach. SQLite has a single writer, which gives the same guarantee.
    """
    query = (
        sa.select(sla_clocks)
        .where(sla_clocks.c.next_check_at.is_not(None), sla_clocks.c.next_check_at <= now)
        .order_by(sla_clocks.c.next_check_at, sla_clocks.c.incident_id, sla_clocks.c.clock)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return [_row(r) for r in await conn.execute(query)]


async def insert(conn: AsyncConnection, rows: Sequence[ClockRow]) -> None:
    if rows:
        await conn.execute(sa.insert(sla_clocks), [_columns(r) for r in rows])


async def update(conn: AsyncConnection, rows: Sequence[ClockRow]) -> None:
    """Write every column of these clocks, found by (incident_id, clock)."""
    if not rows:
        return
    # Bind names must differ from column names in an executemany UPDATE.
    values: dict[str, Any] = {name: sa.bindparam(f"v_{name}")
                              for name in _FIELDS if name not in _KEY}
    stmt = (
        sa.update(sla_clocks)
        .where(sla_clocks.c.incident_id == sa.bindparam("k_incident_id"),
               sla_clocks.c.clock == sa.bindparam("k_clock"))
        .values(**values)
    )
    params = [
        {**{f"v_{k}": v for k, v in _columns(r).items() if k not in _KEY},
         "k_incident_id": r.incident_id, "k_clock": r.clock}
        for r in rows
    ]
    await conn.execute(stmt, params)


def _columns(row: ClockRow) -> dict[str, Any]:
    # Not dataclasses.asdict: it deep-copies every value, and this runs per clock on
    # the ingest path.
    return {name: getattr(row, name) for name in _FIELDS}
