"""`/ui/problems`: the problem records; `/ui/problems/{id}`: one with its incidents.

Read through the same query and serializers as `GET /api/v1/problems` and
`GET /api/v1/problems/{id}` (newest first, keyset pages, the `status` filter).
"""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from daemon.api.pages import page
from daemon.api.params import number
from daemon.api.problems import problem_detail, problem_id_of, problem_json
from daemon.errors import NotFound
from daemon.itsm.problems import STATUSES
from daemon.store import problems as problem_store
from daemon.web.cmdb import ci_href
from daemon.web.deps import ConsoleDeps
from daemon.web.render import render

PAGE_SIZE = 50


def routes(deps: ConsoleDeps) -> list[web.RouteDef]:
    pages = ProblemPages(deps)
    return [web.get("/ui/problems", pages.problems),
            web.get("/ui/problems/{id}", pages.problem)]


class ProblemPages:
    def __init__(self, deps: ConsoleDeps) -> None:
        self._deps = deps

    async def problems(self, request: web.Request) -> web.Response:
        status = request.query.get("status", "")
        statuses = [status] if status in STATUSES else None
        cursor = number(request.query.get("cursor", ""))
        async with self._deps.store.read() as conn:
            rows = await problem_store.list_problems(
                conn, statuses=statuses, limit=PAGE_SIZE + 1, before_id=cursor)
        shown, next_cursor = page(rows, PAGE_SIZE)
        next_href = None
        if next_cursor is not None:
            kept = {"status": status} if statuses else {}
            next_href = "/ui/problems?" + urlencode({**kept, "cursor": next_cursor})
        return render(request, "problems.html", {
            "nav": "problems",
            "status": status if statuses else "",
            "statuses": STATUSES,
            "problems": [problem_json(p) for p in shown],
            "first_page": cursor is None,
            "next_href": next_href,
        })

    async def problem(self, request: web.Request) -> web.Response:
        raw = request.match_info["id"]
        try:
            problem_id = problem_id_of(raw)
            async with self._deps.store.read() as conn:
                detail = await problem_detail(conn, problem_id)
        except NotFound:
            return render(request, "problem.html",
                          {"nav": "problems", "problem": None, "asked": raw}, status=404)
        return render(request, "problem.html",
                      {"nav": "problems", "problem": detail, "ci_href": ci_href})
