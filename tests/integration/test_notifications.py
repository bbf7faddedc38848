"""The notification outbox and its sender, on SQLite and PostgreSQL.

Incidents are opened by the real ingest pipeline and moved with the lifecycle
functions in one transaction each, as the daemon does; the follow-up (SLA,
escalation, and, once wired, the outbox) runs in that transaction, and each
step also calls `Notifier.enqueue_from_timeline` itself, which must insert
nothing twice. Every target is a real HTTP server on loopback that records
what it receives; signatures are checked here with hashlib/hmac directly.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from daemon import metrics
from daemon.api.notifications import NotificationRoutes
from daemon.api.responses import errors_middleware
from daemon.app import build_pipeline
from daemon.config import Config
from daemon.correlation.topology import Topology, TopologyHolder
from daemon.itsm import incidents
from daemon.itsm.action_links import ActionLinks
from daemon.itsm.delivery import LEASE_MARGIN_SECONDS, Sender
from daemon.itsm.followup import FollowUp
from daemon.itsm.notify import Notifier
from daemon.models import Alert, AlertStatus, ConfigurationItem, Severity
from daemon.store import Store
from daemon.store import notifications as outbox
from daemon.store.notifications import Notification, State
from daemon.store.tables import timeline
from tests.conftest import FakeClock

PUBLIC = "https://incidentd.example.test"
LINK_SECRET = "link-secret-for-tests"
CIS = (
    ConfigurationItem(id="svc-checkout", name="Checkout", type="service", criticality=1),
    ConfigurationItem(id="db-1", name="Orders DB", type="database", service="svc-checkout",
                      criticality=2),
)
LADDER = {"default_policy": "std", "policies": [{"name": "std", "levels": [
    {"targets": ["user:ann"], "timeout_seconds": 300},
    {"targets": ["team:sre", "webhook:ops-chat"], "timeout_seconds": 300}]}]}
RETRY = {"max_attempts": 10, "initial_seconds": 1, "max_seconds": 60, "timeout_seconds": 2}
Client = TestClient[web.Request, web.Application]


# -- targets: real HTTP servers ---------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: str | dict[str, Any] = "ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # real seconds before answering


@dataclass(frozen=True)
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    def json(self) -> Any:
        return json.loads(self.body)


class Endpoint:
    """A target on loopback: records each request on arrival, answers from `script`,
    then with `default`."""

    def __init__(self) -> None:
        self.hits: list[Hit] = []
        self.script: list[Reply] = []
        self.default = Reply()
        self.server = TestServer(self._app(), host="127.0.0.1")

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        reply = self.script.pop(0) if self.script else self.default
        self.hits.append(Hit(request.path, dict(request.headers), body, reply.status))
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if isinstance(reply.body, dict):
            return web.json_response(reply.body, status=reply.status, headers=reply.headers)
        return web.Response(status=reply.status, text=reply.body, headers=reply.headers)

    def url(self, path: str = "/hook") -> str:
        return str(self.server.make_url(path))

    def events(self, path: str | None = None) -> list[dict[str, Any]]:
        return [h.json()["event"] for h in self.hits if path is None or h.path == path]


@pytest.fixture
async def endpoint() -> AsyncIterator[Callable[[], Awaitable[Endpoint]]]:
    started: list[Endpoint] = []

    async def make() -> Endpoint:
        e = Endpoint()
        await e.server.start_server()
        started.append(e)
        return e

    yield make
    for e in started:
        await e.server.close()


# -- the daemon's parts, over one store ------------------------------------------


def alert(name: str, ci: str | None = None, *, severity: Severity = Severity.ERROR) -> Alert:
    labels = {"alertname": name} | ({"instance": f"{ci}:9100"} if ci else {})
    return Alert(source="alertmanager", integration="alertmanager", fingerprint=name,
                 status=AlertStatus.FIRING, severity=severity, summary=f"{name} firing",
                 labels=labels, annotations={}, starts_at=datetime(2026, 11, 26, 11, tzinfo=UTC),
                 ends_at=None, generator_url=None, group_key=f"am:{name}")


class Desk:
    """The pipeline, the lifecycle moves, a notifier and a sender on one store."""

    def __init__(self, store: Store, clock: FakeClock, targets: list[dict[str, Any]], *,
                 escalation: dict[str, Any] | None = None,
                 retry: dict[str, Any] | None = None) -> None:
        self.store = store
        self.clock = clock
        self.config = Config.model_validate({
            "sla": {"policies": [{"name": "all", "priorities": ["P1", "P2", "P3", "P4", "P5"],
                                  "response_seconds": 600, "resolution_seconds": 3600}]},
            "escalation": escalation or {},
            "notifications": {"public_url": PUBLIC, "targets": targets,
                              "retry": retry or RETRY},
        })
        holder = TopologyHolder(Topology.build(CIS))
        self.followup = FollowUp(self.config, holder, clock=clock, link_secret=LINK_SECRET)
        self.pipeline = build_pipeline(self.config, holder, clock, self.followup)
        self.links = ActionLinks(secret=LINK_SECRET, ttl_seconds=3600, public_url=PUBLIC,
                                 clock=clock)
        self.notifier = Notifier(self.config.notifications, links=self.links, public_url=PUBLIC)
        self.sender = Sender(config=self.config.notifications, store=store, clock=clock)

    async def send(self, *alerts: Alert) -> list[int]:
        """Ingest alerts; returns the ids of the incidents they opened."""
        async with self.store.write() as conn:
            result = await self.pipeline.process(conn, alerts)
            await self.notifier.enqueue_from_timeline(conn, result.touched, self.clock.now())
        return sorted(t.incident.id for t in result.transitions if t.previous is None)

    async def move(self, incident_id: int, action: str, actor: str = "ann") -> None:
        now = self.clock.now()
        async with self.store.write() as conn:
            await incidents.move(conn, incident_id, action, actor=actor, note=None, now=now)
            await self.followup.after(conn, [incident_id], now)
            await self.notifier.enqueue_from_timeline(conn, [incident_id], now)

    async def sweep(self) -> None:
        """The escalation timer job."""
        now = self.clock.now()
        async with self.store.write() as conn:
            events = await self.followup.escalations.sweep(conn, now)
            await self.notifier.enqueue_from_timeline(conn, {e.incident_id for e in events},
                                                      now)

    async def rows(self) -> list[Notification]:
        async with self.store.read() as conn:
            found = await outbox.list_notifications(conn, state=None, incident_id=None,
                                                    target=None, limit=500, before_id=None)
        return sorted(found, key=lambda n: n.id)

    async def row(self) -> Notification:
        [only] = await self.rows()
        return only

    async def drain(self) -> int:
        """Run the sender until a pass finds nothing due; the attempts made."""
        total = 0
        while attempts := await self.sender.run_once():
            total += attempts
        return total

    async def wait_due(self) -> float:
        """Advance the clock to the earliest pending row's next attempt."""
        pending = [r for r in await self.rows() if r.state is State.PENDING]
        due = min(r.next_attempt_at for r in pending if r.next_attempt_at)
        wait = (due - self.clock.now()).total_seconds()
        self.clock.advance(wait)
        return wait


@pytest.fixture
async def desks(store: Store, clock: FakeClock) -> AsyncIterator[Callable[..., Desk]]:
    made: list[Desk] = []

    def make(targets: list[dict[str, Any]], **kw: Any) -> Desk:
        desk = Desk(store, clock, targets, **kw)
        made.append(desk)
        return desk

    yield make
    for desk in made:
        await desk.sender.stop()


def webhook(name: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "webhook", "url": url, **extra}


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def sent(target: str, outcome: str) -> float:
    return sample("incidentd_notifications_total", target=target, outcome=outcome)


def stamp(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def link_claim(url: str) -> dict[str, Any]:
    """The claim inside a signed action link, read without our code."""
    token = url.rsplit("/", 1)[1]
    payload = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))  # type: ignore[no-any-return]


async def timeline_ids(store: Store) -> dict[tuple[int, str], list[int]]:
    async with store.read() as conn:
        result = await conn.execute(sa.select(timeline.c.id, timeline.c.incident_id,
                                              timeline.c.kind).order_by(timeline.c.id))
    out: dict[tuple[int, str], list[int]] = {}
    for r in result:
        out.setdefault((r.incident_id, r.kind), []).append(r.id)
    return out


# -- envelope, event types, signature ---------------------------------------------


async def test_envelope_and_event_types_through_a_lifecycle(
        desks: Callable[..., Desk], endpoint: Callable[[], Awaitable[Endpoint]],
        store: Store, clock: FakeClock) -> None:
    hook = await endpoint()
    desk = desks([webhook("ops", hook.url())], escalation=LADDER)
    t0 = clock.now()
    [inc] = await desk.send(alert("orders-db-down", "db-1", severity=Severity.CRITICAL))
    assert await desk.drain() == 2
    clock.advance(300)
    await desk.sweep()
    assert await desk.drain() == 1
    clock.advance(60)
    await desk.move(inc, "acknowledge", actor="ann")
    await desk.move(inc, "acknowledge", actor="bob")  # harmless: nothing moves, no event
    assert await desk.drain() == 1
    clock.advance(60)
    await desk.move(inc, "resolve", actor="ann")
    assert await desk.drain() == 1

    events = hook.events()
    assert sorted(e["event_type"] for e in events[:2]) == ["incident.escalated",
                                                           "incident.triggered"]
    assert [e["event_type"] for e in events[2:]] == [
        "incident.escalated", "incident.acknowledged", "incident.resolved"]
    by = {(e["event_type"], e["detail"].get("level")): e for e in events}

    triggered = by[("incident.triggered", None)]
    ids = await timeline_ids(store)
    assert triggered["id"] == str(uuid.uuid5(uuid.NAMESPACE_URL,
                                             f"{PUBLIC}/timeline/{ids[(inc, 'opened')][0]}"))
    assert set(triggered) == {"id", "event_type", "occurred_at", "actor", "detail", "incident",
                              "actions"}
    assert triggered["occurred_at"] == stamp(t0)
    incident = triggered["incident"]
    assert {k: incident[k] for k in ("id", "key", "title", "status", "priority", "severity",
                                     "created_at", "acknowledged_at", "resolved_at",
                                     "root_cause_ci", "impacted_services", "impacted_cis",
                                     "alerts_count", "url", "escalation")} == {
        "id": inc, "key": "INC-000001", "title": "orders-db-down firing", "status": "triggered",
        "priority": "P1", "severity": "critical", "created_at": stamp(t0),
        "acknowledged_at": None, "resolved_at": None, "root_cause_ci": "db-1",
        "impacted_services": ["svc-checkout"], "impacted_cis": [], "alerts_count": 1,
        "url": f"{PUBLIC}/api/v1/incidents/{inc}", "escalation": {"policy": "std", "level": 1}}
    assert [(c["clock"], c["state"], c["due_at"]) for c in incident["sla"]] == [
        ("response", "running", stamp(t0 + timedelta(seconds=600))),
        ("resolution", "running", stamp(t0 + timedelta(seconds=3600)))]
    actions = triggered["actions"]
    assert set(actions) == {"acknowledge", "resolve"}
    for action, url in actions.items():
        assert url.startswith(f"{PUBLIC}/actions/")
        assert {k: link_claim(url)[k] for k in "iap"} == {"i": inc, "a": action, "p": "ops"}
        claim = desk.links.verify(url.rsplit("/", 1)[1])  # signed with the configured secret
        assert (claim.incident_id, claim.action, claim.person) == (inc, action, "ops")

    first = by[("incident.escalated", 1)]
    assert (first["actor"], first["detail"]["reason"], first["detail"]["targets"]) == (
        "incidentd", "opened", ["user:ann"])
    second = by[("incident.escalated", 2)]
    assert second["detail"]["reason"] == "timeout"
    assert second["incident"]["escalation"] == {"policy": "std", "level": 2}
    acked = by[("incident.acknowledged", None)]
    assert (acked["actor"], acked["incident"]["status"]) == ("ann", "acknowledged")
    assert acked["incident"]["acknowledged_at"] == stamp(t0 + timedelta(seconds=360))
    assert set(acked["actions"]) == {"acknowledge", "resolve"}  # still open
    resolved = by[("incident.resolved", None)]
    assert (resolved["incident"]["status"], resolved["actions"]) == ("resolved", {})

    # Each delivery names its event in headers; ids are distinct per event.
    for hit in hook.hits:
        event = hit.json()["event"]
        assert hit.headers["X-Incidentd-Event-Id"] == event["id"]
        assert hit.headers["X-Incidentd-Event-Type"] == event["event_type"]
        assert hit.headers["Content-Type"] == "application/json"
        assert hit.headers["User-Agent"].startswith("incidentd/")
        assert "X-Incidentd-Signature" not in hit.headers  # no secrets configured
    assert len({e["id"] for e in events}) == 5

    # The same entries again (another transaction at the same instant): nothing doubles.
    async with store.write() as conn:
        assert await desk.notifier.enqueue_from_timeline(conn, [inc], clock.now()) == 0
    assert len(await desk.rows()) == 5
    assert {r.state for r in await desk.rows()} == {State.DELIVERED}


async def test_signature_with_two_secrets_verifies_with_either(
        desks: Callable[..., Desk], endpoint: Callable[[], Awaitable[Endpoint]]) -> None:
    hook = await endpoint()
    old, new = "old-secret-1", "new-secret-2"
    desk = desks([webhook("signed", hook.url(), secrets=[{"value": old}, {"value": new}],
                          headers={"X-Team": "sre"})])
    await desk.send(alert("disk-full"))
    assert await desk.drain() == 1
    [hit] = hook.hits
    expected = [hmac.new(s.encode(), hit.body, hashlib.sha256).hexdigest() for s in (old, new)]
    assert hit.headers["X-Incidentd-Signature"] == f"v1={expected[0]},v1={expected[1]}"
    assert hit.headers["X-Team"] == "sre"

    def receiver_accepts(secret: str) -> bool:
        mine = hmac.new(secret.encode(), hit.body, hashlib.sha256).hexdigest()
        given = [p.strip().removeprefix("v1=") for p in
                 hit.headers["X-Incidentd-Signature"].split(",")]
        return any(hmac.compare_digest(mine, g) for g in given)

    assert receiver_accepts(old) and receiver_accepts(new)
    assert not receiver_accepts("someone-else")


# -- routing -----------------------------------------------------------------------


async def test_routing_by_priority_service_event_level_and_paged_target(
        desks: Callable[..., Desk], endpoint: Callable[[], Awaitable[Endpoint]],
        clock: FakeClock) -> None:
    hook = await endpoint()
    desk = desks([
        webhook("p1", hook.url("/p1"), routes=[{"priorities": ["P1"]}]),
        webhook("checkout", hook.url("/checkout"),
                routes=[{"services": ["svc-checkout"], "events": ["incident.triggered"]}]),
        webhook("acks", hook.url("/acks"), routes=[{"events": ["incident.ack*"]}]),
        webhook("level2", hook.url("/level2"), routes=[{"escalation_levels": [2]}]),
        # Named by level 2 as `webhook:ops-chat`; its own route matches nothing here.
        webhook("ops-chat", hook.url("/ops-chat"), routes=[{"events": ["incident.sla_breached"]}]),
        webhook("quiet", hook.url("/quiet"), routes=[{"priorities": ["P5"]},
                                                     {"events": ["incident.reopened"]}]),
    ], escalation=LADDER)
    [a] = await desk.send(alert("orders-db-down", "db-1", severity=Severity.CRITICAL))  # P1
    [b] = await desk.send(alert("lab-disk", None))  # P3, no service
    clock.advance(300)
    await desk.sweep()  # both to level 2
    await desk.move(b, "acknowledge")
    await desk.drain()

    def got(path: str) -> list[tuple[str, int, int | None]]:
        return sorted((e["event_type"], e["incident"]["id"], e["detail"].get("level"))
                      for e in hook.events(path))

    assert got("/p1") == [("incident.escalated", a, 1), ("incident.escalated", a, 2),
                          ("incident.triggered", a, None)]
    assert got("/checkout") == [("incident.triggered", a, None)]
    assert got("/acks") == [("incident.acknowledged", b, None)]
    assert got("/level2") == [("incident.escalated", a, 2), ("incident.escalated", b, 2)]
    assert got("/ops-chat") == [("incident.escalated", a, 2), ("incident.escalated", b, 2)]
    assert got("/quiet") == []
    # One event, one id, on every target it went to.
    ids = {(e["event_type"], e["incident"]["id"], e["detail"].get("level")): e["id"]
           for e in hook.events()}
    assert len(ids) == len({e["id"] for e in hook.events()})


# -- retries -----------------------------------------------------------------------


async def test_500_three_times_then_200_is_one_accepted_delivery_with_one_event_id(
        desks: Callable[..., Desk], endpoint: Callable[[], Awaitable[Endpoint]],
        clock: FakeClock) -> None:
    hook = await endpoint()
    hook.script = [Reply(500, "boom"), Reply(500, "boom"), Reply(500, "boom")]
    desk = desks([webhook("flaky", hook.url(), secrets=[{"value": "s3cret"}])])
    before = (sent("flaky", "retry"), sent("flaky", "delivered"))
    await desk.send(alert("api-5xx"))
    for attempt in range(1, 4):
        assert await desk.sender.run_once() == 1
        row = await desk.row()
        assert (row.state, row.attempts, row.last_status) == (State.PENDING, attempt, 500)
        assert row.last_error == "HTTP 500: boom"
        assert await desk.sender.run_once() == 0  # backing off: not due yet
        wait = await desk.wait_due()
        # tenacity's exponential backoff: initial * 2**(n-1) plus up to 1 s of jitter
        assert 2 ** (attempt - 1) <= wait <= 2 ** (attempt - 1) + 1
    assert await desk.sender.run_once() == 1
    row = await desk.row()
    assert (row.state, row.attempts, row.last_status, row.delivered_at) == (
        State.DELIVERED, 4, 200, clock.now())
    assert await desk.sender.run_once() == 0

    assert [h.status for h in hook.hits] == [500, 500, 500, 200]
    assert len([h for h in hook.hits if h.status == 200]) == 1
    assert {h.headers["X-Incidentd-Event-Id"] for h in hook.hits} == {row.event_id}
    assert {h.json()["event"]["id"] for h in hook.hits} == {row.event_id}
    assert len({h.body for h in hook.hits}) == 1  # the same bytes, the same signature
    for h in hook.hits:
        expected = hmac.new(b"s3cret", h.body, hashlib.sha256).hexdigest()
        assert h.headers["X-Incidentd-Signature"] == f"v1={expected}"
    assert (sent("flaky", "retry"), sent("flaky", "delivered")) == (before[0] + 3,
                                                                     before[1] + 1)
    assert sample("incidentd_outbox_pending") == 0


async def test_retry_after_in_seconds_and_as_http_date_is_honoured(
        desks: Callable[..., Desk], endpoint: Callable[[], Awaitable[Endpoint]],
        clock: FakeClock) -> None:
    hook = await endpoint()
    second_at = clock.now() + timedelta(seconds=120)
    hook.script = [
        Reply(429, "slow down", {"Retry-After": "120"}),
        Reply(503, "maintenance", {"Retry-After": format_datetime(
            second_at + timedelta(seconds=300), usegmt=True)}),
    ]
    desk = desks([webhook("busy", hook.url())])
    await desk.send(alert("queue-full"))
    assert await desk.sender.run_once() == 1
    row = await desk.row()
    assert (row.last_status, row.next_attempt_at) == (429, second_at)
    clock.advance(119)
    assert await desk.sender.run_once() == 0
    clock.advance(1)
    assert await desk.sender.run_once() == 1
    assert (await desk.row()).next_attempt_at == second_at + timedelta(seconds=300)
    clock.advance(299)
    assert await desk.sender.run_once() == 0
    clock.advance(1)
    assert await desk.sender.run_once() == 1
    assert (await desk.row()).state is State.DELIVERED
    assert [h.status for h in hook.hits] == [429, 503, 200]


async def test_max_attempts_then_dead(desks: Callable[..., Desk],
                                      endpoint: Callable[[], Awaitable[Endpoint]]) -> None:
    hook = await endpoint()
    hook.default = Reply(503, "down")
    desk = desks([webhook("down", hook.url())], retry=RETRY | {"max_attempts": 3})
    dead_before = sent("down", "dead")
    await desk.send(alert("cpu-hot"))
    for _ in range(3):
        assert await desk.sender.run_once() == 1
        if (await desk.row()).state is State.PENDING:
            await desk.wait_due()
    row = await desk.row()
    assert (row.state, row.attempts, row.next_attempt_at) == (State.DEAD, 3, None)
    assert row.last_error == "gave up after 3 attempts: HTTP 503: down"
    assert await desk.sender.run_once() == 0
    assert len(hook.hits) == 3
    assert sent("down", "dead") == dead_before + 1


async def test_no_answer_in_time_is_retried(desks: Callable[..., Desk],
                                            endpoint: Callable[[], Awaitable[Endpoint]]) -> None:
    hook = await endpoint()
    hook.script = [Reply(200, delay=2.0)]  # real time: the point is the real timeout
    desk = desks([webhook("slow", hook.url())], retry=RETRY | {"timeout_seconds": 0.2})
    await desk.send(alert("latency"))
    assert await desk.sender.run_once() == 1
    row = await desk.row()
    assert (row.state, row.last_status, row.last_error) == (
        State.PENDING, None, "no answer within 0.2s")
    await desk.wait_due()
    assert await desk.sender.run_once() == 1
    assert (await desk.row()).state is State.DELIVERED


async def test_refused_target_is_retried_and_connection_errors_say_no_url(
        desks: Callable[..., Desk], endpoint: Callable[[], Awaitable[Endpoint]]) -> None:
    hook = await endpoint()
    url = hook.url("/private-token-in-path")
    await hook.server.close()  # nothing listens there now
    desk = desks([webhook("gone", url)])
    await desk.send(alert("nobody-home"))
    assert await desk.sender.run_once() == 1
    row = await desk.row()
    assert row.state is State.PENDING and row.last_error is not None
    assert row.last_error.startswith("cannot connect")
    assert "private-token" not in row.last_error


async def test_a_crash_mid_delivery_retries_after_the_lease(
        desks: Callable[..., Desk], endpoint: Callable[[], Awaitable[Endpoint]],
        clock: FakeClock) -> None:
    hook = await endpoint()
    hook.script = [Reply(200, delay=5.0)]
    desk = desks([webhook("lease", hook.url())])
    await desk.send(alert("crashy"))
    task = asyncio.create_task(desk.sender.run_once())
    for _ in range(200):  # until the target has the request (real time: it is in flight)
        if hook.hits:
            break
        await asyncio.sleep(0.01)
    task.cancel()  # the process dies with the delivery in flight
    with contextlib.suppress(asyncio.CancelledError):
        await task
    row = await desk.row()
    lease = RETRY["timeout_seconds"] + LEASE_MARGIN_SECONDS
    assert (row.state, row.attempts) == (State.PENDING, 0)
    assert row.next_attempt_at == clock.now() + timedelta(seconds=lease)
    assert await desk.sender.run_once() == 0  # leased: nobody else takes it meanwhile
    clock.advance(lease)
    assert await desk.sender.run_once() == 1
    assert (await desk.row()).state is State.DELIVERED
    assert len({h.json()["event"]["id"] for h in hook.hits}) == 1


async def test_rate_limit_defers_without_losing(
        desks: Callable[..., Desk], endpoint: Callable[[], Awaitable[Endpoint]],
        clock: FakeClock) -> None:
    hook = await endpoint()
    desk = desks([webhook("slowpoke", hook.url(), rate_limit_per_minute=2)])
    await desk.send(alert("a-down"), alert("b-down"), alert("c-down"))
    assert await desk.sender.run_once() == 2
    rows = await desk.rows()
    assert sorted(r.state for r in rows) == [State.DELIVERED, State.DELIVERED, State.PENDING]
    [waiting] = [r for r in rows if r.state is State.PENDING]
    assert waiting.attempts == 0  # a deferral is not an attempt
    assert waiting.next_attempt_at == clock.now() + timedelta(seconds=30)  # 2/min: one per 30 s
    assert await desk.sender.run_once() == 0
    clock.advance(30)
    assert await desk.sender.run_once() == 1
    assert {r.state for r in await desk.rows()} == {State.DELIVERED}
    assert len(hook.hits) == 3
    assert len({h.headers["X-Incidentd-Event-Id"] for h in hook.hits}) == 3


# -- dead letters through the API, and resend -----------------------------------------


@pytest.fixture
async def api(desks: Callable[..., Desk]) -> AsyncIterator[Callable[[Desk], Awaitable[Client]]]:
    clients: list[Client] = []

    async def make(desk: Desk) -> Client:
        app = web.Application(middlewares=[errors_middleware])
        app.add_routes(NotificationRoutes(store=desk.store, clock=desk.clock,
                                          sender=desk.sender).routes())
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for c in clients:
        await c.close()


async def get_json(client: Client, path: str, status: int = 200) -> Any:
    resp = await client.get(path)
    assert resp.status == status, await resp.text()
    return await resp.json()


async def test_400_is_dead_at_once_listed_and_resent(
        desks: Callable[..., Desk], endpoint: Callable[[], Awaitable[Endpoint]],
        api: Callable[[Desk], Awaitable[Client]], clock: FakeClock) -> None:
    hook = await endpoint()
    hook.script = [Reply(400, "missing field: summary")]
    other = await endpoint()
    desk = desks([webhook("strict", hook.url()),
                  webhook("other", other.url(), routes=[{"priorities": ["P1"]}])])
    client = await api(desk)
    dead_before = sent("strict", "dead")
    [inc] = await desk.send(alert("bad-request"))
    assert await desk.sender.run_once() == 1
    row = await desk.row()
    assert (row.state, row.attempts, row.last_status, row.last_error) == (
        State.DEAD, 1, 400, "HTTP 400: missing field: summary")
    assert await desk.sender.run_once() == 0  # dead is not retried
    assert sent("strict", "dead") == dead_before + 1

    dead = await get_json(client, "/api/v1/notifications?state=dead")
    assert dead["next_cursor"] is None
    [item] = dead["items"]
    assert {k: item[k] for k in ("id", "event_id", "event_type", "incident", "target", "state",
                                 "attempts", "last_status", "last_error")} == {
        "id": row.id, "event_id": row.event_id, "event_type": "incident.triggered",
        "incident": "INC-000001", "target": "strict", "state": "dead", "attempts": 1,
        "last_status": 400, "last_error": "HTTP 400: missing field: summary"}
    assert "payload" not in item
    assert (await get_json(client, "/api/v1/notifications?state=pending"))["items"] == []
    detail = await get_json(client, f"/api/v1/notifications/{row.id}")
    assert detail["payload"]["event"]["id"] == row.event_id

    clock.advance(60)
    resp = await client.post(f"/api/v1/notifications/{row.id}/resend")
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert (body["state"], body["attempts"], body["next_attempt_at"]) == (
        "pending", 0, stamp(clock.now()))
    again = await client.post(f"/api/v1/notifications/{row.id}/resend")
    assert again.status == 409
    assert (await again.json())["error"]["code"] == "invalid_transition"
    assert await desk.sender.run_once() == 1
    assert [h.status for h in hook.hits] == [400, 200]
    assert {h.headers["X-Incidentd-Event-Id"] for h in hook.hits} == {row.event_id}
    delivered = await get_json(client, "/api/v1/notifications?state=delivered")
    assert [i["id"] for i in delivered["items"]] == [row.id]
    resent = await client.post(f"/api/v1/notifications/{row.id}/resend")  # delivered: again
    assert resent.status == 200

    # Filters, pagination, and errors that name the parameter.
    await desk.send(alert("second"))
    everything = await get_json(client, "/api/v1/notifications")
    assert [i["incident_id"] for i in everything["items"]] == [inc + 1, inc]  # newest first
    first = await get_json(client, "/api/v1/notifications?limit=1")
    assert first["next_cursor"] is not None
    rest = await get_json(client, f"/api/v1/notifications?limit=1&cursor={first['next_cursor']}")
    assert [i["id"] for i in first["items"] + rest["items"]] == [
        i["id"] for i in everything["items"]]
    assert [i["incident_id"] for i in (await get_json(
        client, "/api/v1/notifications?incident=INC-000002"))["items"]] == [inc + 1]
    assert (await get_json(client, "/api/v1/notifications?target=other"))["items"] == []
    bad = await get_json(client, "/api/v1/notifications?state=lost", status=400)
    assert bad["error"]["errors"] == [{"field": "state",
                                       "reason": "must be pending, delivered or dead"}]
    await get_json(client, "/api/v1/notifications?incident=abc", status=400)
    await get_json(client, "/api/v1/notifications/999999", status=404)
    assert (await client.post("/api/v1/notifications/999999/resend")).status == 404


# -- Slack -----------------------------------------------------------------------------


async def test_slack_incoming_webhook_message_blocks_and_a_refusal(
        desks: Callable[..., Desk], endpoint: Callable[[], Awaitable[Endpoint]],
        clock: FakeClock) -> None:
    slack = await endpoint()
    secret_path = "/services/T000/B000/sekr3tXYZ"
    desk = desks([{"name": "chat", "type": "slack",
                   "webhook_url": {"value": slack.url(secret_path)}}])
    t0 = clock.now()
    [inc] = await desk.send(alert("orders-db-down", "db-1", severity=Severity.CRITICAL))
    assert await desk.sender.run_once() == 1
    [hit] = slack.hits
    assert hit.path == secret_path
    message = hit.json()
    assert "INC-000001" in message["text"] and "orders-db-down firing" in message["text"]
    header, section, actions = message["blocks"]
    assert header == {"type": "header", "text": {
        "type": "plain_text", "text": "INC-000001 orders-db-down firing", "emoji": True}}
    assert section["text"]["text"] == "*Triggered*"
    assert [f["text"] for f in section["fields"]] == [
        "*Priority*\nP1", "*Status*\ntriggered", "*Root cause*\ndb-1",
        "*Impacted services*\nsvc-checkout",
        f"*SLA due*\nresponse {stamp(t0 + timedelta(seconds=600))}\n"
        f"resolution {stamp(t0 + timedelta(seconds=3600))}"]
    assert actions["type"] == "actions"
    buttons = {b["action_id"]: b for b in actions["elements"]}
    assert list(buttons) == ["acknowledge", "resolve", "open_incident"]
    assert buttons["acknowledge"]["value"] == buttons["resolve"]["value"] == str(inc)
    assert buttons["acknowledge"]["text"]["text"] == "Acknowledge"
    assert buttons["open_incident"]["url"] == f"{PUBLIC}/api/v1/incidents/{inc}"
    assert (await desk.row()).state is State.DELIVERED

    # Slack refuses (the channel is gone): dead at once, and the URL is nowhere.
    slack.default = Reply(404, "no_service")
    await desk.move(inc, "acknowledge")
    assert await desk.sender.run_once() == 1
    acked = slack.hits[-1].json()
    assert [b["action_id"] for b in acked["blocks"][2]["elements"]] == ["resolve",
                                                                        "open_incident"]
    row = (await desk.rows())[-1]
    assert (row.state, row.last_status, row.last_error) == (State.DEAD, 404,
                                                            "HTTP 404: no_service")
    assert "sekr3t" not in (row.last_error or "")


async def test_slack_chat_post_message_ok_false_handling(
        desks: Callable[..., Desk], endpoint: Callable[[], Awaitable[Endpoint]]) -> None:
    slack = await endpoint()
    slack.script = [Reply(200, {"ok": False, "error": "ratelimited"})]
    slack.default = Reply(200, {"ok": True, "channel": "C123", "ts": "1.2"})
    desk = desks([{"name": "chatops", "type": "slack", "bot_token": {"value": "xoxb-tok-42"},
                   "channel": "#ops", "api_url": slack.url("/api")}])
    [inc] = await desk.send(alert("queue-stuck"))
    assert await desk.sender.run_once() == 1
    row = await desk.row()
    assert (row.state, row.last_error) == (State.PENDING, "slack: ratelimited")
    await desk.wait_due()
    assert await desk.sender.run_once() == 1
    assert (await desk.row()).state is State.DELIVERED
    for hit in slack.hits:
        assert hit.path == "/api/chat.postMessage"
        assert hit.headers["Authorization"] == "Bearer xoxb-tok-42"
        body = hit.json()
        assert body["channel"] == "#ops"
        assert [b["type"] for b in body["blocks"]] == ["header", "section", "actions"]
        assert body["blocks"][2]["elements"][0] == {
            "type": "button", "action_id": "acknowledge", "value": str(inc), "style": "primary",
            "text": {"type": "plain_text", "text": "Acknowledge"}}

    slack.default = Reply(200, {"ok": False, "error": "channel_not_found"})
    await desk.move(inc, "resolve")
    assert await desk.sender.run_once() == 1
    row = (await desk.rows())[-1]
    assert (row.event_type, row.state, row.last_error) == (
        "incident.resolved", State.DEAD, "slack: channel_not_found")
    resolved = slack.hits[-1].json()
    assert [b["action_id"] for b in resolved["blocks"][2]["elements"]] == ["open_incident"]
