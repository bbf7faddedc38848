"""The ITSM parts wired into the daemon: SLA clocks, escalation, maintenance windows,
suspected changes and problems through the HTTP API, the timer jobs and a restart."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from daemon import app as daemon_app
from daemon import metrics
from daemon.app import Components
from daemon.config import Overrides, load_config
from tests.conftest import FakeClock, reset

ADMIN = {"Authorization": "Bearer admin"}
SENDER = {"Authorization": "Bearer gen"}
Client = TestClient  # type: ignore[type-arg]

CMDB = """cis:
  - {id: db-1, name: DB, type: database}
  - {id: app-1, name: App, type: app, depends_on: [db-1]}
  - {id: web-1, name: Web, type: app}
"""


def write_config(tmp_path: Path, database_url: str) -> Path:
    (tmp_path / "cmdb.yaml").write_text(CMDB)
    path = tmp_path / "incidentd.yaml"
    path.write_text(yaml.safe_dump({
        "api": {"tokens": [{"value": "admin"}]},
        "integrations": [{"name": "generic", "type": "generic",
                          "auth": {"bearer_tokens": [{"value": "gen"}]}}],
        "database": {"url": database_url},
        "cmdb": {"files": ["cmdb.yaml"]},
        "sla": {"policies": [{"name": "all", "priorities": ["P1", "P2", "P3", "P4", "P5"],
                              "response_seconds": 600, "resolution_seconds": 3600}]},
        "escalation": {"default_policy": "std", "policies": [{"name": "std", "levels": [
            {"targets": ["user:ann"], "timeout_seconds": 300},
            {"targets": ["team:sre"], "timeout_seconds": 300}]}]},
    }))
    return path


Daemon = Callable[[], Any]


@pytest.fixture
def daemon(database_url: str, tmp_path: Path, clock: FakeClock
           ) -> Callable[[], Any]:
    """`async with daemon() as (client, components)`: a daemon on the test's database;
    entering it again after leaving is a restart."""
    path = write_config(tmp_path, database_url)
    first = True

    @asynccontextmanager
    async def run() -> AsyncIterator[tuple[Client, Components]]:
        nonlocal first
        config = load_config(path, environ={}, overrides=Overrides(database_url=database_url))
        if first:
            await reset(database_url)
            first = False
        components = await daemon_app.start(config, clock=clock)
        try:
            async with TestClient(TestServer(components.app)) as client:
                yield client, components
        finally:
            await daemon_app.stop(components)

    return run


async def send(client: Client, body: dict[str, Any]) -> None:
    resp = await client.post("/api/v1/alerts", json=body, headers=SENDER)
    assert resp.status == 202, await resp.text()


async def call(client: Client, method: str, path: str, body: dict[str, Any] | None = None
               ) -> tuple[int, Any]:
    resp = await client.request(method, path, json=body, headers=ADMIN)
    return resp.status, await resp.json()


async def incident(client: Client, number: int) -> dict[str, Any]:
    status, body = await call(client, "GET", f"/api/v1/incidents/{number}")
    assert status == 200, body
    return body  # type: ignore[no-any-return]


def kinds(body: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["detail"] for e in body["timeline"] if e["kind"] == kind]


def sample(name: str, **labels: str) -> float:
    value = metrics.REGISTRY.get_sample_value(name, labels)
    return value or 0.0


def clock_of(body: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in body["sla"] if c["clock"] == name)


async def both(*jobs: Callable[[], Awaitable[int]]) -> None:
    for job in jobs:
        await job()


async def test_breaches_during_downtime_fire_once_at_start(
        daemon: Callable[[], Any], clock: FakeClock) -> None:
    t0 = clock.now()
    async with daemon() as (client, _):
        await send(client, {"summary": "Checkout slow", "severity": "error"})
        body = await incident(client, 1)
        response = clock_of(body, "response")
        assert (response["state"], response["due_at"], response["paused"]) == (
            "running", (t0 + timedelta(seconds=600)).isoformat().replace("+00:00", "Z"), False)
        assert body["escalation"]["level"] == 1 and body["escalation"]["state"] == "active"
        assert kinds(body, "escalated")[0]["targets"] == ["user:ann"]

    before = sample("incidentd_sla_breaches_total", clock="response", priority=body["priority"])
    clock.advance(4000)  # down past the response (600 s) and resolution (3600 s) targets
    async with daemon() as (client, components):
        await both(components.jobs.check_sla, components.jobs.check_sla,
                   components.jobs.escalate_unacknowledged)
        body = await incident(client, 1)
    breaches = kinds(body, "sla_breached")
    assert sorted(b["clock"] for b in breaches) == ["resolution", "response"]
    assert kinds(body, "sla_warning") == []  # passed while down: only the breach is said
    assert clock_of(body, "response")["breached_at"] == (
        t0 + timedelta(seconds=600)).isoformat().replace("+00:00", "Z")
    assert clock_of(body, "resolution")["state"] == "breached"
    assert sample("incidentd_sla_breaches_total", clock="response",
                  priority=body["priority"]) == before + 1
    # one level per run after downtime, each with its full timeout from now
    assert [e["level"] for e in kinds(body, "escalated")] == [1, 2]

    async with daemon() as (client, components):
        await both(components.jobs.check_sla)
        status, body = await call(client, "POST", "/api/v1/incidents/1/acknowledge")
    assert status == 200 and len(kinds(body, "sla_breached")) == 2
    assert clock_of(body, "response")["state"] == "breached"  # a breach stays one
    assert body["escalation"]["state"] == "stopped"


async def test_clocks_follow_ack_hold_resume_and_resolve(
        daemon: Callable[[], Any], clock: FakeClock) -> None:
    async with daemon() as (client, components):
        await send(client, {"summary": "Queue backlog", "severity": "warning"})
        priority = (await incident(client, 1))["priority"]
        met = sample("incidentd_sla_met_total", clock="response", priority=priority)
        clock.advance(450)  # 75 % of the response target
        await components.jobs.check_sla()
        body = await incident(client, 1)
        assert [w["clock"] for w in kinds(body, "sla_warning")] == ["response"]
        clock.advance(60)
        status, body = await call(client, "POST", "/api/v1/incidents/1/acknowledge",
                                  {"actor": "ann"})
        assert status == 200 and clock_of(body, "response")["state"] == "met"
        assert sample("incidentd_sla_met_total", clock="response", priority=priority) == met + 1
        assert body["escalation"]["state"] == "stopped"

        await call(client, "POST", "/api/v1/incidents/1/hold")
        resolution = clock_of(await incident(client, 1), "resolution")
        assert resolution["paused"] and resolution["due_at"] is None
        clock.advance(7200)  # on hold longer than the whole target: no breach
        await components.jobs.check_sla()
        _, body = await call(client, "POST", "/api/v1/incidents/1/resume")
        resolution = clock_of(body, "resolution")
        assert resolution["state"] == "running" and resolution["elapsed_seconds"] == 510
        assert resolution["due_at"] == (clock.now() + timedelta(seconds=3600 - 510)
                                        ).isoformat().replace("+00:00", "Z")
        _, body = await call(client, "POST", "/api/v1/incidents/1/resolve")
        assert clock_of(body, "resolution")["state"] == "met"
        assert kinds(body, "sla_breached") == []


async def test_escalate_by_hand(daemon: Callable[[], Any], clock: FakeClock) -> None:
    async with daemon() as (client, _):
        await send(client, {"summary": "Login errors", "severity": "critical"})
        status, body = await call(client, "POST", "/api/v1/incidents/1/escalate",
                                  {"actor": "ann", "note": "need the SRE team"})
        assert status == 200, body
        assert body["escalation"]["level"] == 2
        manual = kinds(body, "escalated")[-1]
        assert (manual["reason"], manual["targets"]) == ("manual", ["team:sre"])
        status, body = await call(client, "POST", "/api/v1/incidents/1/escalate")
        assert status == 409 and "last level" in body["error"]["message"]
        status, body = await call(client, "POST", "/api/v1/incidents/1/escalate", {"level": 9})
        assert status == 400
        await call(client, "POST", "/api/v1/incidents/1/resolve")
        status, _ = await call(client, "POST", "/api/v1/incidents/1/escalate", {"level": 1})
        assert status == 409


async def test_maintenance_window_keeps_alerts_quiet_then_releases_them(
        daemon: Callable[[], Any], clock: FakeClock) -> None:
    start, end = clock.now() - timedelta(minutes=10), clock.now() + timedelta(minutes=50)
    async with daemon() as (client, components):
        status, change = await call(client, "POST", "/api/v1/changes", {
            "summary": "PostgreSQL minor upgrade", "type": "standard", "cis": ["db-1"],
            "planned_start": start.isoformat(), "planned_end": end.isoformat()})
        assert status == 201, change
        assert change["state"] == "approved"  # standard changes are pre-approved
        suppressed = sample("incidentd_alerts_suppressed_total")
        await send(client, {"summary": "App 5xx", "severity": "critical", "ci": "app-1",
                            "fingerprint": "app-5xx"})
        await send(client, {"summary": "Web down", "severity": "critical", "ci": "web-1"})
        _, listing = await call(client, "GET", "/api/v1/incidents")
        # web-1 does not depend on db-1: it pages; app-1 does: it is maintenance noise
        assert [i["alerts"][0]["ci"] for i in listing["items"]] == ["web-1"]
        assert sample("incidentd_alerts_suppressed_total") == suppressed + 1
        _, detail = await call(client, "GET", f"/api/v1/changes/{change['id']}")
        assert [a["fingerprint"] for a in detail["alerts"]] == ["app-5xx"]

        clock.advance(51 * 60)  # the window is over; app-1 still fires
        await components.jobs.release_maintenance()
        await components.jobs.release_maintenance()
        _, listing = await call(client, "GET", "/api/v1/incidents")
        released = [i for i in listing["items"] if i["alerts"][0]["ci"] == "app-1"]
        assert len(released) == 1
        # the change on db-1, which app-1 depends on, is its suspected cause
        assert [c["id"] for c in released[0]["suspected_changes"]] == [change["id"]]
        _, report = await call(client, "GET", "/api/v1/reports/summary")
        assert report["changes"]["total"] == 1 and report["changes"]["with_incident"] == 1
        assert report["changes"]["success_rate"] == 0.0


async def test_third_recurrence_opens_a_problem_and_a_known_error_helps_the_fourth(
        daemon: Callable[[], Any], clock: FakeClock) -> None:
    async with daemon() as (client, _):
        for n in range(1, 4):
            await send(client, {"summary": "Replica lag", "severity": "error", "ci": "db-1",
                                "labels": {"alertname": "ReplicaLag"}})
            await call(client, "POST", f"/api/v1/incidents/{n}/resolve")
            clock.advance(2 * 3600)  # past the reopen window: each is a new incident
        status, problems = await call(client, "GET", "/api/v1/problems")
        assert status == 200 and len(problems["items"]) == 1
        problem = problems["items"][0]
        status, _ = await call(client, "PATCH", f"/api/v1/problems/{problem['id']}", {
            "status": "known_error", "workaround": "restart the replica", "actor": "ann"})
        assert status == 200
        await send(client, {"summary": "Replica lag", "severity": "error", "ci": "db-1",
                            "labels": {"alertname": "ReplicaLag"}})
        body = await incident(client, 4)
        assert [w["workaround"] for w in kinds(body, "workaround")] == ["restart the replica"]
        assert [p["key"] for p in body["problems"]] == [problem["key"]]
