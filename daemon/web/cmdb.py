"""`/ui/cmdb`: search the CIs; `/ui/cmdb/{ci_id}`: one CI with its neighbours and incidents.

The list reads through the same store query as `GET /api/v1/cmdb/cis` (its `type`
and `service` filters, its keyset pages) plus a free-text `q`; the CI page shows
`GET /api/v1/cmdb/cis/{id}`'s document, the topology's transitive counts and the
open incidents touching the CI.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from daemon.api.cmdb import ci_detail, ci_json
from daemon.api.pages import page
from daemon.errors import NotFound
from daemon.models import incident_key
from daemon.store import cmdb as cmdb_store
from daemon.store import incidents as incident_store
from daemon.web.deps import ConsoleDeps
from daemon.web.render import render

PAGE_SIZE = 50
OPEN_INCIDENTS_SHOWN = 50
_MAX_QUERY = 255  # longer than any id or name the CMDB holds


def ci_href(ci_id: str) -> str:
    """The CI page's path; `/` and the like percent-encoded, as the API addresses ids."""
    return f"/ui/cmdb/{quote(ci_id, safe='')}"


def routes(deps: ConsoleDeps) -> list[web.RouteDef]:
    pages = CmdbPages(deps)
    return [web.get("/ui/cmdb", pages.search), web.get("/ui/cmdb/{ci_id}", pages.ci)]


class CmdbPages:
    def __init__(self, deps: ConsoleDeps) -> None:
        self._deps = deps

    async def search(self, request: web.Request) -> web.Response:
        form = {name: request.query.get(name, "").strip()[:_MAX_QUERY]
                for name in ("q", "type", "service")}
        # Any text is a valid keyset bound (the ids after it); only its length is capped.
        cursor = request.query.get("cursor", "")[:_MAX_QUERY] or None
        async with self._deps.store.read() as conn:
            # One more than shown tells whether another page exists, as in the API.
            found = await cmdb_store.list_cis(
                conn, type=form["type"] or None, service=form["service"] or None,
                text=form["q"] or None, limit=PAGE_SIZE + 1, after_id=cursor)
        shown, next_cursor = page(found, PAGE_SIZE)
        next_href = None
        if next_cursor is not None:
            kept = {k: v for k, v in form.items() if v}
            next_href = "/ui/cmdb?" + urlencode({**kept, "cursor": next_cursor})
        return render(request, "cmdb.html", {
            "nav": "cmdb",
            "form": form,
            "searched": any(form.values()),
            "cis": [ci_json(ci) for ci in shown],
            "first_page": cursor is None,
            "next_href": next_href,
            "ci_href": ci_href,
            "total": len(self._deps.topology.current),
        })

    async def ci(self, request: web.Request) -> web.Response:
        ci_id = request.match_info["ci_id"]
        try:
            async with self._deps.store.read() as conn:
                detail = await ci_detail(conn, ci_id)
                incidents = await incident_store.open_touching_ci(
                    conn, ci_id, limit=OPEN_INCIDENTS_SHOWN)
        except NotFound:
            return render(request, "ci.html", {"nav": "cmdb", "ci": None, "ci_id": ci_id},
                          status=404)
        graph = self._deps.topology.current
        service = detail["service"]
        return render(request, "ci.html", {
            "nav": "cmdb",
            "ci": detail,
            "ci_id": ci_id,
            "ci_href": ci_href,
            "upstream": [_neighbour(graph.cis, i) for i in detail["depends_on"]],
            "downstream": [_neighbour(graph.cis, i) for i in detail["dependents"]],
            "upstream_all": len(graph.upstream(ci_id)),
            "downstream_all": len(graph.downstream(ci_id)),
            "service": _neighbour(graph.cis, service) if service else None,
            "is_service": detail["type"] == "service",
            "incidents": [{"id": i.id, "key": incident_key(i.id), "title": i.title,
                           "status": i.status, "priority": i.priority,
                           "created_at": i.created_at} for i in incidents],
            "more_incidents": len(incidents) >= OPEN_INCIDENTS_SHOWN,
        })


def _neighbour(known: Any, ci_id: str) -> dict[str, Any]:
    """A linked CI: its id, its name when the CMDB holds it (an edge may name a CI
    that is not there), and its page."""
    ci = known.get(ci_id)
    return {"id": ci_id, "name": ci.name if ci is not None else None,
            "type": ci.type if ci is not None else None, "href": ci_href(ci_id),
            "known": ci is not None}
