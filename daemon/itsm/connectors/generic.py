"""The generic connector: for Freshservice, Zendesk, SysAid-style tools until they get
their own.

Outbound it is a webhook target: every routed event is `POST <url>` with the
notification envelope as the body and the webhook headers (`X-Incidentd-Event-Id`,
`X-Incidentd-Event-Type`, `X-Incidentd-Signature: v1=<hex>` when `secrets` are set,
the configured `headers`, and `Authorization` when `auth` is set). Once the tool
names its ticket, later envelopes also carry `"ticket": {"id", "key", "url"}`. A 2xx
answer with a JSON body `{"id": "...", "key": "...", "url": "..."}` (key and url
optional) names the ticket; any other 2xx answer is a delivery all the same.

Inbound, `POST /api/v1/connectors/{name}/updates` with

    {"incident": "INC-000123" | 123, "external_id": "TCK-9",
     "action": "acknowledge" | "resolve" | "reopen" | "note",
     "actor": "ann", "note": "optional text", "id": "optional update id"}

naming the incident, or the ticket by `external_id` (at least one of them). A note
with an `id` already recorded is not recorded again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from daemon.config import GenericConnector
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
from daemon.itsm.inbound_webhook import IncidentRef
from daemon.itsm.signing import signature
from daemon.models import person_actor
from daemon.receivers.validation import invalid_input
from daemon.secrets import resolve


class Generic(Connector):
    create_delivers_event = True

    def __init__(self, config: GenericConnector) -> None:
        super().__init__(config.name, url=config.url, auth=config.auth,
                         rate_limit_per_minute=config.rate_limit_per_minute,
                         ignore_users=config.inbound.ignore_users, headers=config.headers)
        self.config = config

    def _signing(self) -> list[bytes]:
        return [v.encode() for v in (resolve(r) for r in self.config.secrets) if v]

    def secrets(self) -> list[str]:
        return super().secrets() + [s.decode() for s in self._signing()]

    async def _post(self, http: Http, event: EventView, ticket: Ticket | None) -> Ticket | None:
        envelope = dict(event.payload)
        if ticket is not None:
            envelope["ticket"] = {"id": ticket.id, "key": ticket.key, "url": ticket.url}
        body = orjson.dumps(envelope)
        headers = {"Content-Type": "application/json", "X-Incidentd-Event-Id": event.id,
                   "X-Incidentd-Event-Type": event.type}
        signing = self._signing()
        if signing:
            headers["X-Incidentd-Signature"] = signature(signing, body)
        reply = await http.call("POST", self.config.url, data=body, headers=headers)
        try:
            answer = reply.json()
        except ConnectorError:  # a 2xx that is not JSON ("ok") delivered all the same
            return None
        if isinstance(answer, dict) and isinstance(answer.get("id"), str | int) and not (
                isinstance(answer.get("id"), bool)) and str(answer["id"]).strip():
            return Ticket(id=str(answer["id"]).strip()[:255],
                          key=text_of(answer.get("key"), 255), url=text_of(answer.get("url")))
        return None

    # -- outbound: every operation is the envelope ------------------------------------------

    async def find_ticket(self, http: Http, event: EventView) -> Ticket | None:
        return None  # a generic tool has no search we know; its id comes back on a post

    async def create_ticket(self, http: Http, event: EventView) -> Ticket | None:
        return await self._post(http, event, None)

    async def update_ticket(self, http: Http, ticket: Ticket, event: EventView,
                            change: Change) -> None:
        await self._post(http, event, ticket)

    async def add_work_note(self, http: Http, ticket: Ticket, event: EventView) -> None:
        await self._post(http, event, ticket)

    async def close_ticket(self, http: Http, ticket: Ticket, event: EventView) -> None:
        await self._post(http, event, ticket)

    # -- inbound -------------------------------------------------------------------------

    def parse_inbound(self, body: bytes, headers: Mapping[str, str]) -> list[InboundUpdate]:
        try:
            msg = GenericUpdate.model_validate_json(body or b"null")
        except ValidationError as exc:
            raise invalid_input(exc, "update") from None
        if self.ignored(msg.actor):
            return []
        return [InboundUpdate(action=msg.action, user=msg.actor, note=msg.note,
                              ticket_id=msg.external_id, incident=msg.incident,
                              ref=f"id:{msg.id}" if msg.id else None)]


class GenericUpdate(BaseModel):
    """An update from a generic tool: one move, or a note, on one incident."""

    model_config = ConfigDict(extra="forbid")
    incident: IncidentRef | None = None
    external_id: str | None = Field(default=None, min_length=1, max_length=255)
    action: Literal["acknowledge", "resolve", "reopen", "note"]
    actor: Annotated[str, AfterValidator(person_actor)] = Field(min_length=1, max_length=200)
    note: str | None = Field(default=None, max_length=10_000)
    id: str | None = Field(default=None, min_length=1, max_length=255)

    @model_validator(mode="after")
    def _names_something(self) -> GenericUpdate:
        if self.incident is None and self.external_id is None:
            raise ValueError("give incident or external_id")
        if self.action == "note" and not (self.note and self.note.strip()):
            raise ValueError("a note needs its text in note")
        return self
