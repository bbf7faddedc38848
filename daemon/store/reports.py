"""Set-based queries behind the summary report.

Every function takes the ids (or the range) it reports on and runs a few
statements over them, whatever their number: id lists are sent in chunks so
no statement exceeds the drivers' bind-parameter limits (SQLite and asyncpg
both stop near 32k).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.models import TimelineKind
from daemon.store.tables import (
    alerts,
    change_alerts,
    change_incidents,
    changes,
    incident_alerts,
    incidents,
    runbook_runs,
    sla_clocks,
    timeline,
)

CHUNK = 10_000

# The actor of a timeline entry written by a runbook run: `runbook:<name>`.
AUTOMATION_ACTOR_PREFIX = "runbook:"

# Changes that never happened (or not yet) are not judged.
UNJUDGED_CHANGE_STATES = ("cancelled", "rejected", "requested")
FAILED_OUTCOMES = ("failed", "backed_out")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportIncident:
    """The fields of an incident the report counts and times."""

    id: int
    status: str
    priority: str | None
    created_at: datetime
    acknowledged_at: datetime | None
    resolved_at: datetime | None
    impacted_services: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeCounts:
    total: int
    with_incident: int
    failed: int
    # With an incident, failed, or both: what the success rate counts against.
    unsuccessful: int


def chunks(ids: Sequence[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), CHUNK):
        yield list(ids[start:start + CHUNK])


async def incidents_created(
    conn: AsyncConnection, *, since: datetime, until: datetime, priorities: Sequence[str]
) -> list[ReportIncident]:
    """Incidents created in [since, until), merged ones left out, of the given priorities (all
    when empty). The service filter is the caller's: `impacted_services` is a JSON list, and
    matching inside it would take a different operator on each database."""
    query = (
        sa.select(incidents.c.id, incidents.c.status, incidents.c.priority,
                  incidents.c.created_at, incidents.c.acknowledged_at,
                  incidents.c.resolved_at, incidents.c.impacted_services)
        .where(incidents.c.created_at >= since, incidents.c.created_at < until,
               incidents.c.merged_into.is_(None))
        .order_by(incidents.c.id)
    )
    if priorities:
        query = query.where(incidents.c.priority.in_(list(priorities)))
    return [_incident(row) for row in await conn.execute(query)]


def _incident(row: Any) -> ReportIncident:
    services = row.impacted_services if isinstance(row.impacted_services, list) else []
    return ReportIncident(
        id=row.id, status=row.status, priority=row.priority, created_at=row.created_at,
        acknowledged_at=row.acknowledged_at, resolved_at=row.resolved_at,
        impacted_services=tuple(str(s) for s in services),
    )


async def clock_states(conn: AsyncConnection, incident_ids: Sequence[int]
                       ) -> Counter[tuple[str, str]]:
    """How many SLA clocks of these incidents are in each state: {(clock, state): n}."""
    counts: Counter[tuple[str, str]] = Counter()
    for chunk in chunks(incident_ids):
        result = await conn.execute(
            sa.select(sla_clocks.c.clock, sla_clocks.c.state, sa.func.count())
            .where(sla_clocks.c.incident_id.in_(chunk))
            .group_by(sla_clocks.c.clock, sla_clocks.c.state)
        )
        # Chunks hold disjoint incidents, so their counts add up.
        for clock, state, n in result:
            counts[(clock, state)] += int(n)
    return counts


async def reopened_count(conn: AsyncConnection, incident_ids: Sequence[int]) -> int:
    """How many of these incidents were reopened at least once."""
    total = 0
    for chunk in chunks(incident_ids):
        result = await conn.execute(
            sa.select(sa.func.count(sa.distinct(timeline.c.incident_id)))
            .where(timeline.c.incident_id.in_(chunk),
                   timeline.c.kind == TimelineKind.REOPENED.value)
        )
        total += int(result.scalar_one())
    return total


async def linked_alert_count(conn: AsyncConnection, incident_ids: Sequence[int]) -> int:
    """Distinct alerts linked to any of these incidents."""
    parts = list(chunks(incident_ids))
    if len(parts) == 1:
        result = await conn.execute(
            sa.select(sa.func.count(sa.distinct(incident_alerts.c.alert_id)))
            .where(incident_alerts.c.incident_id.in_(parts[0]))
        )
        return int(result.scalar_one())
    # An alert may be linked to incidents in two chunks: count it once.
    seen: set[int] = set()
    for chunk in parts:
        result = await conn.execute(
            sa.select(incident_alerts.c.alert_id).distinct()
            .where(incident_alerts.c.incident_id.in_(chunk))
        )
        seen.update(result.scalars())
    return len(seen)


async def suppressed_alert_count(conn: AsyncConnection, *, since: datetime, until: datetime
                                 ) -> int:
    """Alerts first seen in [since, until) under a change's maintenance that joined no incident."""
    under_change = sa.exists().where(change_alerts.c.alert_id == alerts.c.id)
    in_incident = sa.exists().where(incident_alerts.c.alert_id == alerts.c.id)
    result = await conn.execute(
        sa.select(sa.func.count())
        .select_from(alerts)
        .where(alerts.c.first_seen >= since, alerts.c.first_seen < until,
               under_change, ~in_incident)
    )
    return int(result.scalar_one())


async def change_counts(conn: AsyncConnection, *, since: datetime, until: datetime
                        ) -> ChangeCounts:
    """Changes that occurred in [since, until) and were carried out, by how they went."""
    suspected = sa.exists().where(change_incidents.c.change_id == changes.c.id)
    failed = changes.c.outcome.in_(FAILED_OUTCOMES)

    def tally(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[Any]:
        return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)

    result = await conn.execute(
        sa.select(sa.func.count(), tally(suspected), tally(failed),
                  tally(sa.or_(suspected, failed)))
        .where(changes.c.occurred_at >= since, changes.c.occurred_at < until,
               changes.c.state.not_in(UNJUDGED_CHANGE_STATES))
    )
    total, with_incident, failed_n, unsuccessful = result.one()
    return ChangeCounts(total=int(total), with_incident=int(with_incident),
                        failed=int(failed_n), unsuccessful=int(unsuccessful))


async def resolved_by_automation(conn: AsyncConnection, incident_ids: Sequence[int]) -> int:
    """How many of these incidents were last resolved by a runbook: the latest `resolved`
    entry of their timeline has an actor starting with `runbook:` (a person resolving it
    again after a reopen takes the credit back)."""
    total = 0
    for chunk in chunks(incident_ids):
        latest = (
            sa.select(sa.func.max(timeline.c.id))
            .where(timeline.c.incident_id.in_(chunk),
                   timeline.c.kind == TimelineKind.RESOLVED.value)
            .group_by(timeline.c.incident_id)
        )
        result = await conn.execute(
            sa.select(sa.func.count())
            .where(timeline.c.id.in_(latest),
                   timeline.c.actor.startswith(AUTOMATION_ACTOR_PREFIX, autoescape=True))
        )
        total += int(result.scalar_one())
    return total


async def run_outcomes(conn: AsyncConnection, incident_ids: Sequence[int]) -> Counter[str]:
    """Runbook runs on these incidents, by status."""
    counts: Counter[str] = Counter()
    for chunk in chunks(incident_ids):
        result = await conn.execute(
            sa.select(runbook_runs.c.status, sa.func.count())
            .where(runbook_runs.c.incident_id.in_(chunk))
            .group_by(runbook_runs.c.status)
        )
        for status, n in result:
            counts[status] += int(n)
    return counts
