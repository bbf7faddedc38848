"""Repository functions for change records and their links to alerts and incidents.

`cis` is a JSON list: matching CIs happens in Python (the same on SQLite and
PostgreSQL), after SQL has narrowed the changes down by state and time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.models import AlertStatus, ChangeRecord
from daemon.store.in_lists import padded
from daemon.store.tables import (
    alerts,
    change_alerts,
    change_incidents,
    changes,
    incident_alerts,
    incidents,
)


async def insert_change(conn: AsyncConnection, change: ChangeRecord, now: datetime) -> int:
    result = await conn.execute(
        sa.insert(changes).returning(changes.c.id),
        {
            "integration": change.integration,
            "summary": change.summary,
            "source": change.source,
            "occurred_at": change.occurred_at,
            "received_at": now,
            "details": change.details,
            "links": [link.as_json() for link in change.links],
            "type": change.type,
            "state": change.state,
            "cis": list(change.cis),
            "planned_start": change.planned_start,
            "planned_end": change.planned_end,
            "approver": change.approver,
            "outcome": change.outcome,
            "description": change.description,
            "updated_at": now,
        },
    )
    return int(result.scalar_one())


async def list_changes(
    conn: AsyncConnection, *, limit: int, before_id: int | None,
    states: Sequence[str] | None = None,
) -> list[sa.Row[Any]]:
    """Newest first, keyset-paginated on id."""
    query = sa.select(changes).order_by(changes.c.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(changes.c.id < before_id)
    if states:
        query = query.where(changes.c.state.in_(list(states)))
    return list(await conn.execute(query))


async def get_change(conn: AsyncConnection, change_id: int) -> sa.Row[Any] | None:
    return (await conn.execute(sa.select(changes).where(changes.c.id == change_id))).first()


async def update_change(conn: AsyncConnection, change_id: int, *, expect_state: str,
                        values: dict[str, Any]) -> bool:
    """Update a change still in `expect_state`; False when someone moved it meanwhile."""
    result = await conn.execute(
        sa.update(changes)
        .where(changes.c.id == change_id, changes.c.state == expect_state)
        .values(**values)
    )
    return bool(result.rowcount)


@dataclass(frozen=True, slots=True)
class Window:
    """A change whose maintenance window is open now."""

    change_id: int
    cis: tuple[str, ...]


async def active_windows(conn: AsyncConnection, now: datetime, *, states: Sequence[str]
                         ) -> list[Window]:
    """Changes in `states` with planned_start ≤ now < planned_end (index: state, planned_end)."""
    result = await conn.execute(
        sa.select(changes.c.id, changes.c.cis)
        .where(changes.c.state.in_(list(states)), changes.c.planned_end > now,
               changes.c.planned_start <= now)
        .order_by(changes.c.id)
    )
    return [Window(r.id, tuple(r.cis)) for r in result]


async def windows_ending_after(conn: AsyncConnection, now: datetime, *,
                               states: Sequence[str], limit: int) -> list[sa.Row[Any]]:
    """Changes in `states` with a planned window that has not ended by `now` (open now or
    still to come), soonest start first: the console's maintenance list."""
    result = await conn.execute(
        sa.select(changes)
        .where(changes.c.state.in_(list(states)), changes.c.planned_end > now,
               changes.c.planned_start.is_not(None))
        .order_by(changes.c.planned_start, changes.c.id).limit(limit)
    )
    return list(result.all())


def _insert(conn: AsyncConnection, table: sa.Table) -> Any:
    return postgresql.insert(table) if conn.dialect.name == "postgresql" else sqlite.insert(table)


async def link_alerts(conn: AsyncConnection, pairs: Sequence[tuple[int, int]],
                      now: datetime) -> None:
    """Link (change_id, alert_id) pairs; pairs already linked are left as they are."""
    if pairs:
        await conn.execute(
            _insert(conn, change_alerts).on_conflict_do_nothing(),
            [{"change_id": c, "alert_id": a, "linked_at": now} for c, a in dict.fromkeys(pairs)],
        )


async def releasable(conn: AsyncConnection, *, active_ids: Sequence[int], limit: int
                     ) -> list[sa.Row[Any]]:
    """Firing alerts that some change held back, that no change in `active_ids` holds
    now, and that are in no incident: oldest first."""
    held = sa.exists().where(change_alerts.c.alert_id == alerts.c.id)
    placed = sa.exists().where(incident_alerts.c.alert_id == alerts.c.id)
    query = (
        sa.select(alerts)
        .where(alerts.c.status == AlertStatus.FIRING.value, held, ~placed)
        .order_by(alerts.c.id).limit(limit)
    )
    if active_ids:
        still = sa.exists().where(change_alerts.c.alert_id == alerts.c.id,
                                  change_alerts.c.change_id.in_(padded(active_ids)))
        query = query.where(~still)
    return list(await conn.execute(query))


async def opened_at(conn: AsyncConnection, incident_ids: Sequence[int]
                    ) -> dict[int, tuple[datetime, str | None]]:
    """incident id → (created_at, root-cause CI)."""
    if not incident_ids:
        return {}
    result = await conn.execute(
        sa.select(incidents.c.id, incidents.c.created_at, incidents.c.root_cause_ci)
        .where(incidents.c.id.in_(padded(set(incident_ids))))
    )
    return {r.id: (r.created_at, r.root_cause_ci) for r in result}


async def alert_cis(conn: AsyncConnection, incident_ids: Sequence[int]) -> dict[int, set[str]]:
    """incident id → the CIs its alerts are bound to."""
    if not incident_ids:
        return {}
    result = await conn.execute(
        sa.select(incident_alerts.c.incident_id, alerts.c.ci_id)
        .join(alerts, alerts.c.id == incident_alerts.c.alert_id)
        .where(incident_alerts.c.incident_id.in_(padded(set(incident_ids))),
               alerts.c.ci_id.is_not(None))
        .distinct()
    )
    out: dict[int, set[str]] = {}
    for r in result:
        out.setdefault(r.incident_id, set()).add(r.ci_id)
    return out


async def changes_around(conn: AsyncConnection, *, states: Sequence[str], since: datetime,
                         until: datetime) -> list[Any]:
    """Changes in `states` that started by `until` and ran (or were planned) into `since`."""
    result = await conn.execute(
        sa.select(changes.c.id, changes.c.summary, changes.c.cis, changes.c.occurred_at,
                  changes.c.planned_end)
        .where(changes.c.state.in_(list(states)), changes.c.occurred_at <= until,
               sa.or_(changes.c.occurred_at >= since, changes.c.planned_end >= since))
        .order_by(changes.c.id)
    )
    return list(result.all())


async def link_incidents(conn: AsyncConnection, pairs: Sequence[tuple[int, int]],
                         now: datetime) -> list[tuple[int, int]]:
    """Link (change_id, incident_id) pairs; returns those that were not linked before."""
    if not pairs:
        return []
    result = await conn.execute(
        _insert(conn, change_incidents).on_conflict_do_nothing()
        .returning(change_incidents.c.change_id, change_incidents.c.incident_id),
        [{"change_id": c, "incident_id": i, "linked_at": now} for c, i in dict.fromkeys(pairs)],
    )
    return [(r.change_id, r.incident_id) for r in result]


async def suspected_links(conn: AsyncConnection, incident_ids: Sequence[int]
                          ) -> set[tuple[int, int]]:
    """The (change_id, incident_id) links these incidents already have."""
    if not incident_ids:
        return set()
    result = await conn.execute(
        sa.select(change_incidents.c.change_id, change_incidents.c.incident_id)
        .where(change_incidents.c.incident_id.in_(padded(set(incident_ids))))
    )
    return {(r.change_id, r.incident_id) for r in result}


async def suspects_of(conn: AsyncConnection, incident_ids: Sequence[int]) -> list[sa.Row[Any]]:
    """The changes suspected for these incidents, with `incident_id`; latest change first."""
    if not incident_ids:
        return []
    result = await conn.execute(
        sa.select(changes, change_incidents.c.incident_id)
        .join(change_incidents, change_incidents.c.change_id == changes.c.id)
        .where(change_incidents.c.incident_id.in_(padded(set(incident_ids))))
        .order_by(changes.c.occurred_at.desc(), changes.c.id.desc())
    )
    return list(result.all())


async def alerts_of_change(conn: AsyncConnection, change_id: int) -> list[Any]:
    """Alerts its maintenance window held back, with when they were linked."""
    result = await conn.execute(
        sa.select(alerts.c.id, alerts.c.fingerprint, alerts.c.source, alerts.c.status,
                  alerts.c.severity, alerts.c.summary, alerts.c.ci_id, alerts.c.first_seen,
                  change_alerts.c.linked_at)
        .join(change_alerts, change_alerts.c.alert_id == alerts.c.id)
        .where(change_alerts.c.change_id == change_id)
        .order_by(alerts.c.id)
    )
    return list(result.all())


async def incidents_of_change(conn: AsyncConnection, change_id: int) -> list[Any]:
    """Incidents it is suspected of, with when that was noticed."""
    result = await conn.execute(
        sa.select(incidents.c.id, incidents.c.title, incidents.c.status, incidents.c.priority,
                  incidents.c.created_at, change_incidents.c.linked_at)
        .join(change_incidents, change_incidents.c.incident_id == incidents.c.id)
        .where(change_incidents.c.change_id == change_id)
        .order_by(incidents.c.id)
    )
    return list(result.all())
