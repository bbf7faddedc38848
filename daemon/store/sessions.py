"""Console sign-outs: the ids of sessions ended before their cookie expired.

A console session is a signed cookie and nothing on the server, so "Sign out" alone
would only make this browser forget it; a copy (another tab's, a stolen one) would
still work. Signing out records the session's id here, where every replica looks.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.store.tables import console_signouts


async def revoke(conn: AsyncConnection, session_id: str, expires_at: datetime, *,
                 now: datetime) -> None:
    """End session `session_id` (its cookie expires at `expires_at`); drop the rows of
    sessions whose cookies have expired since, which no longer need refusing. Signing
    out twice (two tabs) is no error."""
    await conn.execute(sa.delete(console_signouts).where(console_signouts.c.expires_at <= now))
    insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(
        console_signouts)
    await conn.execute(
        insert.on_conflict_do_nothing(index_elements=[console_signouts.c.session_id]),
        {"session_id": session_id, "expires_at": expires_at})


async def is_revoked(conn: AsyncConnection, session_id: str) -> bool:
    """Whether session `session_id` was signed out (one primary-key lookup)."""
    row = (await conn.execute(sa.select(sa.literal(1)).select_from(console_signouts)
                              .where(console_signouts.c.session_id == session_id))).first()
    return row is not None
