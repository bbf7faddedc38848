"""`GET /ui/events`: Server-Sent Events telling pages that an incident changed.

Each stream polls the store about once a second for timeline entries newer than the
last it sent: every change to an incident writes one, whichever replica made it, so
this works behind a load balancer with no broker. The entry's id is the event's id,
so a reconnecting browser (`Last-Event-ID`) misses nothing. Streams end as soon as the
daemon starts shutting down: aiohttp's cleanup waits for every handler, and an open
stream must not hold SIGTERM's drain.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
import sqlalchemy as sa
import structlog
from aiohttp import web

from daemon.api import params
from daemon.models import incident_key
from daemon.store import Store, StoreUnavailable
from daemon.store.tables import timeline

log = structlog.get_logger("incidentd.web")

POLL_SECONDS = 1.0
KEEPALIVE_SECONDS = 15.0
_BATCH = 200


class EventStream:
    def __init__(self, *, store: Store, poll_seconds: float = POLL_SECONDS,
                 keepalive_seconds: float = KEEPALIVE_SECONDS) -> None:
        self._store = store
        self._poll = poll_seconds
        self._keepalive = keepalive_seconds
        self._stopping = asyncio.Event()

    async def close(self, _app: web.Application | None = None) -> None:
        """End every stream (the app's on_shutdown)."""
        self._stopping.set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        last = params.number(request.headers.get("Last-Event-ID", "").strip())
        if last is None:
            last = await self._latest()  # a new page: only what happens from now on
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-store",
            "X-Accel-Buffering": "no"})  # nginx: pass each event on at once
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):  # the browser went away
            await response.write(b"retry: 3000\n\n")
            await self._pump(response, last)
        return response

    async def _pump(self, response: web.StreamResponse, last: int) -> None:
        loop = asyncio.get_running_loop()
        quiet_since = loop.time()
        while not self._stopping.is_set():
            entries = await self._after(last)
            for entry in entries:
                last = entry.id
                await response.write(_event(entry))
            if entries:
                quiet_since = loop.time()
            elif loop.time() - quiet_since >= self._keepalive:
                await response.write(b": keep-alive\n\n")
                quiet_since = loop.time()
            if len(entries) < _BATCH:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self._poll)

    async def _latest(self) -> int:
        # The database away: 503 (the browser retries), not a replay of all history.
        async with self._store.read() as conn:
            value = (await conn.execute(sa.select(sa.func.max(timeline.c.id)))).scalar()
        return int(value or 0)

    async def _after(self, last: int) -> list[Any]:
        """Timeline entries after `last`, oldest first; none while the database is away
        (the stream goes on, and catches up when it is back)."""
        query = (sa.select(timeline.c.id, timeline.c.incident_id, timeline.c.kind)
                 .where(timeline.c.id > last).order_by(timeline.c.id).limit(_BATCH))
        try:
            async with self._store.read() as conn:
                return list(await conn.execute(query))
        except StoreUnavailable:
            return []


def _event(entry: Any) -> bytes:
    data = orjson.dumps({"incident": entry.incident_id, "key": incident_key(entry.incident_id),
                         "kind": entry.kind})
    return b"id: %d\nevent: change\ndata: %s\n\n" % (entry.id, data)
