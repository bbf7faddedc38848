"""Real Prometheus → real Alertmanager → incidentd, and Prometheus scraping incidentd.

Prometheus scrapes a demo target and evaluates `DemoDown: demo_up == 0`
every second; Alertmanager routes the alert group to the daemon's webhook
with bearer auth and `send_resolved`. Flipping `demo_up` drives an incident
from opening to automatic resolution exactly as in production.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from .harness import (
    AlertmanagerProcess,
    DaemonProcess,
    DemoTarget,
    IncidentdClient,
    ProcessRegistry,
    PrometheusProcess,
    fixture_bytes,
    metric_value,
    poll,
)

pytestmark = pytest.mark.e2e

# Cold Prometheus needs ~5 s to discover its targets and Alertmanager, then
# group_wait 1 s: ~7 s measured here. The margin is for a loaded CI box.
ALERT_TIMEOUT = 60.0

DEMO_RULES = [
    {
        "name": "e2e-demo",
        "rules": [
            {
                "alert": "DemoDown",
                "expr": "demo_up == 0",
                "labels": {"severity": "critical", "service": "checkout"},
                "annotations": {"summary": "Demo service {{ $labels.instance }} is down"},
            }
        ],
    }
]


@dataclass
class Stack:
    daemon: DaemonProcess
    client: IncidentdClient
    alertmanager: AlertmanagerProcess
    prometheus: PrometheusProcess
    demo: DemoTarget
    procs: ProcessRegistry
    http: aiohttp.ClientSession

    @property
    def summary(self) -> str:
        return f"Demo service {self.demo.address} is down"

    async def wait_for_triggered_incident(self) -> dict[str, Any]:
        def find(page: dict[str, Any]) -> dict[str, Any] | None:
            for item in page["items"]:
                if item["title"] == self.summary or self.summary in item["title"]:
                    return item
            return None

        return await poll(
            f"a triggered incident titled {self.summary!r}",
            lambda: self.client.incidents(status="triggered"),
            find,
            within=ALERT_TIMEOUT,
            diagnostics=self.procs.describe,
        )

    async def wait_for_resolution(self, incident_id: int) -> dict[str, Any]:
        return await poll(
            f"incident {incident_id} to resolve automatically",
            lambda: self.client.incident(incident_id),
            lambda inc: inc if inc["status"] == "resolved" else None,
            within=ALERT_TIMEOUT,
            diagnostics=self.procs.describe,
        )


@pytest.fixture
async def stack(
    daemon_factory: Callable[[], DaemonProcess],
    alertmanager_factory: Callable[[str], AlertmanagerProcess],
    prometheus_factory: Callable[..., PrometheusProcess],
    demo_target: DemoTarget,
    make_client: Callable[[DaemonProcess], IncidentdClient],
    procs: ProcessRegistry,
    http: aiohttp.ClientSession,
) -> Stack:
    daemon = daemon_factory()
    alertmanager = alertmanager_factory(daemon.alertmanager_webhook_url)
    prometheus = prometheus_factory(
        alertmanager_port=alertmanager.port,
        scrape_targets={"demo": demo_target.address, "incidentd": f"127.0.0.1:{daemon.port}"},
        rule_groups=DEMO_RULES,
    )
    # Independent processes: start them side by side.
    await asyncio.gather(daemon.start(), alertmanager.start(), prometheus.start())
    return Stack(
        daemon=daemon,
        client=make_client(daemon),
        alertmanager=alertmanager,
        prometheus=prometheus,
        demo=demo_target,
        procs=procs,
        http=http,
    )


def check_opened(stack: Stack, incident: dict[str, Any]) -> None:
    """What a freshly opened DemoDown incident must look like."""
    assert incident["status"] == "triggered", incident
    assert incident["title"] == stack.summary, incident
    assert incident["severity"] == "critical", incident
    assert re.fullmatch(r"INC-\d{6}", incident["key"]), incident
    assert isinstance(incident["id"], int), incident
    assert incident["created_at"], incident
    assert incident["acknowledged_at"] is None and incident["resolved_at"] is None, incident
    assert len(incident["alerts"]) == 1, incident
    alert = incident["alerts"][0]
    assert alert["status"] == "firing", alert
    assert alert["fingerprint"], alert
    assert alert["labels"] == alert["labels"] | {
        "alertname": "DemoDown",
        "severity": "critical",
        "service": "checkout",
        "job": "demo",
        "instance": stack.demo.address,
    }, alert


def kinds(incident: dict[str, Any]) -> list[str]:
    return [entry["kind"] for entry in incident["timeline"]]


def check_auto_resolved(incident: dict[str, Any], fingerprint: str) -> None:
    assert incident["resolved_at"], incident
    [alert] = incident["alerts"]
    assert alert["fingerprint"] == fingerprint, incident
    assert alert["status"] == "resolved", incident
    timeline = kinds(incident)
    assert "opened" in timeline, incident["timeline"]
    assert "alert_resolved" in timeline and "resolved" in timeline, incident["timeline"]
    # Automatic: the incident resolves because (after) its last alert resolved.
    assert timeline.index("alert_resolved") < timeline.index("resolved"), incident["timeline"]


async def test_prometheus_alert_opens_incident_and_resolves_it(stack: Stack) -> None:
    client = stack.client

    stack.demo.value = 0
    incident = await stack.wait_for_triggered_incident()
    check_opened(stack, incident)
    detail = await client.incident(incident["id"])
    assert detail["status"] == "triggered" and "opened" in kinds(detail), detail

    metrics = await client.metrics_text()
    assert metric_value(metrics, "incidentd_incidents_open", status="triggered") == 1, metrics
    assert (metric_value(metrics, "incidentd_incidents_opened_total") or 0) >= 1
    firing = metric_value(
        metrics, "incidentd_alerts_received_total", source="alertmanager", status="firing"
    )
    assert (firing or 0) >= 1, metrics

    stack.demo.value = 1
    resolved = await stack.wait_for_resolution(incident["id"])
    check_auto_resolved(resolved, incident["alerts"][0]["fingerprint"])
    assert "acknowledged" not in kinds(resolved), resolved["timeline"]
    assert resolved["acknowledged_at"] is None, resolved

    metrics = await client.metrics_text()
    assert metric_value(metrics, "incidentd_incidents_open") == 0, metrics
    assert (metric_value(metrics, "incidentd_incident_time_to_resolve_seconds_count") or 0) >= 1, (
        metrics
    )
    assert (metric_value(metrics, "incidentd_incidents_resolved_total", how="automatic")
            or 0) >= 1, metrics

    # Prometheus scrapes incidentd's /metrics: the opened incident shows up there.
    async def opened_in_prometheus() -> tuple[float | None, Any]:
        return await stack.prometheus.query_sum(stack.http, "incidentd_incidents_opened_total")

    await poll(
        "Prometheus to report incidentd_incidents_opened_total >= 1",
        opened_in_prometheus,
        lambda answer: answer[0] is not None and answer[0] >= 1,
        within=30,
        diagnostics=stack.procs.describe,
    )


async def test_acknowledge_between_open_and_automatic_resolve(stack: Stack) -> None:
    client = stack.client

    stack.demo.value = 0
    incident = await stack.wait_for_triggered_incident()
    check_opened(stack, incident)
    incident_id = incident["id"]

    acked = await client.action(incident_id, "acknowledge", actor="alice")
    assert acked["id"] == incident_id, acked
    assert acked["status"] == "acknowledged", acked
    assert acked["acknowledged_at"], acked
    assert acked["resolved_at"] is None, acked

    detail = await client.incident(incident_id)
    assert detail["status"] == "acknowledged", detail
    ack_entries = [e for e in detail["timeline"] if e["kind"] == "acknowledged"]
    assert len(ack_entries) == 1 and ack_entries[0]["actor"] == "alice", detail["timeline"]
    listed = await client.incidents(status="acknowledged")
    assert [i["id"] for i in listed["items"]] == [incident_id], listed
    assert (await client.incidents(status="triggered"))["items"] == []

    metrics = await client.metrics_text()
    count = metric_value(metrics, "incidentd_incident_time_to_acknowledge_seconds_count")
    assert (count or 0) >= 1, metrics
    # Still open while acknowledged.
    assert metric_value(metrics, "incidentd_incidents_open", status="acknowledged") == 1, metrics
    assert metric_value(metrics, "incidentd_incidents_open", status="triggered") == 0, metrics

    # The alert clears: an acknowledged incident resolves by itself too.
    stack.demo.value = 1
    resolved = await stack.wait_for_resolution(incident_id)
    check_auto_resolved(resolved, incident["alerts"][0]["fingerprint"])
    timeline = kinds(resolved)
    assert timeline.index("acknowledged") < timeline.index("resolved"), resolved["timeline"]
    assert resolved["acknowledged_at"] == acked["acknowledged_at"], resolved
    [auto] = [e for e in resolved["timeline"] if e["kind"] == "resolved"]
    assert auto["actor"] != "alice", auto

    # Transitions out of `resolved` that the lifecycle does not allow.
    await client.action(incident_id, "resolve", actor="alice", expect=(409,))
    await client.action(incident_id, "acknowledge", actor="alice", expect=(409,))


async def test_bad_integration_token_is_refused_and_nothing_stored(client: IncidentdClient) -> None:
    body = fixture_bytes("prometheus_firing.json")
    status, text = await client.post_alertmanager(body, token="not-the-token")
    assert status == 401, text
    status, text = await client.post_alertmanager(body, token="")
    assert status == 401, text
    assert await client.all_alerts() == []
    assert (await client.incidents(status="triggered"))["items"] == []
