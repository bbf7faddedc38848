"""`GET /api/v1/changes`: change records, newest first."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from daemon.api import params
from daemon.api.pages import page
from daemon.api.responses import json_response
from daemon.api.serialize import timestamp
from daemon.store import Store
from daemon.store import changes as change_store


def change_json(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "integration": r.integration,
        "summary": r.summary,
        "source": r.source,
        "occurred_at": timestamp(r.occurred_at),
        "received_at": timestamp(r.received_at),
        "details": r.details,
        "links": r.links,
    }


class ChangeRoutes:
    def __init__(self, *, store: Store) -> None:
        self._store = store

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/api/v1/changes", self.list)]

    async def list(self, request: web.Request) -> web.Response:
        limit = params.limit(request.query.get("limit"))
        async with self._store.read() as conn:
            rows = await change_store.list_changes(
                conn, limit=limit + 1, before_id=params.cursor(request.query.get("cursor")))
        items, next_cursor = page(rows, limit)
        return json_response({"items": [change_json(r) for r in items],
                              "next_cursor": next_cursor})
