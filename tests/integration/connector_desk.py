"""The daemon's parts the connector tests drive in process, over one real store.

The ingest pipeline opens incidents (its follow-up writes the outbox), `Actions`
moves them as a person would, the real `Sender` with the real `ConnectorSync`
delivers to fake suites on loopback, and an aiohttp test server carries the real
routes (incidents, notifications, connector updates) behind the real middlewares.
The clock is a `FakeClock`: retries fall due when the test moves it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from daemon.api.auth import api_token_middleware
from daemon.api.connectors import connector_routes
from daemon.api.incidents import IncidentRoutes
from daemon.api.notifications import NotificationRoutes
from daemon.api.responses import errors_middleware
from daemon.app import build_pipeline
from daemon.config import Config
from daemon.correlation.topology import Topology, TopologyHolder
from daemon.itsm.actions import Actions
from daemon.itsm.connectors.sync import ConnectorSync
from daemon.itsm.delivery import Sender
from daemon.itsm.followup import FollowUp
from daemon.itsm.priority import PriorityMatrix
from daemon.models import Alert, AlertStatus, ConfigurationItem, Priority, Severity
from daemon.receivers.auth import Credentials
from daemon.store import Store
from daemon.store import notifications as outbox
from daemon.store.notifications import Notification, State
from tests.conftest import FakeClock

PUBLIC = "https://incidentd.example.test"
ADMIN = "connector-tests-admin-token"
CIS = (
    ConfigurationItem(id="svc-checkout", name="Checkout", type="service", criticality=1),
    ConfigurationItem(id="db-1", name="Orders DB", type="database", service="svc-checkout",
                      owner_group="dba", criticality=2),
)
RETRY = {"max_attempts": 6, "initial_seconds": 1, "max_seconds": 60, "timeout_seconds": 5}
Client = TestClient[web.Request, web.Application]


def alert(name: str, ci: str | None = "db-1", *,
          severity: Severity = Severity.CRITICAL) -> Alert:
    labels = {"alertname": name} | ({"instance": f"{ci}:9100"} if ci else {})
    return Alert(source="alertmanager", integration="alertmanager", fingerprint=name,
                 status=AlertStatus.FIRING, severity=severity, summary=f"{name} firing",
                 labels=labels, annotations={}, starts_at=datetime(2026, 11, 26, 11, tzinfo=UTC),
                 ends_at=None, generator_url=None, group_key=f"am:{name}")


class Desk:
    def __init__(self, store: Store, clock: FakeClock, *, connectors: list[dict[str, Any]],
                 targets: list[dict[str, Any]] | None = None,
                 retry: dict[str, Any] | None = None) -> None:
        self.store = store
        self.clock = clock
        self.config = Config.model_validate({
            "notifications": {"public_url": PUBLIC, "targets": targets or [],
                              "retry": retry or RETRY},
            "connectors": connectors,
        })
        self.topology = TopologyHolder(Topology.build(CIS))
        self.followup = FollowUp(self.config, self.topology, clock=clock, link_secret="links")
        self.pipeline = build_pipeline(self.config, self.topology, clock, self.followup)
        self.actions = Actions(store=store, clock=clock,
                               matrix=PriorityMatrix(self.config.priority),
                               followup=self.followup)
        self.sync = ConnectorSync.build(self.config.connectors, store=store, clock=clock,
                                        topology=self.topology)
        self.sender = Sender(config=self.config.notifications, store=store, clock=clock,
                             connectors=self.sync)
        self.client: Client | None = None

    # -- incidents -----------------------------------------------------------------------

    async def open(self, *alerts: Alert) -> int:
        """Ingest alerts that open one incident; its id."""
        async with self.store.write() as conn:
            result = await self.pipeline.process(conn, alerts)
        [opened] = [t.incident.id for t in result.transitions if t.previous is None]
        return opened

    async def move(self, incident_id: int, action: str, actor: str = "ann") -> None:
        await self.actions.move(incident_id, action, actor=actor, note=None)

    async def priority(self, incident_id: int, priority: str) -> None:
        await self.actions.set_priority(incident_id, priority=Priority(priority), impact=None,
                                        urgency=None, reason="business impact", actor="ann")

    # -- the outbox ----------------------------------------------------------------------

    async def drain(self) -> int:
        """Run the sender until a pass finds nothing due; the attempts made."""
        total = 0
        while attempts := await self.sender.run_once():
            total += attempts
        return total

    async def rows(self, target: str | None = None) -> list[Notification]:
        async with self.store.read() as conn:
            found = await outbox.list_notifications(conn, state=None, incident_id=None,
                                                    target=target, limit=500, before_id=None)
        return sorted(found, key=lambda n: n.id)

    async def pending(self, target: str | None = None) -> list[Notification]:
        return [r for r in await self.rows(target) if r.state is State.PENDING]

    async def wait_due(self) -> float:
        """Move the clock to the latest next attempt of the pending rows that were tried
        (waiting to retry); the seconds moved."""
        due = max(r.next_attempt_at for r in await self.pending()
                  if r.next_attempt_at and r.attempts)
        wait = max(0.0, (due - self.clock.now()).total_seconds())
        self.clock.advance(wait)
        return wait

    # -- the HTTP API --------------------------------------------------------------------

    async def api(self) -> Client:
        if self.client is None:
            app = web.Application(middlewares=[
                errors_middleware, api_token_middleware(Credentials(bearer=(ADMIN,)))])
            app.add_routes(IncidentRoutes(store=self.store, actions=self.actions,
                                          followup=self.followup, clock=self.clock).routes())
            app.add_routes(NotificationRoutes(store=self.store, clock=self.clock,
                                              sender=self.sender).routes())
            app.add_routes(connector_routes(self.config.connectors, sync=self.sync,
                                            store=self.store, actions=self.actions,
                                            clock=self.clock).routes())
            self.client = TestClient(TestServer(app))
            await self.client.start_server()
        return self.client

    async def get(self, path: str) -> Any:
        client = await self.api()
        resp = await client.get(path, headers={"Authorization": f"Bearer {ADMIN}"})
        assert resp.status == 200, await resp.text()
        return await resp.json()

    async def incident(self, incident_id: int) -> dict[str, Any]:
        result: dict[str, Any] = await self.get(f"/api/v1/incidents/{incident_id}")
        return result

    async def post_update(self, connector: str, body: bytes, headers: dict[str, str]
                          ) -> tuple[int, Any]:
        client = await self.api()
        resp = await client.post(f"/api/v1/connectors/{connector}/updates", data=body,
                                 headers={"Content-Type": "application/json", **headers})
        return resp.status, await resp.json()

    async def close(self) -> None:
        await self.sender.stop()
        if self.client is not None:
            await self.client.close()


@pytest.fixture(name="desks")
async def desks_fixture(store: Store, clock: FakeClock) -> AsyncIterator[Callable[..., Desk]]:
    """`desks(connectors=[...], targets=[...], retry={...})`: a Desk, closed at the end.
    Import `desks_fixture` into a test module to use it as `desks`."""
    made: list[Desk] = []

    def make(**kw: Any) -> Desk:
        desk = Desk(store, clock, **kw)
        made.append(desk)
        return desk

    yield make
    for desk in made:
        await desk.close()
