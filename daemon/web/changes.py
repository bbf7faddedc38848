"""`/ui/changes`: change records and the maintenance windows they open.

The records come from the same query and serializer as `GET /api/v1/changes`
(newest first, keyset pages, the `state` filter). A maintenance window is what
`daemon.itsm.maintenance` acts on: an approved or in-progress change with a
planned start and end; while now is inside it, alerts on its CIs are held back.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from daemon.api.changes import change_json
from daemon.api.pages import page
from daemon.api.params import number
from daemon.itsm.changes import WINDOW_STATES, ChangeState
from daemon.store import changes as change_store
from daemon.web.cmdb import ci_href
from daemon.web.deps import ConsoleDeps
from daemon.web.render import render

PAGE_SIZE = 50
WINDOWS_SHOWN = 200
_STATES = [s.value for s in ChangeState]


def routes(deps: ConsoleDeps) -> list[web.RouteDef]:
    pages = ChangePages(deps)
    return [web.get("/ui/changes", pages.changes)]


class ChangePages:
    def __init__(self, deps: ConsoleDeps) -> None:
        self._deps = deps

    async def changes(self, request: web.Request) -> web.Response:
        state = request.query.get("state", "")
        states = [state] if state in _STATES else None
        cursor = number(request.query.get("cursor", ""))
        now = self._deps.clock.now()
        async with self._deps.store.read() as conn:
            rows = await change_store.list_changes(
                conn, limit=PAGE_SIZE + 1, before_id=cursor, states=states)
            windows = await change_store.windows_ending_after(
                conn, now, states=[s.value for s in WINDOW_STATES], limit=WINDOWS_SHOWN)
        shown, next_cursor = page(rows, PAGE_SIZE)
        next_href = None
        if next_cursor is not None:
            kept = {"state": state} if states else {}
            next_href = "/ui/changes?" + urlencode({**kept, "cursor": next_cursor})
        return render(request, "changes.html", {
            "nav": "changes",
            "state": state if states else "",
            "states": _STATES,
            "changes": [change_json(r) for r in shown],
            "first_page": cursor is None,
            "next_href": next_href,
            "windows": [_window(r, now) for r in windows],
            "windows_capped": len(windows) >= WINDOWS_SHOWN,
            "ci_href": ci_href,
        })


def _window(row: Any, now: datetime) -> dict[str, Any]:
    """A change's window as the page shows it; `active` exactly as maintenance decides
    (planned_start ≤ now < planned_end)."""
    return {**change_json(row), "active": row.planned_start <= now < row.planned_end}
