"""The metrics a scripted flow leaves behind: every series with exactly the labels the
README's table names, the values the flow implies, bounded label values (no incident
id, no free text), and an exposition `promtool check metrics` accepts.

The registry is the process's own, shared with every other test: the flow's effect is
read as the difference between two snapshots.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import generate_latest

from daemon import app as daemon_app
from daemon import metrics
from daemon.app import Components
from daemon.config import Overrides, load_config
from tests.conftest import FakeClock, require, reset

ADMIN = {"Authorization": "Bearer admin"}
SENDER = {"Authorization": "Bearer gen"}
Client = TestClient  # type: ignore[type-arg]

# Business services: svc-shop is the most critical; svc-aaa and svc-blog tie (by id).
CMDB = """cis:
  - {id: svc-shop, name: Shop, type: service, criticality: 1}
  - {id: svc-blog, name: Blog, type: service, criticality: 3}
  - {id: svc-aaa, name: Aaa, type: service, criticality: 3, depends_on: [web-1]}
  - {id: db-1, name: DB, type: database, service: svc-shop}
  - {id: app-1, name: App, type: app, service: svc-blog, depends_on: [db-1]}
  - {id: web-1, name: Web, type: app, service: svc-blog}
  - {id: cache-1, name: Cache, type: cache, service: svc-blog}
"""
SERVICES = {"svc-shop", "svc-blog", "svc-aaa"}

# The fixed metric table (README): family → label names (histogram `le` aside).
CONTRACT: dict[str, tuple[str, set[str]]] = {
    "incidentd_build": ("info", {"version"}),
    "incidentd_alerts_received": ("counter", {"source", "status"}),
    "incidentd_alerts_processed": ("counter", {"source", "outcome"}),
    "incidentd_alerts_rejected": ("counter", {"source", "reason"}),
    "incidentd_incidents_opened": ("counter", {"priority"}),
    "incidentd_incidents_resolved": ("counter", {"priority", "how"}),
    "incidentd_incidents_reopened": ("counter", {"priority"}),
    "incidentd_incidents_open": ("gauge", {"priority", "status"}),
    "incidentd_incident_time_to_acknowledge_seconds": ("histogram", {"service", "priority"}),
    "incidentd_incident_time_to_resolve_seconds": ("histogram", {"service", "priority"}),
    "incidentd_sla_warnings": ("counter", {"clock", "priority"}),
    "incidentd_sla_breaches": ("counter", {"clock", "priority"}),
    "incidentd_sla_met": ("counter", {"clock", "priority"}),
    "incidentd_escalations": ("counter", {"policy", "reason"}),
    "incidentd_problems_opened": ("counter", {"how"}),
    "incidentd_alerts_suppressed": ("counter", set()),
    "incidentd_runbook_runs": ("counter", {"runbook", "outcome"}),
    "incidentd_runbook_duration_seconds": ("histogram", {"runbook"}),
    "incidentd_runbook_pending_approvals": ("gauge", set()),
    "incidentd_notifications": ("counter", {"target", "outcome"}),
    "incidentd_outbox_pending": ("gauge", set()),
    "incidentd_ingest_duration_seconds": ("histogram", set()),
    "incidentd_ingest_batch_alerts": ("histogram", set()),
    "incidentd_ingest_queued_alerts": ("gauge", set()),
    "incidentd_config_last_reload_successful": ("gauge", set()),
    "incidentd_config_last_reload_success_timestamp_seconds": ("gauge", set()),
}
BOUNDED = {
    "priority": set(metrics.PRIORITIES),
    "status": {"firing", "resolved", "acknowledge", *metrics.OPEN_STATUSES},
    "outcome": {*metrics.ALERT_OUTCOMES, "succeeded", "failed", "dry_run", "denied", "expired",
                "interrupted", "skipped", "delivered", "retry", "dead"},
    "how": {*metrics.RESOLVED_HOW, "recurrence", "manual"},
    "source": {"alertmanager", "pagerduty", "grafana", "generic"},
    "clock": set(metrics.SLA_CLOCKS),
}

Sample = tuple[str, tuple[tuple[str, str], ...]]


def snapshot() -> dict[Sample, float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in metrics.REGISTRY.collect() for s in family.samples}


def delta(before: dict[Sample, float], after: dict[Sample, float], family: str
          ) -> dict[Sample, float]:
    """Changed samples of a counter family (`_total`) or histogram (`_count`/`_sum`)."""
    names = {f"{family}_total", f"{family}_count", f"{family}_sum"}
    return {k: round(v - before.get(k, 0.0), 6) for k, v in after.items()
            if k[0] in names and v != before.get(k, 0.0)}


def key(name: str, **labels: str) -> Sample:
    return name, tuple(sorted(labels.items()))


def gauge(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def daemon(database_url: str, tmp_path: Path, clock: FakeClock
                 ) -> AsyncIterator[tuple[Client, Components]]:
    (tmp_path / "cmdb.yaml").write_text(CMDB)
    path = tmp_path / "incidentd.yaml"
    path.write_text(yaml.safe_dump({
        "api": {"tokens": [{"value": "admin"}]},
        "integrations": [{"name": "generic", "type": "generic",
                          "auth": {"bearer_tokens": [{"value": "gen"}]}}],
        "database": {"url": database_url},
        "cmdb": {"files": ["cmdb.yaml"]},
    }))
    config = load_config(path, environ={}, overrides=Overrides(database_url=database_url))
    await reset(database_url)
    components = await daemon_app.start(config, clock=clock)
    try:
        async with TestClient(TestServer(components.app)) as client:
            yield client, components
    finally:
        await daemon_app.stop(components)


async def send(client: Client, **alert: Any) -> None:
    resp = await client.post("/api/v1/alerts", json=alert, headers=SENDER)
    assert resp.status == 202, await resp.text()


async def call(client: Client, method: str, path: str, body: dict[str, Any] | None = None
               ) -> Any:
    resp = await client.request(method, path, json=body, headers=ADMIN)
    assert resp.status < 300, (resp.status, await resp.text())
    return await resp.json()


async def priority_of(client: Client, number: int) -> str:
    body = await call(client, "GET", f"/api/v1/incidents/{number}")
    assert body["priority"] in {"P1", "P2", "P3", "P4", "P5"}, body
    return str(body["priority"])


def window(clock: FakeClock) -> tuple[datetime, datetime]:
    return clock.now() - timedelta(minutes=5), clock.now() + timedelta(hours=1)


async def test_a_scripted_flow_leaves_exactly_the_expected_series(
        daemon: tuple[Client, Components], clock: FakeClock) -> None:
    client, components = daemon
    before = snapshot()

    # INC-000001 on db-1 (svc-shop); app-1 correlates into it; db-1 repeats.
    await send(client, summary="Orders DB down hard", severity="critical", ci="db-1",
               fingerprint="db-down")
    p1 = await priority_of(client, 1)
    assert gauge("incidentd_incidents_open", priority=p1, status="triggered") == 1
    await send(client, summary="App 5xx on checkout", severity="error", ci="app-1",
               fingerprint="app-5xx")
    await send(client, summary="Orders DB down hard", severity="critical", ci="db-1",
               fingerprint="db-down")
    assert (await call(client, "GET", "/api/v1/incidents"))["items"][0]["id"] == 1
    p1 = await priority_of(client, 1)  # correlation may have re-assessed it
    clock.advance(90)
    await call(client, "POST", "/api/v1/incidents/1/acknowledge", {"actor": "alice"})
    assert gauge("incidentd_incidents_open", priority=p1, status="acknowledged") == 1
    assert gauge("incidentd_incidents_open", priority=p1, status="triggered") == 0
    clock.advance(200)
    await call(client, "POST", "/api/v1/incidents/1/resolve", {"actor": "alice"})

    # INC-000002 on web-1: impacts svc-blog and svc-aaa (a tie: svc-aaa); its alert clears.
    await send(client, summary="Web frontend down", severity="warning", ci="web-1",
               fingerprint="web-down")
    p2 = await priority_of(client, 2)
    clock.advance(40)
    await send(client, status="resolved", fingerprint="web-down")

    # INC-000003, unbound (no service); a runbook resolves it.
    await send(client, summary="Disk nearly full somewhere", severity="warning",
               fingerprint="disk-full")
    p3 = await priority_of(client, 3)
    clock.advance(5)
    # (as the runbook executor does; over the API that actor is reserved)
    await components.actions.move(3, "resolve", actor="runbook:cleanup",
                                  note="resolved by automation: cleanup")

    # cache-1 is under maintenance: its alert pages nobody.
    start, end = window(clock)
    await call(client, "POST", "/api/v1/changes", {
        "summary": "Cache upgrade", "type": "standard", "cis": ["cache-1"],
        "planned_start": start.isoformat(), "planned_end": end.isoformat()})
    await send(client, summary="Cache evictions high", severity="critical", ci="cache-1",
               fingerprint="cache-evict")
    listing = await call(client, "GET", "/api/v1/incidents")
    assert [i["id"] for i in listing["items"]] == [3, 2, 1], listing

    after = snapshot()
    exposition = generate_latest(metrics.REGISTRY).decode()

    generic = {"source": "generic"}
    assert delta(before, after, "incidentd_alerts_received") == {
        key("incidentd_alerts_received_total", **generic, status="firing"): 6,
        key("incidentd_alerts_received_total", **generic, status="resolved"): 1,
    }
    assert delta(before, after, "incidentd_alerts_processed") == {
        key("incidentd_alerts_processed_total", **generic, outcome="new"): 3,
        key("incidentd_alerts_processed_total", **generic, outcome="correlated"): 1,
        key("incidentd_alerts_processed_total", **generic, outcome="duplicate"): 1,
        key("incidentd_alerts_processed_total", **generic, outcome="suppressed"): 1,
    }
    assert delta(before, after, "incidentd_alerts_suppressed") == {
        key("incidentd_alerts_suppressed_total"): 1}

    opened: dict[Sample, float] = {}
    for p in (p1, p2, p3):  # p1 as re-assessed when app-1 joined: no change expected
        k = key("incidentd_incidents_opened_total", priority=p)
        opened[k] = opened.get(k, 0) + 1
    assert delta(before, after, "incidentd_incidents_opened") == opened
    assert delta(before, after, "incidentd_incidents_resolved") == {
        key("incidentd_incidents_resolved_total", priority=p1, how="manual"): 1,
        key("incidentd_incidents_resolved_total", priority=p2, how="automatic"): 1,
        key("incidentd_incidents_resolved_total", priority=p3, how="automation"): 1,
    }
    assert delta(before, after, "incidentd_incidents_reopened") == {}

    tta = "incidentd_incident_time_to_acknowledge_seconds"
    assert delta(before, after, tta) == {
        key(f"{tta}_count", service="svc-shop", priority=p1): 1,
        key(f"{tta}_sum", service="svc-shop", priority=p1): 90,
    }
    ttr = "incidentd_incident_time_to_resolve_seconds"
    assert delta(before, after, ttr) == {
        key(f"{ttr}_count", service="svc-shop", priority=p1): 1,
        key(f"{ttr}_sum", service="svc-shop", priority=p1): 290,
        key(f"{ttr}_count", service="svc-aaa", priority=p2): 1,
        key(f"{ttr}_sum", service="svc-aaa", priority=p2): 40,
        key(f"{ttr}_count", service="none", priority=p3): 1,
        key(f"{ttr}_sum", service="none", priority=p3): 5,
    }
    # 5 s resolves by automation land in the 5 s bucket; 290 s in 300 s, not below.
    bucket = f"{ttr}_bucket"
    assert after[key(bucket, service="none", priority=p3, le="5.0")] - before.get(
        key(bucket, service="none", priority=p3, le="5.0"), 0) == 1
    assert after[key(bucket, service="svc-shop", priority=p1, le="300.0")] - before.get(
        key(bucket, service="svc-shop", priority=p1, le="300.0"), 0) == 1
    assert after[key(bucket, service="svc-shop", priority=p1, le="120.0")] == before.get(
        key(bucket, service="svc-shop", priority=p1, le="120.0"), 0)

    # Nothing open is left: every (priority, status) reads 0, and exists.
    for p in metrics.PRIORITIES:
        for s in metrics.OPEN_STATUSES:
            assert metrics.REGISTRY.get_sample_value(
                "incidentd_incidents_open", {"priority": p, "status": s}) == 0, (p, s)

    # The timer job reads the same from the store (and the backlogs too).
    await components.jobs.refresh_gauges()
    assert sum(gauge("incidentd_incidents_open", priority=p, status=s)
               for p in metrics.PRIORITIES for s in metrics.OPEN_STATUSES) == 0
    assert gauge("incidentd_runbook_pending_approvals") == 0

    check_labels(after, changed={k for k, v in after.items() if v != before.get(k)})
    await promtool_accepts(exposition)


def check_labels(after: dict[Sample, float], changed: set[Sample]) -> None:
    families = {f.name: f for f in metrics.REGISTRY.collect()}
    assert set(families) == set(CONTRACT), set(families) ^ set(CONTRACT)
    free_text = re.compile(r"\s|INC-\d|^\d+$")
    for name, (kind, labels) in CONTRACT.items():
        family = families[name]
        assert family.type == kind, (name, family.type)
        for sample in family.samples:
            names = set(sample.labels) - ({"le"} if sample.name.endswith("_bucket") else set())
            assert names == labels, (sample.name, sample.labels)
            for label, value in sample.labels.items():
                assert not free_text.search(value), (sample.name, sample.labels)
                if label in BOUNDED:
                    assert value in BOUNDED[label], (sample.name, sample.labels)
    # Services of this flow's observations are CMDB business services (or none).
    for name, labels in changed:
        service = dict(labels).get("service")
        if service is not None:
            assert service in SERVICES | {"none"}, (name, labels)


async def promtool_accepts(exposition: str) -> None:
    promtool = shutil.which("promtool")
    require(promtool is not None, "promtool is not installed")
    assert promtool is not None
    proc = await asyncio.create_subprocess_exec(
        promtool, "check", "metrics", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(exposition.encode()), timeout=30)
    assert proc.returncode == 0, out.decode(errors="replace")
