"""`/api/v1/problems`: list, read, open and update problem records."""

from __future__ import annotations

import re
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncConnection

from daemon import metrics
from daemon.api import params
from daemon.api.pages import page
from daemon.api.responses import json_response
from daemon.clock import Clock, timestamp
from daemon.errors import NotFound
from daemon.itsm.problems import (
    STATUSES,
    NewManualProblem,
    ProblemPatch,
    Problems,
    problem_key,
)
from daemon.models import incident_key
from daemon.store import Store
from daemon.store import problems as problem_store
from daemon.store.problems import Problem

_BODY_LIMIT = 256 * 1024
_KEY = re.compile(r"^PRB-([0-9]+)$", re.IGNORECASE)
_INCIDENT_KEY = re.compile(r"^INC-([0-9]+)$", re.IGNORECASE)



def _text() -> Any:
    return Field(default=None, max_length=10_000)


class NewProblemBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=2000)
    description: str | None = _text()
    root_cause_ci: str | None = Field(default=None, min_length=1, max_length=255)
    alert_name: str | None = Field(default=None, min_length=1, max_length=255)
    workaround: str | None = _text()
    known_error: bool = False
    incidents: list[int | str] = Field(default_factory=list, max_length=1000)
    actor: str = Field(default="api", min_length=1, max_length=255)


class PatchProblemBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str | None = Field(default=None, min_length=1, max_length=2000)
    description: str | None = _text()
    workaround: str | None = _text()
    status: Literal["open", "known_error", "resolved", "closed"] | None = None
    actor: str = Field(default="api", min_length=1, max_length=255)
    note: str | None = _text()


class ProblemRoutes:
    def __init__(self, *, store: Store, clock: Clock, problems: Problems) -> None:
        self._store = store
        self._clock = clock
        self._problems = problems

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/v1/problems", self.list),
            web.post("/api/v1/problems", self.create),
            web.get("/api/v1/problems/{id}", self.get),
            web.patch("/api/v1/problems/{id}", self.patch),
        ]

    async def list(self, request: web.Request) -> web.Response:
        q = request.query
        limit = params.limit(q.get("limit"))
        async with self._store.read() as conn:
            # One more than asked tells whether another page exists.
            rows = await problem_store.list_problems(
                conn, statuses=_statuses(q.get("status")), limit=limit + 1,
                before_id=params.cursor(q.get("cursor")))
        shown, next_cursor = page(rows, limit)
        return json_response({"items": [problem_json(p) for p in shown],
                              "next_cursor": next_cursor})

    async def get(self, request: web.Request) -> web.Response:
        problem_id = problem_id_of(request.match_info["id"])
        async with self._store.read() as conn:
            body = await problem_detail(conn, problem_id)
        return json_response(body)

    async def create(self, request: web.Request) -> web.Response:
        body = await params.json_body(request, NewProblemBody, limit=_BODY_LIMIT)
        new = NewManualProblem(
            title=body.title, description=body.description, root_cause_ci=body.root_cause_ci,
            alert_name=body.alert_name, workaround=body.workaround, known_error=body.known_error,
            incident_ids=tuple(_incident_id(raw, i) for i, raw in enumerate(body.incidents)),
            actor=body.actor)
        async with self._store.write() as conn:
            problem_id = await self._problems.create(conn, new, self._clock.now())
            detail = await problem_detail(conn, problem_id)
        metrics.PROBLEMS_OPENED.labels("manual").inc()
        return json_response(detail, status=201)

    async def patch(self, request: web.Request) -> web.Response:
        problem_id = problem_id_of(request.match_info["id"])
        body = await params.json_body(request, PatchProblemBody, limit=_BODY_LIMIT)
        given = body.model_fields_set
        if body.title is None and "title" in given:
            raise params.bad("title", "cannot be null")
        change = ProblemPatch(
            title=body.title, status=body.status, description=body.description,
            workaround=body.workaround,
            cleared=frozenset(n for n in ("description", "workaround")
                              if n in given and getattr(body, n) is None))
        async with self._store.write() as conn:
            await self._problems.update(conn, problem_id, change, actor=body.actor,
                                        note=body.note, now=self._clock.now())
            detail = await problem_detail(conn, problem_id)
        return json_response(detail)


def problem_id_of(raw: str) -> int:
    """Accept the numeric id or the key (`PRB-000042`)."""
    match = _KEY.match(raw)
    value = params.number(match.group(1) if match else raw)
    if value is None:
        raise NotFound(f"no problem {raw!r}")
    return value


def problem_json(p: Problem) -> dict[str, Any]:
    return {
        "id": p.id,
        "key": problem_key(p.id),
        "title": p.title,
        "status": p.status,
        "known_error": p.status == "known_error",
        "root_cause_ci": p.root_cause_ci,
        "alert_name": p.alert_name,
        "description": p.description,
        "workaround": p.workaround,
        "created_by": p.created_by,
        "created_at": timestamp(p.created_at),
        "updated_at": timestamp(p.updated_at),
        "resolved_at": timestamp(p.resolved_at),
        "incident_count": p.incident_count,
    }


async def problem_detail(conn: AsyncConnection, problem_id: int) -> dict[str, Any]:
    problem = await problem_store.get_problem(conn, problem_id)
    if problem is None:
        raise NotFound(f"no problem {problem_key(problem_id)}")
    linked = await problem_store.linked_incidents(conn, problem_id)
    return problem_json(problem) | {"incidents": [
        {"id": i.id, "key": incident_key(i.id), "title": i.title, "status": i.status,
         "created_at": timestamp(i.created_at), "linked_at": timestamp(i.linked_at)}
        for i in linked
    ]}


def _incident_id(raw: int | str, index: int) -> int:
    """An incident named in a body: its id or key."""
    if isinstance(raw, int) and 0 < raw <= params.MAX_ID:
        return raw
    if isinstance(raw, str):
        match = _INCIDENT_KEY.match(raw)
        value = params.number(match.group(1) if match else raw)
        if value:
            return value
    raise params.bad(f"incidents[{index}]", f"{raw!r} is not an incident id or INC- key")


def _statuses(raw: str | None) -> list[str] | None:
    """`status=open,known_error`."""
    if not raw:
        return None
    parts = raw.split(",")
    for part in parts:
        if part not in STATUSES:
            raise params.bad("status", f"unknown status {part!r}; use {', '.join(STATUSES)}")
    return parts




