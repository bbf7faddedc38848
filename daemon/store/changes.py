"""Repository functions for change records."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.models import ChangeRecord
from daemon.store.tables import changes


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
            "links": [{"href": link.href, "text": link.text} for link in change.links],
        },
    )
    return int(result.scalar_one())


async def list_changes(
    conn: AsyncConnection, *, limit: int, before_id: int | None
) -> list[sa.Row[Any]]:
    """Newest first, keyset-paginated on id."""
    query = sa.select(changes).order_by(changes.c.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(changes.c.id < before_id)
    return list(await conn.execute(query))
