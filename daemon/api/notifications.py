"""`/api/v1/notifications`: the outbox, to see what was sent, what is stuck, and resend."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from daemon.api import params
from daemon.api.pages import page
from daemon.api.responses import json_response
from daemon.clock import Clock, timestamp
from daemon.errors import InvalidTransition, NotFound
from daemon.itsm.delivery import Sender
from daemon.models import incident_key
from daemon.store import Store
from daemon.store import notifications as store
from daemon.store.notifications import Notification, State


def notification_json(n: Notification, *, payload: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": n.id,
        "event_id": n.event_id,
        "event_type": n.event_type,
        "incident_id": n.incident_id,
        "incident": incident_key(n.incident_id) if n.incident_id is not None else None,
        "target": n.target,
        "state": n.state.value,
        "attempts": n.attempts,
        "next_attempt_at": timestamp(n.next_attempt_at) if n.state is State.PENDING else None,
        "last_status": n.last_status,
        "last_error": n.last_error,
        "created_at": timestamp(n.created_at),
        "updated_at": timestamp(n.updated_at),
        "delivered_at": timestamp(n.delivered_at),
    }
    if payload:
        out["payload"] = n.payload
    return out


class NotificationRoutes:
    def __init__(self, *, store: Store, clock: Clock, sender: Sender | None) -> None:
        self._store = store
        self._clock = clock
        self._sender = sender

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/v1/notifications", self.list),
            web.get("/api/v1/notifications/{id}", self.get),
            web.post("/api/v1/notifications/{id}/resend", self.resend),
        ]

    async def list(self, request: web.Request) -> web.Response:
        """Newest first: `state`, `incident` (id or key), `target`, `limit`, `cursor`."""
        q = request.query
        limit = params.limit(q.get("limit"))
        async with self._store.read() as conn:
            rows = await store.list_notifications(
                conn, state=_state(q.get("state")),
                incident_id=params.incident_filter(q.get("incident")),
                target=q.get("target") or None, limit=limit + 1,
                before_id=params.cursor(q.get("cursor")))
        shown, next_cursor = page(rows, limit)
        return json_response({"items": [notification_json(n) for n in shown],
                              "next_cursor": next_cursor})

    async def get(self, request: web.Request) -> web.Response:
        notification_id = _id(request.match_info["id"])
        async with self._store.read() as conn:
            found = await store.get(conn, notification_id)
        if found is None:
            raise NotFound(f"no notification {notification_id}")
        return json_response(notification_json(found, payload=True))

    async def resend(self, request: web.Request) -> web.Response:
        """A dead or delivered notification goes out again, now, as if new."""
        notification_id = _id(request.match_info["id"])
        async with self._store.write() as conn:
            moved = await store.resend(conn, notification_id, self._clock.now())
            found = await store.get(conn, notification_id)
        if found is None:
            raise NotFound(f"no notification {notification_id}")
        if not moved:
            raise InvalidTransition(f"notification {notification_id} is pending already; "
                                    "the sender delivers it when it is due")
        if self._sender is not None:
            self._sender.wake()
        return json_response(notification_json(found, payload=True))


def _id(raw: str) -> int:
    value = params.number(raw)
    if value is None:
        raise NotFound(f"no notification {raw!r}")
    return value


def _state(raw: str | None) -> State | None:
    if raw is None or raw == "":
        return None
    try:
        return State(raw)
    except ValueError:
        raise params.bad("state", "must be pending, delivered or dead") from None

