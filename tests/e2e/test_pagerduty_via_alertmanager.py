"""A real Alertmanager's `pagerduty_configs` receiver pointed at our `/v2/enqueue`.

Alertmanager sends PagerDuty Events API v2 exactly as it would to
events.pagerduty.com: `dedup_key` is the SHA-256 (hex) of the alert group's
key, and the routing key travels in the body. `amtool alert add` fires the
alert; adding it again with `--end` resolves it.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from .harness import (
    AlertmanagerProcess,
    DaemonProcess,
    IncidentdClient,
    ProcessRegistry,
    example_config,
    metric_value,
    pagerduty_receiver,
    poll,
)

pytestmark = pytest.mark.e2e

ROUTING_KEY = "e2e-pagerduty-routing-key-4d7a0c"
DELIVERY_TIMEOUT = 30.0


def group_dedup_key(alertname: str) -> str:
    """What Alertmanager 0.25 sends as `dedup_key` for a group of the root
    route grouped by `alertname`: SHA-256 hex of the group key."""
    return hashlib.sha256(f'{{}}:{{alertname="{alertname}"}}'.encode()).hexdigest()


async def start_pair(
    daemon_factory: Callable[..., DaemonProcess],
    alertmanager_factory: Callable[..., AlertmanagerProcess],
    *,
    routing_key: str,
) -> tuple[DaemonProcess, AlertmanagerProcess]:
    # The example config as shipped; only the routing key comes from the environment.
    daemon = daemon_factory(
        config=example_config(), env={"INCIDENTD_PAGERDUTY_ROUTING_KEY": ROUTING_KEY}
    )
    alertmanager = alertmanager_factory(
        receiver=pagerduty_receiver(daemon.pagerduty_events_url, routing_key)
    )
    await asyncio.gather(daemon.start(), alertmanager.start())
    return daemon, alertmanager


async def test_pagerduty_receiver_opens_and_resolves_incident(
    daemon_factory: Callable[..., DaemonProcess],
    alertmanager_factory: Callable[..., AlertmanagerProcess],
    make_client: Callable[[DaemonProcess], IncidentdClient],
    procs: ProcessRegistry,
) -> None:
    daemon, alertmanager = await start_pair(
        daemon_factory, alertmanager_factory, routing_key=ROUTING_KEY
    )
    client = make_client(daemon)
    alertname = f"PdE2E{uuid.uuid4().hex[:8]}"
    labels = {"alertname": alertname, "severity": "critical", "instance": "db-7.invalid:9100"}
    dedup_key = group_dedup_key(alertname)

    await alertmanager.amtool_add(labels, annotations={"summary": "database down"})

    def opened(page: dict[str, Any]) -> dict[str, Any] | None:
        return next((i for i in page["items"] if alertname in i["title"]), None)

    incident = await poll(
        f"a triggered incident for {alertname} via pagerduty_configs",
        lambda: client.incidents(status="triggered"),
        opened,
        within=DELIVERY_TIMEOUT,
        diagnostics=procs.describe,
    )
    # Alertmanager's default PagerDuty description: "[FIRING:n] <group labels> (<other labels>)".
    assert incident["title"].startswith(f"[FIRING:1] {alertname} "), incident
    assert labels["instance"] in incident["title"], incident
    # `severity` of pagerduty_configs defaults to "error"; the alert's label does not travel.
    assert incident["severity"] == "error", incident
    [alert] = incident["alerts"]
    assert alert["source"] == "pagerduty", alert
    assert re.fullmatch(r"[0-9a-f]{64}", alert["fingerprint"]), alert
    assert alert["fingerprint"] == dedup_key, (alert, f"expected sha256 of group key {dedup_key}")
    assert alert["status"] == "firing", alert
    assert alert["labels"] == {"source": "Alertmanager"}, alert

    # Resolve it in Alertmanager: the same labels, ending now.
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    await alertmanager.amtool_add(labels, end=now)

    resolved = await poll(
        f"incident {incident['id']} to resolve from Alertmanager's resolve event",
        lambda: client.incident(incident["id"]),
        lambda inc: inc if inc["status"] == "resolved" else None,
        within=DELIVERY_TIMEOUT,
        diagnostics=procs.describe,
    )
    assert resolved["resolved_at"], resolved
    [alert] = resolved["alerts"]
    assert alert["fingerprint"] == dedup_key and alert["status"] == "resolved", alert
    kinds = [e["kind"] for e in resolved["timeline"]]
    assert "alert_resolved" in kinds and "resolved" in kinds, resolved["timeline"]
    assert kinds.index("alert_resolved") < kinds.index("resolved"), resolved["timeline"]

    # One alert, one incident: the resolve event updated the trigger's alert.
    stored = await client.all_alerts()
    assert [(a["fingerprint"], a["status"]) for a in stored] == [(dedup_key, "resolved")], stored
    assert [i["id"] for i in await client.all_incidents()] == [incident["id"]]


async def test_pagerduty_receiver_with_wrong_routing_key_stores_nothing(
    daemon_factory: Callable[..., DaemonProcess],
    alertmanager_factory: Callable[..., AlertmanagerProcess],
    make_client: Callable[[DaemonProcess], IncidentdClient],
    procs: ProcessRegistry,
    http: aiohttp.ClientSession,
) -> None:
    daemon, alertmanager = await start_pair(
        daemon_factory, alertmanager_factory, routing_key="not-the-routing-key"
    )
    client = make_client(daemon)
    await alertmanager.amtool_add(
        {"alertname": "PdWrongKey", "severity": "critical", "instance": "db-8.invalid:9100"}
    )

    # The daemon refused the event (400, "Invalid routing key") ...
    async def rejected() -> float:
        text = await client.metrics_text()
        return (
            metric_value(
                text, "incidentd_alerts_rejected_total", source="pagerduty", reason="invalid"
            )
            or 0.0
        )

    await poll(
        "the daemon to reject Alertmanager's event with the wrong routing key",
        rejected,
        lambda n: n >= 1,
        within=DELIVERY_TIMEOUT,
        diagnostics=procs.describe,
    )

    # ... and Alertmanager gave up on it (no retry of a 4xx) and logged the 400.
    # The log line comes last, after the failure is counted.
    def refused_in_log(text: str) -> bool:
        return any(
            "Notify for alerts failed" in line
            and "unexpected status code 400" in line
            and "Invalid routing key" in line
            for line in text.splitlines()
        )

    async def am_log() -> str:
        return alertmanager.log_path.read_text(errors="replace")

    await poll(
        "Alertmanager to log the 400 for the wrong routing key",
        am_log,
        refused_in_log,
        within=10,
        interval=0.1,
        diagnostics=procs.describe,
    )
    am_metrics = await alertmanager.metrics_text(http)
    failed = metric_value(
        am_metrics, "alertmanager_notifications_failed_total", integration="pagerduty"
    )
    assert (failed or 0) >= 1, am_metrics

    assert await client.all_alerts() == []
    assert await client.all_incidents() == []
