"""Repository functions for the tickets ITSM suite connectors keep (`external_tickets`).

One row per (incident, connector), written once the suite has made the ticket. The
sync engine reads it before every event; the inbound endpoint finds the incident from
the suite's ticket id or key; the incident JSON lists them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.store.tables import external_tickets, timeline


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredTicket:
    incident_id: int
    connector: str
    external_id: str
    external_key: str | None
    url: str | None
    created_at: datetime
    updated_at: datetime

    def json(self) -> dict[str, Any]:
        """As the incident JSON shows it."""
        return {"connector": self.connector, "id": self.external_id, "key": self.external_key,
                "url": self.url}


def _row(r: Any) -> StoredTicket:
    return StoredTicket(incident_id=r.incident_id, connector=r.connector,
                        external_id=r.external_id, external_key=r.external_key, url=r.url,
                        created_at=r.created_at, updated_at=r.updated_at)


async def get(conn: AsyncConnection, incident_id: int, connector: str) -> StoredTicket | None:
    row = (await conn.execute(
        sa.select(external_tickets).where(external_tickets.c.incident_id == incident_id,
                                          external_tickets.c.connector == connector))).first()
    return _row(row) if row else None


async def save(conn: AsyncConnection, *, incident_id: int, connector: str, external_id: str,
               external_key: str | None, url: str | None, now: datetime) -> StoredTicket:
    """Store the ticket; one already stored for (incident, connector) is kept and returned.

    The first one wins: a ticket is never swapped for another under an incident.
    """
    stmt = (postgresql.insert(external_tickets) if conn.dialect.name == "postgresql"
            else sqlite.insert(external_tickets))
    await conn.execute(
        stmt.on_conflict_do_nothing(index_elements=[external_tickets.c.incident_id,
                                                    external_tickets.c.connector]),
        {"incident_id": incident_id, "connector": connector, "external_id": external_id,
         "external_key": external_key, "url": url, "created_at": now, "updated_at": now})
    stored = await get(conn, incident_id, connector)
    assert stored is not None
    return stored


async def find(conn: AsyncConnection, connector: str, *, external_id: str | None = None,
               external_key: str | None = None) -> StoredTicket | None:
    """The ticket of `connector` with this id (else this key), if incidentd knows it."""
    for column, value in ((external_tickets.c.external_id, external_id),
                          (external_tickets.c.external_key, external_key)):
        if not value:
            continue
        row = (await conn.execute(
            sa.select(external_tickets)
            .where(external_tickets.c.connector == connector, column == value)
            .order_by(external_tickets.c.id).limit(1))).first()
        if row:
            return _row(row)
    return None


async def of_incidents(conn: AsyncConnection, incident_ids: Iterable[int]
                       ) -> dict[int, list[StoredTicket]]:
    """Each incident's tickets, by connector name."""
    ids = sorted(set(incident_ids))
    if not ids:
        return {}
    result = await conn.execute(
        sa.select(external_tickets).where(external_tickets.c.incident_id.in_(ids))
        .order_by(external_tickets.c.incident_id, external_tickets.c.connector))
    out: dict[int, list[StoredTicket]] = {}
    for r in result:
        out.setdefault(r.incident_id, []).append(_row(r))
    return out


async def note_recorded(conn: AsyncConnection, incident_id: int, origin: str, ref: str) -> bool:
    """Whether a note from `origin` with the suite's reference `ref` is on the timeline."""
    result = await conn.execute(
        sa.select(timeline.c.detail).where(timeline.c.incident_id == incident_id,
                                           timeline.c.kind == "note"))
    return any(isinstance(d, dict) and d.get("origin") == origin and d.get("ref") == ref
               for (d,) in result)
