"""ServiceNow, through its Table API (`/api/now/table/incident`), basic auth or OAuth bearer.

Outbound, per incident:

- find: `GET /api/now/table/incident?sysparm_query=correlation_id=<INC-000123>
  &sysparm_fields=sys_id,number&sysparm_limit=1` (our incident key is the ticket's
  `correlation_id`; `correlation_display` is `incidentd`).
- create: `POST /api/now/table/incident` with `short_description`, `description`,
  `correlation_id`, `correlation_display`, `impact`/`urgency` (from our priority;
  ServiceNow computes its own priority from them), `cmdb_ci` (the root-cause CI,
  looked up by name in `cmdb_ci`), `assignment_group` (the CI's owner group, looked
  up by name in `sys_user_group`), plus configured fields. Answer:
  `{"result": {"sys_id": ..., "number": ...}}`.
- then `PATCH /api/now/table/incident/<sys_id>`: `work_notes` for every event;
  `state` 2 (In Progress) on acknowledge, 6 (Resolved) with `close_code` and
  `close_notes` on resolve, 1 on reopen; `impact`/`urgency` on a priority change.

Inbound: the JSON a business rule on the incident table posts (see the README):
`{"sys_id", "number", "correlation_id", "state", "state_changed", "assigned_to",
"assigned_to_changed", "assignment_group", "assignment_group_changed",
"work_note", "close_notes", "updated_by", "sys_mod_count"}`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from daemon.config import ServiceNowConnector
from daemon.correlation.topology import TopologyHolder
from daemon.itsm.connectors.base import (
    Change,
    Connector,
    ConnectorError,
    EventView,
    Http,
    InboundUpdate,
    Ticket,
    text_of,
)
from daemon.itsm.connectors.mapping import render
from daemon.itsm.inbound_webhook import incident_ref
from daemon.receivers.validation import invalid_input

# A name ServiceNow's encoded queries cannot carry (`^` separates conditions).
_UNQUERYABLE = ("^", "\n", "\r")
# A lookup that found nothing is asked again after this long (the CI may be added).
_MISS_SECONDS = 600.0


class ServiceNow(Connector):
    def __init__(self, config: ServiceNowConnector, *, topology: TopologyHolder) -> None:
        super().__init__(config.name, url=config.url.rstrip("/"), auth=config.auth,
                         rate_limit_per_minute=config.rate_limit_per_minute,
                         ignore_users=config.inbound.ignore_users)
        self.config = config
        self.mapping = config.mapping
        self._topology = topology
        # (table, field, value) → sys_id or None (a miss, with when it was asked).
        self._lookups: dict[tuple[str, str, str], tuple[str | None, float]] = {}

    @property
    def _table(self) -> str:
        return f"/api/now/table/{self.mapping.table}"

    # -- outbound ----------------------------------------------------------------------

    async def find_ticket(self, http: Http, event: EventView) -> Ticket | None:
        reply = await http.call("GET", self._table, params={
            "sysparm_query": f"correlation_id={event.key}^ORDERBYsys_created_on",
            "sysparm_fields": "sys_id,number", "sysparm_limit": "1"})
        found = _results(reply.json())
        return self._ticket(found[0]) if found else None

    async def create_ticket(self, http: Http, event: EventView) -> Ticket:
        context = event.context()
        m = self.mapping
        body: dict[str, Any] = {
            "short_description": render(m.short_description, context,
                                        path=f"{self.name}.mapping.short_description"),
            "description": render(m.description, context,
                                  path=f"{self.name}.mapping.description"),
            "correlation_id": event.key,
            "correlation_display": "incidentd",
            **self._impact_urgency(event),
        }
        ci = await self._cmdb_ci(http, event)
        if ci:
            body["cmdb_ci"] = ci
        group = await self._assignment_group(http, event)
        if group:
            body["assignment_group"] = group
        for name, template in m.fields.items():
            body[name] = render(template, context, path=f"{self.name}.mapping.fields.{name}")
        reply = await http.call("POST", self._table, json=body)
        result = reply.json()
        record = result.get("result") if isinstance(result, dict) else None
        if not isinstance(record, dict) or not record.get("sys_id"):
            raise ConnectorError(f"{self.name}: the create answer has no result.sys_id",
                                 retryable=True, status=reply.status)
        return self._ticket(record)

    async def update_ticket(self, http: Http, ticket: Ticket, event: EventView,
                            change: Change) -> None:
        fields: dict[str, Any]
        if change is Change.ACKNOWLEDGE:
            fields = {"state": self.mapping.states.acknowledge}
        elif change is Change.REOPEN:
            fields = {"state": self.mapping.states.reopen}
        else:
            fields = self._impact_urgency(event)
        await self._patch(http, ticket, fields | self._work_note(event))

    async def add_work_note(self, http: Http, ticket: Ticket, event: EventView) -> None:
        await self._patch(http, ticket, self._work_note(event))

    async def close_ticket(self, http: Http, ticket: Ticket, event: EventView) -> None:
        m = self.mapping
        await self._patch(http, ticket, {
            "state": m.states.resolve,
            "close_code": m.close_code,
            "close_notes": render(m.close_notes, event.context(),
                                  path=f"{self.name}.mapping.close_notes"),
        } | self._work_note(event))

    async def _patch(self, http: Http, ticket: Ticket, fields: Mapping[str, Any]) -> None:
        await http.call("PATCH", f"{self._table}/{quote(ticket.id, safe='')}", json=fields)

    def _work_note(self, event: EventView) -> dict[str, str]:
        return {"work_notes": render(self.mapping.work_note, event.context(),
                                     path=f"{self.name}.mapping.work_note")}

    def _impact_urgency(self, event: EventView) -> dict[str, str]:
        priority = str(event.incident.get("priority"))
        pair = next((v for k, v in self.mapping.impact_urgency.items() if k == priority), None)
        if pair is None:
            return {}
        return {"impact": str(pair[0]), "urgency": str(pair[1])}

    def _ticket(self, record: Mapping[str, Any]) -> Ticket:
        sys_id = str(record["sys_id"])
        return Ticket(id=sys_id, key=text_of(record.get("number")),
                      url=f"{self.url}/nav_to.do?uri={self.mapping.table}.do?sys_id={sys_id}")

    # -- CMDB lookups (cached) -----------------------------------------------------------

    async def _cmdb_ci(self, http: Http, event: EventView) -> str | None:
        ci = event.ci
        if ci is None:
            return None
        value = ci.name if self.mapping.ci_match == "name" else ci.id
        return await self._lookup(http, "cmdb_ci", self.mapping.ci_lookup_field, value)

    async def _assignment_group(self, http: Http, event: EventView) -> str | None:
        group = (event.ci.owner_group if event.ci and self.mapping.assignment_group_from_ci
                 else None) or self.mapping.default_assignment_group
        if not group:
            return None
        return await self._lookup(http, "sys_user_group", "name", group)

    async def _lookup(self, http: Http, table: str, field: str, value: str) -> str | None:
        """The sys_id of the record whose `field` is `value` (cached per process)."""
        if not value or any(c in value for c in _UNQUERYABLE):
            return None
        key = (table, field, value)
        cached = self._lookups.get(key)
        if cached is not None and (cached[0] is not None
                                   or time.monotonic() - cached[1] < _MISS_SECONDS):
            return cached[0]
        reply = await http.call("GET", f"/api/now/table/{table}", params={
            "sysparm_query": f"{field}={value}", "sysparm_fields": "sys_id",
            "sysparm_limit": "1"})
        found = _results(reply.json())
        sys_id = str(found[0]["sys_id"]) if found and found[0].get("sys_id") else None
        self._lookups[key] = (sys_id, time.monotonic())
        return sys_id

    # -- inbound -------------------------------------------------------------------------

    def parse_inbound(self, body: bytes, headers: Mapping[str, str]) -> list[InboundUpdate]:
        try:
            msg = ServiceNowUpdate.model_validate_json(body or b"null")
        except ValidationError as exc:
            raise invalid_input(exc, "ServiceNow update") from None
        user = msg.updated_by or "servicenow"
        if self.ignored(user):  # the integration user's own change, coming back
            return []
        common: dict[str, Any] = {"user": user, "ticket_id": msg.sys_id,
                                  "ticket_key": msg.number, "incident": msg.incident()}
        ref = f"{msg.sys_id}:{msg.sys_mod_count or ''}"
        updates: list[InboundUpdate] = []
        action = self.mapping.inbound_states.get(msg.state or "") if msg.state_changed else None
        if action is not None:
            note = msg.close_notes if action == "resolve" else None
            updates.append(InboundUpdate(action=action, note=note or f"state {msg.state} in "
                                         f"ServiceNow {msg.number or msg.sys_id}", **common))
        if msg.assigned_to_changed or msg.assignment_group_changed:
            to = " / ".join(v for v in (msg.assigned_to, msg.assignment_group) if v) or "nobody"
            updates.append(InboundUpdate(
                action="note", note=f"Assigned to {to} in ServiceNow", ref=f"{ref}:assigned",
                detail={"assigned_to": msg.assigned_to,
                        "assignment_group": msg.assignment_group}, **common))
        if msg.work_note:
            updates.append(InboundUpdate(action="note", note=msg.work_note, ref=f"{ref}:note",
                                         **common))
        return updates


def _results(answer: Any) -> list[dict[str, Any]]:
    result = answer.get("result") if isinstance(answer, dict) else None
    return [r for r in result if isinstance(r, dict)] if isinstance(result, list) else []


class ServiceNowUpdate(BaseModel):
    """What the business rule posts (see the README); unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")
    sys_id: str = Field(min_length=1, max_length=64)
    number: str | None = Field(default=None, max_length=64)
    correlation_id: str | None = Field(default=None, max_length=255)
    state: str | None = Field(default=None, max_length=32)
    state_changed: bool = False
    assigned_to: str | None = Field(default=None, max_length=255)
    assigned_to_changed: bool = False
    assignment_group: str | None = Field(default=None, max_length=255)
    assignment_group_changed: bool = False
    work_note: str | None = Field(default=None, max_length=64_000)
    close_notes: str | None = Field(default=None, max_length=64_000)
    updated_by: str | None = Field(default=None, max_length=255)
    sys_mod_count: str | None = Field(default=None, max_length=32)

    @field_validator("state", "sys_mod_count", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("work_note", "close_notes", "assigned_to", "assignment_group",
                     "updated_by", "number", "correlation_id")
    @classmethod
    def _blank(cls, value: str | None) -> str | None:
        return text_of(value)

    def incident(self) -> int | None:
        """Our incident id, from the correlation id we set (None when it is not ours)."""
        if not self.correlation_id:
            return None
        try:
            return incident_ref(self.correlation_id)
        except ValueError:
            return None
