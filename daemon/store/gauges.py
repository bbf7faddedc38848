"""What the daemon's gauges show, read from the store: the store is the authority, the
gauges are caches rebuilt from it at start and refreshed from it on a timer."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.models import OPEN_STATUSES
from daemon.store.notifications import State
from daemon.store.runbooks import PENDING_APPROVAL
from daemon.store.tables import incidents, notifications, runbook_runs

_OPEN = [s.value for s in OPEN_STATUSES]


async def open_incidents(conn: AsyncConnection) -> list[tuple[int, str | None, str]]:
    """Every open incident as (id, priority or None, status)."""
    result = await conn.execute(
        sa.select(incidents.c.id, incidents.c.priority, incidents.c.status)
        .where(incidents.c.status.in_(_OPEN))
    )
    return [(r.id, r.priority, r.status) for r in result]


@dataclass(frozen=True, slots=True)
class Backlog:
    pending_approvals: int  # runbook runs waiting for a person's approval
    outbox_pending: int  # notifications not yet delivered (incl. backing off)


async def backlog(conn: AsyncConnection) -> Backlog:
    """Both backlogs in one round trip."""
    approvals = (sa.select(sa.func.count()).select_from(runbook_runs)
                 .where(runbook_runs.c.status == PENDING_APPROVAL).scalar_subquery())
    outbox = (sa.select(sa.func.count()).select_from(notifications)
              .where(notifications.c.state == State.PENDING.value).scalar_subquery())
    row = (await conn.execute(sa.select(approvals, outbox))).one()
    return Backlog(pending_approvals=int(row[0]), outbox_pending=int(row[1]))
