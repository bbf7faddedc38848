"""The sync engine: one outbox event of one incident, carried into one suite.

The outbox sender claims a connector's row like any other (lease, rate limit,
retries, dead letters) and hands it here instead of POSTing it. For the event:

1. The ticket incidentd stored for (incident, connector), if any.
2. None stored: ask the suite for one by our correlation id (`find_ticket`) and
   only then create one. A create that reached the suite but whose answer was lost
   (timeout, a daemon killed before it stored the id) is therefore found by the
   retry, never made twice. The ticket is stored at once.
3. Apply the event: acknowledge / reopen / priority → `update_ticket`, resolve →
   `close_ticket`, anything else → `add_work_note`. The event that opened the
   ticket (`incident.triggered`) needs nothing more.

The store claim delivers one connector's events of one incident in order (a later
one waits while an earlier one is pending), so a resolution never overtakes the
creation of its ticket. Every failure is a `ConnectorError` whose `retryable` and
`retry_after` the sender turns into a retry or a dead letter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any

import aiohttp

from daemon.clock import Clock
from daemon.config import ConnectorConfig
from daemon.correlation.topology import TopologyHolder
from daemon.itsm.connectors.base import Change, Connector, ConnectorError, EventView, Http, Ticket
from daemon.itsm.connectors.generic import Generic
from daemon.itsm.connectors.jira import Jira
from daemon.itsm.connectors.mapping import describe
from daemon.itsm.connectors.servicenow import ServiceNow
from daemon.store import Store
from daemon.store import tickets as ticket_store
from daemon.store.notifications import Notification

TRIGGERED = "incident.triggered"
RESOLVED = "incident.resolved"
CHANGES = {"incident.acknowledged": Change.ACKNOWLEDGE, "incident.reopened": Change.REOPEN,
           "incident.priority_updated": Change.PRIORITY}


def build_connector(config: ConnectorConfig, topology: TopologyHolder) -> Connector:
    if config.type == "servicenow":
        return ServiceNow(config, topology=topology)
    if config.type == "jira":
        return Jira(config)
    return Generic(config)


class ConnectorSync:
    """The configured connectors, and how an outbox row reaches one."""

    def __init__(self, connectors: Sequence[Connector], *, store: Store, clock: Clock,
                 topology: TopologyHolder) -> None:
        self._by_name = {c.name: c for c in connectors}
        self._store = store
        self._clock = clock
        self._topology = topology

    @classmethod
    def build(cls, configs: Sequence[ConnectorConfig], *, store: Store, clock: Clock,
              topology: TopologyHolder) -> ConnectorSync:
        return cls([build_connector(c, topology) for c in configs], store=store, clock=clock,
                   topology=topology)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[Connector]:
        return iter(self._by_name.values())

    def get(self, name: str) -> Connector | None:
        return self._by_name.get(name)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._by_name)

    async def deliver(self, row: Notification, session: aiohttp.ClientSession, *,
                      timeout: float) -> None:  # noqa: ASYNC109 - one budget for all calls
        """Carry the row's event into its suite, within `timeout` seconds in all."""
        connector = self._by_name[row.target]
        if row.incident_id is None or row.payload is None:
            raise ConnectorError(f"{connector.name}: the event names no incident",
                                 retryable=False)
        view = self._view(connector, row.payload)
        http = connector.http(session, timeout=timeout, now=self._clock.now)
        try:
            async with asyncio.timeout(timeout):
                await self._sync(connector, http, row.incident_id, view)
        except TimeoutError:
            raise ConnectorError(f"{connector.name}: not done within {timeout:g}s (the "
                                 "delivery timeout)", retryable=True) from None

    def _view(self, connector: Connector, payload: dict[str, Any]) -> EventView:
        event = payload.get("event")
        incident = event.get("incident") if isinstance(event, dict) else None
        if not (isinstance(incident, dict) and isinstance(incident.get("key"), str)
                and isinstance(event, dict) and isinstance(event.get("event_type"), str)):
            # A payload this version cannot read: dead, visible, not retried for ever.
            raise ConnectorError(f"{connector.name}: the event cannot be read",
                                 retryable=False)
        root = incident.get("root_cause_ci")
        ci = self._topology.current.cis.get(root) if isinstance(root, str) else None
        return EventView(payload=payload, ci=ci, note=describe(event))

    async def _sync(self, connector: Connector, http: Http, incident_id: int,
                    view: EventView) -> None:
        async with self._store.read() as conn:
            stored = await ticket_store.get(conn, incident_id, connector.name)
        if stored is not None:
            ticket = Ticket(id=stored.external_id, key=stored.external_key, url=stored.url)
            await self._apply(connector, http, ticket, view)
            return
        found = await connector.find_ticket(http, view)
        made = None if found is not None else await connector.create_ticket(http, view)
        ticket_now = found if found is not None else made
        if ticket_now is None:
            return  # the generic tool took the event and named no ticket
        await self._save(incident_id, connector.name, ticket_now)
        if view.type == TRIGGERED or (made is not None and connector.create_delivers_event):
            return  # the ticket says all the opening event had to say
        await self._apply(connector, http, ticket_now, view)

    async def _save(self, incident_id: int, connector: str, ticket: Ticket) -> None:
        async with self._store.write() as conn:
            await ticket_store.save(conn, incident_id=incident_id, connector=connector,
                                    external_id=ticket.id, external_key=ticket.key,
                                    url=ticket.url, now=self._clock.now())

    @staticmethod
    async def _apply(connector: Connector, http: Http, ticket: Ticket, view: EventView) -> None:
        if view.type == RESOLVED:
            await connector.close_ticket(http, ticket, view)
        elif view.type in CHANGES:
            await connector.update_ticket(http, ticket, view, CHANGES[view.type])
        elif view.type != TRIGGERED or connector.create_delivers_event:
            await connector.add_work_note(http, ticket, view)
