"""`/ui/incidents`: the incident list, filtered, with its live `<tbody>` at `/rows`.

The same store query, serializer and ITSM parts as `GET /api/v1/incidents`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web
from multidict import MultiMapping
from yarl import URL

from daemon.api import params
from daemon.api.incidents import itsm_parts
from daemon.api.pages import page
from daemon.api.serialize import incident_json
from daemon.models import OPEN_STATUSES, IncidentStatus, Priority
from daemon.store import incidents as incident_store
from daemon.web.deps import ConsoleDeps
from daemon.web.render import render

PAGE_SIZE = 50
# The status filter's choices, in the order the form lists them.
STATUSES: dict[str, tuple[IncidentStatus, ...]] = {
    "open": OPEN_STATUSES,
    "all": (),
    **{s.value: (s,) for s in IncidentStatus},
}
PRIORITIES = tuple(p.value for p in Priority)


@dataclass(frozen=True, slots=True)
class Filters:
    status: str = "open"
    priority: str = ""
    service: str = ""
    cursor: int | None = None

    @classmethod
    def parse(cls, query: MultiMapping[str]) -> Filters:
        status = query.get("status") or "open"
        if status not in STATUSES:
            raise params.bad("status", f"must be one of {', '.join(STATUSES)}")
        priority = query.get("priority") or ""
        if priority and priority not in PRIORITIES:
            raise params.bad("priority", "must be P1, P2, P3, P4 or P5")
        service = (query.get("service") or "").strip()
        if len(service) > 255:
            raise params.bad("service", "at most 255 characters")
        return cls(status=status, priority=priority, service=service,
                   cursor=params.cursor(query.get("cursor")))

    def query(self, *, cursor: str | None = None) -> dict[str, str]:
        """These filters as a query string's fields (defaults left out)."""
        out = {"status": self.status} if self.status != "open" else {}
        out |= {k: v for k, v in (("priority", self.priority), ("service", self.service)) if v}
        return out | ({"cursor": cursor} if cursor else {})


class IncidentList:
    def __init__(self, deps: ConsoleDeps) -> None:
        self._deps = deps

    async def list_page(self, request: web.Request) -> web.Response:
        filters = Filters.parse(request.query)
        context = await self._rows(filters)
        services = sorted((ci for ci in self._deps.topology.current.cis.values()
                           if ci.is_service), key=lambda ci: (ci.name.lower(), ci.id))
        return render(request, "incidents.html", context | {
            "nav": "incidents", "filters": filters, "services": services,
            "statuses": list(STATUSES), "priorities": PRIORITIES,
            "older_url": (_url("/ui/incidents", filters.query(cursor=context["next_cursor"]))
                          if context["next_cursor"] else None),
            "newest_url": _url("/ui/incidents", filters.query()) if filters.cursor else None,
        })

    async def rows(self, request: web.Request) -> web.Response:
        filters = Filters.parse(request.query)
        return render(request, "incident_rows.html", await self._rows(filters))

    async def _rows(self, filters: Filters) -> dict[str, Any]:
        deps = self._deps
        async with deps.store.read() as conn:
            found = await incident_store.list_incidents(
                conn, statuses=list(STATUSES[filters.status]) or None, limit=PAGE_SIZE + 1,
                before_id=filters.cursor,
                priority=Priority(filters.priority) if filters.priority else None,
                service=filters.service or None)
            shown, next_cursor = page(found, PAGE_SIZE)
            ids = [i.id for i in shown]
            itsm = (await itsm_parts(conn, deps.followup, ids, deps.clock.now())
                    if deps.followup is not None else {})
        return {"incidents": [incident_json(i) | itsm.get(i.id, {}) for i in shown],
                "next_cursor": next_cursor,
                "rows_url": _url("/ui/incidents/rows", filters.query(
                    cursor=str(filters.cursor) if filters.cursor else None))}


def _url(path: str, query: dict[str, str]) -> str:
    return str(URL(path).with_query(query)) if query else path


def routes(deps: ConsoleDeps) -> list[web.RouteDef]:
    pages = IncidentList(deps)
    return [web.get("/ui/incidents", pages.list_page, allow_head=False),
            web.get("/ui/incidents/rows", pages.rows, allow_head=False)]
