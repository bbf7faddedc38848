"""Lifecycle moves and priority, over HTTP and through the pipeline, on both databases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from daemon import app as daemon_app
from daemon.config import Config, LifecycleConfig, Overrides, load_config
from daemon.correlation.topology import Topology, TopologyHolder
from daemon.models import ConfigurationItem, IncidentStatus, Priority
from daemon.store import Store
from daemon.store import incidents as incident_store
from tests.conftest import FakeClock, make_jobs, make_pipeline, reset
from tests.integration.test_correlation_scenarios import alert

ADMIN = {"Authorization": "Bearer admin"}
Client = TestClient  # type: ignore[type-arg]


@pytest.fixture
async def client(database_url: str, tmp_path: Path) -> AsyncIterator[Client]:
    path = tmp_path / "incidentd.yaml"
    path.write_text(yaml.safe_dump({
        "api": {"tokens": [{"value": "admin"}]},
        "integrations": [{"name": "generic", "type": "generic",
                          "auth": {"bearer_tokens": [{"value": "gen"}]}}]}))
    config = load_config(path, environ={}, overrides=Overrides(database_url=database_url))
    await reset(database_url)
    components = await daemon_app.start(config)
    async with TestClient(TestServer(components.app)) as c:
        yield c
    await daemon_app.stop(components)


async def post(client: Client, path: str, body: dict[str, Any] | None = None) -> Any:
    resp = await client.post(path, json=body or {}, headers=ADMIN)
    return resp.status, await resp.json()


async def test_hold_resume_resolve_close_reopen_over_http(client: Client) -> None:
    resp = await client.post("/api/v1/alerts", json={"summary": "Disk full", "severity": "error"},
                             headers={"Authorization": "Bearer gen"})
    assert resp.status == 202
    base = "/api/v1/incidents/1"
    assert (await post(client, f"{base}/acknowledge"))[1]["status"] == "acknowledged"
    status, body = await post(client, f"{base}/hold", {"actor": "ann", "note": "vendor ticket"})
    assert (status, body["status"]) == (200, "on_hold")
    assert (await post(client, f"{base}/acknowledge"))[0] == 409
    assert (await post(client, f"{base}/resume"))[1]["status"] == "acknowledged"  # back
    assert (await post(client, f"{base}/close"))[0] == 409  # only from resolved
    assert (await post(client, f"{base}/resolve"))[1]["status"] == "resolved"
    status, body = await post(client, f"{base}/reopen", {"actor": "bob"})
    assert (status, body["status"], body["resolved_at"]) == (200, "triggered", None)
    await post(client, f"{base}/resolve")
    status, body = await post(client, f"{base}/close")
    assert (status, body["status"]) == (200, "closed") and body["closed_at"]
    kinds = [(e["kind"], e["actor"]) for e in body["timeline"]][1:]
    assert kinds == [("acknowledged", "api"), ("held", "ann"), ("resumed", "api"),
                     ("resolved", "api"), ("reopened", "bob"), ("resolved", "api"),
                     ("closed", "api")]


async def test_priority_from_the_matrix_and_by_hand(client: Client) -> None:
    await client.post("/api/v1/alerts", json={"summary": "Slow", "severity": "warning"},
                      headers={"Authorization": "Bearer gen"})
    detail = await (await client.get("/api/v1/incidents/1", headers=ADMIN)).json()
    # no CI: default impact 2; warning: urgency 3 → P4
    assert (detail["impact"], detail["urgency"], detail["priority"]) == (2, 3, "P4")
    resp = await client.patch("/api/v1/incidents/1", json={"priority": "P1"}, headers=ADMIN)
    assert resp.status == 400  # a reason is required
    resp = await client.patch("/api/v1/incidents/1", headers=ADMIN, json={
        "impact": 1, "urgency": 1, "reason": "checkout down for VIP", "actor": "ann"})
    body = await resp.json()
    assert (resp.status, body["priority"], body["priority_manual"]) == (200, "P1", True)
    assert body["timeline"][-1] == {**body["timeline"][-1], "kind": "priority_changed",
                                    "actor": "ann", "detail": {
                                        "from": "P4", "to": "P1",
                                        "reason": "checkout down for VIP"}}
    # a later alert does not undo a priority set by hand
    await client.post("/api/v1/alerts", json={"summary": "Slow", "severity": "info"},
                      headers={"Authorization": "Bearer gen"})
    detail = await (await client.get("/api/v1/incidents/1", headers=ADMIN)).json()
    assert detail["priority"] == "P1"


async def test_priority_follows_impacted_services_and_rules(store: Store,
                                                            clock: FakeClock) -> None:
    topology = TopologyHolder(Topology.build([
        ConfigurationItem(id="svc", name="svc", type="service", criticality=1,
                          depends_on=("db",)),
        ConfigurationItem(id="db", name="db", type="database", criticality=4),
        ConfigurationItem(id="lab", name="lab", type="host", criticality=5)]))
    pipeline = make_pipeline(clock, topology)
    async with store.write() as conn:
        await pipeline.process(conn, [alert("db-down", "db"), alert("lab-down", "lab")])
    async with store.read() as conn:
        db_inc, lab_inc = [await incident_store.get_incident(conn, i) for i in (1, 2)]
    assert db_inc and lab_inc
    # db impacts svc (criticality 1): impact 1; severity error: urgency 2 → P2
    assert (db_inc.impact, db_inc.urgency, db_inc.priority) == (1, 2, Priority.P2)
    # lab host, criticality 5: impact 3 → P4
    assert (lab_inc.impact, lab_inc.priority) == (3, Priority.P4)


async def test_quiet_resolved_incidents_close_on_schedule(store: Store,
                                                          clock: FakeClock) -> None:
    async with store.write() as conn:
        await make_pipeline(clock).process(conn, [alert("a", None)])
        await make_pipeline(clock).process(conn, [alert("a", None, status="resolved")])
    jobs = make_jobs(store, clock, Config(lifecycle=LifecycleConfig(close_after_seconds=3600)))
    clock.advance(3599)
    assert await jobs.close_quiet_incidents() == 0
    clock.advance(2)
    assert await jobs.close_quiet_incidents() == 1  # also what fell due while down
    async with store.read() as conn:
        inc = await incident_store.get_incident(conn, 1)
    assert inc is not None and inc.status is IncidentStatus.CLOSED
    assert inc.closed_at == clock.now() and inc.timeline[-1].detail == {
        "reason": "quiet period over"}


def test_priority_config_is_checked() -> None:
    with pytest.raises(ValueError, match="impacts must be between 1 and 2"):
        Config.model_validate({"priority": {"matrix": [["P1", "P2"], ["P3", "P4"]]}})
    assert timedelta(seconds=LifecycleConfig().reopen_window_seconds) == timedelta(hours=1)
