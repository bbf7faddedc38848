"""`/api/v1/incidents` and `/api/v1/alerts`: read incidents and alerts, acknowledge, resolve."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.api import params
from daemon.api.pages import page
from daemon.api.responses import json_response
from daemon.api.serialize import alert_json, incident_json
from daemon.clock import Clock, timestamp
from daemon.errors import NotFound
from daemon.itsm.actions import Actions
from daemon.itsm.followup import FollowUp
from daemon.models import (
    OPEN_STATUSES,
    AlertStatus,
    IncidentStatus,
    Priority,
    incident_key,
    person_actor,
)
from daemon.store import Store
from daemon.store import alerts as alert_store
from daemon.store import incidents as incident_store
from daemon.store import tickets as ticket_store
from daemon.store.incidents import alert_view

_BODY_LIMIT = 64 * 1024


class ActionBody(BaseModel):
    """Optional body of acknowledge/resolve: who did it, and why."""

    model_config = ConfigDict(extra="forbid")
    actor: Annotated[str, AfterValidator(person_actor)] = Field(
        default="api", min_length=1, max_length=255)
    note: str | None = Field(default=None, max_length=10_000)


class PatchBody(BaseModel):
    """Set the priority by hand: `priority`, or `impact` and `urgency`; `reason` is kept."""

    model_config = ConfigDict(extra="forbid")
    priority: Literal["P1", "P2", "P3", "P4", "P5"] | None = None
    impact: int | None = Field(default=None, ge=1)
    urgency: int | None = Field(default=None, ge=1)
    reason: str = Field(min_length=1, max_length=2000)
    actor: str = Field(default="api", min_length=1, max_length=255)


class EscalateBody(ActionBody):
    """Escalate by hand: to the next level, or to `level` (1-based)."""

    level: int | None = Field(default=None, ge=1)


# Person-driven moves, each at POST /api/v1/incidents/{id}/{action}.
ACTIONS = ("acknowledge", "hold", "resume", "resolve", "close", "reopen")


class IncidentRoutes:
    def __init__(self, *, store: Store, actions: Actions, followup: FollowUp,
                 clock: Clock) -> None:
        self._store = store
        self._actions = actions
        self._followup = followup
        self._clock = clock

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/v1/incidents", self.list),
            web.get("/api/v1/incidents/{id}", self.get),
            *(web.post(f"/api/v1/incidents/{{id}}/{action}", self._action(action))
              for action in ACTIONS),
            web.post("/api/v1/incidents/{id}/escalate", self.escalate),
            web.patch("/api/v1/incidents/{id}", self.patch),
            web.get("/api/v1/alerts", self.list_alerts),
        ]

    async def list(self, request: web.Request) -> web.Response:
        q = request.query
        limit = params.limit(q.get("limit"))
        async with self._store.read() as conn:
            # One more than asked tells whether another page exists.
            items = await incident_store.list_incidents(
                conn, statuses=_statuses(q.get("status")), limit=limit + 1,
                before_id=params.cursor(q.get("cursor")),
            )
            shown, next_cursor = page(items, limit)
            itsm = await self._itsm(conn, [i.id for i in shown])
        return json_response({"items": [incident_json(i) | itsm[i.id] for i in shown],
                              "next_cursor": next_cursor})

    async def get(self, request: web.Request) -> web.Response:
        return await self._detail(params.incident_id(request.match_info["id"]))

    def _action(self, action: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            incident_id = params.incident_id(request.match_info["id"])
            body = await params.json_body(request, ActionBody, limit=_BODY_LIMIT, required=False)
            t = await self._actions.move(incident_id, action, actor=body.actor, note=body.note)
            extra = ({"already_acknowledged": {"by": t.already.actor,
                                               "at": timestamp(t.already.at)}}
                     if t.already else {})
            return await self._detail(incident_id, extra)

        return handle

    async def escalate(self, request: web.Request) -> web.Response:
        incident_id = params.incident_id(request.match_info["id"])
        body = await params.json_body(request, EscalateBody, limit=_BODY_LIMIT, required=False)
        await self._actions.escalate(incident_id, actor=body.actor, note=body.note,
                                     level=body.level)
        return await self._detail(incident_id)

    async def patch(self, request: web.Request) -> web.Response:
        incident_id = params.incident_id(request.match_info["id"])
        body = await params.json_body(request, PatchBody, limit=_BODY_LIMIT)
        await self._actions.set_priority(
            incident_id, priority=Priority(body.priority) if body.priority else None,
            impact=body.impact, urgency=body.urgency, reason=body.reason, actor=body.actor)
        return await self._detail(incident_id)

    async def list_alerts(self, request: web.Request) -> web.Response:
        q = request.query
        limit = params.limit(q.get("limit"))
        status = q.get("status")
        if status is not None and status not in {s.value for s in AlertStatus}:
            raise params.bad("status", "must be firing or resolved")
        async with self._store.read() as conn:
            rows = await alert_store.list_alerts(
                conn, status=AlertStatus(status) if status else None, limit=limit + 1,
                before_id=params.cursor(q.get("cursor")),
            )
            shown, next_cursor = page(rows, limit)
            links = await alert_store.incident_ids_of(conn, [r.id for r in shown])
        items = []
        for r in shown:
            item = alert_json(alert_view(r, role=""))
            del item["role"]
            item["group_key"] = r.group_key
            item["incident_ids"] = list(links.get(r.id, ()))
            items.append(item)
        return json_response({"items": items, "next_cursor": next_cursor})

    async def _itsm(self, conn: AsyncConnection, ids: Sequence[int]
                    ) -> dict[int, dict[str, Any]]:
        return await itsm_parts(conn, self._followup, ids, self._clock.now())

    async def _detail(self, incident_id: int, extra: dict[str, Any] | None = None
                      ) -> web.Response:
        async with self._store.read() as conn:
            incident = await incident_store.get_incident(conn, incident_id)
            if incident is None:
                raise NotFound(f"no incident {incident_key(incident_id)}")
            itsm = await self._itsm(conn, [incident_id])
        return json_response(incident_json(incident, detail=True) | itsm[incident_id]
                             | (extra or {}))


async def itsm_parts(conn: AsyncConnection, followup: FollowUp, ids: Sequence[int],
                     now: datetime) -> dict[int, dict[str, Any]]:
    """The ITSM parts of each incident's JSON (SLA clocks, escalation, problems, suspected
    changes), with the tickets ITSM suites keep: the API and the console show the same."""
    views = await followup.views(conn, ids, now)
    tickets = await ticket_store.of_incidents(conn, ids)
    return {i: views[i] | {"external_tickets": [t.json() for t in tickets.get(i, [])]}
            for i in ids}


def _statuses(raw: str | None) -> list[IncidentStatus] | None:
    """`status=triggered,acknowledged`; `open` means both."""
    if not raw:
        return None
    out: list[IncidentStatus] = []
    for part in raw.split(","):
        if part == "open":
            out.extend(OPEN_STATUSES)
        elif part in IncidentStatus.__members__.values():
            out.append(IncidentStatus(part))
        else:
            allowed = ", ".join([*(s.value for s in IncidentStatus), "open"])
            raise params.bad("status", f"unknown status {part!r}; use {allowed}")
    return out



