"""`/api/v1/changes`: file change records, move them through approval, list and read them.

Thin: validate the body, call `daemon.itsm.changes`, serialize. A change's
detail shows the alerts its maintenance window held back and the incidents
it is suspected of.
"""

from __future__ import annotations

from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from daemon.api import params
from daemon.api.pages import page
from daemon.api.responses import json_response
from daemon.clock import Clock, timestamp
from daemon.correlation.topology import TopologyHolder
from daemon.errors import NotFound
from daemon.itsm import changes as itsm_changes
from daemon.itsm.changes import EDITABLE, ChangeEdit, ChangeState, ChangeType, Outcome
from daemon.models import ChangeRecord, Link, incident_key
from daemon.receivers.validation import JsonValue, Timestamp
from daemon.store import Store
from daemon.store import alerts as alert_store
from daemon.store import changes as change_store

_BODY_LIMIT = 256 * 1024
_INTEGRATION = "api"  # the `integration` of changes filed through this API

CiId = Annotated[str, Field(min_length=1, max_length=255)]


class LinkBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    href: str = Field(min_length=1, max_length=4096)
    text: str = Field(default="", max_length=1024)


class NewChangeBody(BaseModel):
    """`POST /api/v1/changes`. `state` defaults by type: standard changes are pre-approved."""

    model_config = ConfigDict(extra="forbid")
    summary: str = Field(min_length=1, max_length=1024)
    description: str | None = Field(default=None, max_length=100_000)
    type: ChangeType = ChangeType.NORMAL
    state: ChangeState | None = None
    cis: list[CiId] = Field(default_factory=list, max_length=1000)
    planned_start: Timestamp | None = None
    planned_end: Timestamp | None = None
    approver: str | None = Field(default=None, min_length=1, max_length=255)
    outcome: Outcome | None = None
    source: str | None = Field(default=None, max_length=255)
    links: list[LinkBody] = Field(default_factory=list, max_length=100)
    details: dict[str, JsonValue] = Field(default_factory=dict)


class EditBody(BaseModel):
    """`PATCH /api/v1/changes/{id}`: a state move and/or new values (null clears one)."""

    model_config = ConfigDict(extra="forbid")
    state: ChangeState | None = None
    outcome: Outcome | None = None
    planned_start: Timestamp | None = None
    planned_end: Timestamp | None = None
    cis: list[CiId] | None = Field(default=None, max_length=1000)
    approver: str | None = Field(default=None, min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=100_000)
    actor: str = Field(default="api", min_length=1, max_length=255)


def change_json(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "integration": r.integration,
        "type": r.type,
        "state": r.state,
        "summary": r.summary,
        "description": r.description,
        "source": r.source,
        "cis": r.cis,
        "occurred_at": timestamp(r.occurred_at),
        "planned_start": timestamp(r.planned_start),
        "planned_end": timestamp(r.planned_end),
        "approver": r.approver,
        "outcome": r.outcome,
        "received_at": timestamp(r.received_at),
        "updated_at": timestamp(r.updated_at),
        "details": r.details,
        "links": r.links,
    }


class ChangeRoutes:
    def __init__(self, *, store: Store, clock: Clock, topology: TopologyHolder) -> None:
        self._store = store
        self._clock = clock
        self._topology = topology

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/v1/changes", self.list),
            web.post("/api/v1/changes", self.create),
            web.get("/api/v1/changes/{id}", self.get),
            web.patch("/api/v1/changes/{id}", self.patch),
        ]

    async def list(self, request: web.Request) -> web.Response:
        q = request.query
        limit = params.limit(q.get("limit"))
        async with self._store.read() as conn:
            rows = await change_store.list_changes(
                conn, limit=limit + 1, before_id=params.cursor(q.get("cursor")),
                states=_states(q.get("state")))
        items, next_cursor = page(rows, limit)
        return json_response({"items": [change_json(r) for r in items],
                              "next_cursor": next_cursor})

    async def create(self, request: web.Request) -> web.Response:
        body = await params.json_body(request, NewChangeBody, limit=_BODY_LIMIT)
        now = self._clock.now()
        record = ChangeRecord(
            integration=_INTEGRATION, summary=body.summary, source=body.source,
            occurred_at=now, details=body.details,
            links=tuple(Link(href=x.href, text=x.text) for x in body.links),
            type=body.type.value, cis=tuple(body.cis), planned_start=body.planned_start,
            planned_end=body.planned_end, approver=body.approver,
            outcome=body.outcome.value if body.outcome else None, description=body.description,
        )
        async with self._store.write() as conn:
            change_id, change = await itsm_changes.create(conn, record, now, state=body.state)
        answer = await self._detail(change_id)
        answer["warnings"] = itsm_changes.unknown_cis(self._topology.current, change.cis)
        return json_response(answer, status=201,
                             headers={"Location": f"/api/v1/changes/{change_id}"})

    async def get(self, request: web.Request) -> web.Response:
        return json_response(await self._detail(_change_id(request)))

    async def patch(self, request: web.Request) -> web.Response:
        change_id = _change_id(request)
        body = await params.json_body(request, EditBody, limit=_BODY_LIMIT)
        given = body.model_fields_set & EDITABLE
        if "cis" in given and body.cis is None:
            raise params.bad("cis", "must be a list (use [] for none)")
        edit = ChangeEdit(state=body.state, outcome=body.outcome,
                          values={name: getattr(body, name) for name in given})
        async with self._store.write() as conn:
            await itsm_changes.edit(conn, change_id, edit, self._clock.now(), actor=body.actor)
        answer = await self._detail(change_id)
        answer["warnings"] = itsm_changes.unknown_cis(self._topology.current, body.cis or [])
        return json_response(answer)

    async def _detail(self, change_id: int) -> dict[str, Any]:
        async with self._store.read() as conn:
            row = await change_store.get_change(conn, change_id)
            if row is None:
                raise NotFound(f"no change {change_id}")
            held = await change_store.alerts_of_change(conn, change_id)
            placed = await alert_store.incident_ids_of(conn, [a.id for a in held])
            suspected = await change_store.incidents_of_change(conn, change_id)
        return {
            **change_json(row),
            "alerts": [{"id": a.id, "fingerprint": a.fingerprint, "source": a.source,
                        "status": a.status, "severity": a.severity, "summary": a.summary,
                        "ci": a.ci_id, "first_seen": timestamp(a.first_seen),
                        "linked_at": timestamp(a.linked_at),
                        "incident_ids": list(placed.get(a.id, ()))} for a in held],
            "incidents": [{"id": i.id, "key": incident_key(i.id), "title": i.title,
                           "status": i.status, "priority": i.priority,
                           "created_at": timestamp(i.created_at),
                           "linked_at": timestamp(i.linked_at)} for i in suspected],
        }


def _change_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    value = params.number(raw)
    if value is None:
        raise NotFound(f"no change {raw!r}")
    return value


def _states(raw: str | None) -> list[str] | None:
    """`state=approved,in_progress`."""
    if not raw:
        return None
    known = {s.value for s in ChangeState}
    for part in raw.split(","):
        if part not in known:
            raise params.bad("state", f"unknown state {part!r}; use {', '.join(ChangeState)}")
    return raw.split(",")



