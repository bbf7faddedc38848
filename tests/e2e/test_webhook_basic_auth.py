"""A real Alertmanager `webhook_configs` receiver with `http_config.basic_auth`,
posting to a daemon integration (type alertmanager) that accepts `auth.basic`.

The daemon runs the example config plus that integration, its password
coming from the environment. Right password: `amtool alert add` opens an
incident. Wrong password: the daemon answers 401, counts it, and stores nothing.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from .harness import (
    AlertmanagerProcess,
    DaemonProcess,
    IncidentdClient,
    ProcessRegistry,
    example_config,
    metric_value,
    poll,
    webhook_receiver,
)

pytestmark = pytest.mark.e2e

INTEGRATION = "alertmanager-basic"
USERNAME = "am"
PASSWORD = "e2e-basic-password-71c2"
PASSWORD_ENV = "INCIDENTD_AM_BASIC_PASSWORD"
DELIVERY_TIMEOUT = 30.0


def config_with_basic_integration() -> dict[str, Any]:
    config = example_config()
    config["integrations"].append(
        {
            "name": INTEGRATION,
            "type": "alertmanager",
            "auth": {"basic": [{"username": USERNAME, "password": {"env": PASSWORD_ENV}}]},
        }
    )
    return config


async def start_pair(
    daemon_factory: Callable[..., DaemonProcess],
    alertmanager_factory: Callable[..., AlertmanagerProcess],
    *,
    password: str,
) -> tuple[DaemonProcess, AlertmanagerProcess]:
    daemon = daemon_factory(config=config_with_basic_integration(), env={PASSWORD_ENV: PASSWORD})
    alertmanager = alertmanager_factory(
        receiver=webhook_receiver(daemon.integration_url(INTEGRATION), basic=(USERNAME, password))
    )
    await asyncio.gather(daemon.start(), alertmanager.start())
    return daemon, alertmanager


def rejected_unauthorized(metrics: str) -> float:
    return (
        metric_value(
            metrics, "incidentd_alerts_rejected_total", source="alertmanager", reason="unauthorized"
        )
        or 0.0
    )


async def test_basic_auth_webhook_opens_incident(
    daemon_factory: Callable[..., DaemonProcess],
    alertmanager_factory: Callable[..., AlertmanagerProcess],
    make_client: Callable[[DaemonProcess], IncidentdClient],
    procs: ProcessRegistry,
) -> None:
    daemon, alertmanager = await start_pair(daemon_factory, alertmanager_factory, password=PASSWORD)
    client = make_client(daemon)
    summary = f"basic auth e2e {uuid.uuid4().hex[:8]}"
    labels = {"alertname": "BasicAuthE2E", "severity": "critical", "instance": "web-3.invalid:9100"}
    await alertmanager.amtool_add(labels, annotations={"summary": summary})

    def find(page: dict[str, Any]) -> dict[str, Any] | None:
        return next((i for i in page["items"] if i["title"] == summary), None)

    incident = await poll(
        f"a triggered incident titled {summary!r} via basic auth",
        lambda: client.incidents(status="triggered"),
        find,
        within=DELIVERY_TIMEOUT,
        diagnostics=procs.describe,
    )
    assert incident["severity"] == "critical", incident
    [alert] = incident["alerts"]
    assert alert["source"] == "alertmanager", alert
    assert alert["status"] == "firing", alert
    assert alert["labels"] == labels, alert
    assert re.fullmatch(r"[0-9a-f]{16}", alert["fingerprint"]), alert
    assert rejected_unauthorized(await client.metrics_text()) == 0


async def test_basic_auth_webhook_with_wrong_password_stores_nothing(
    daemon_factory: Callable[..., DaemonProcess],
    alertmanager_factory: Callable[..., AlertmanagerProcess],
    make_client: Callable[[DaemonProcess], IncidentdClient],
    procs: ProcessRegistry,
) -> None:
    daemon, alertmanager = await start_pair(
        daemon_factory, alertmanager_factory, password="not-the-password"
    )
    client = make_client(daemon)
    await alertmanager.amtool_add(
        {"alertname": "BasicAuthWrong", "severity": "critical", "instance": "web-4.invalid:9100"}
    )

    async def rejected() -> float:
        return rejected_unauthorized(await client.metrics_text())

    await poll(
        'incidentd_alerts_rejected_total{reason="unauthorized",source="alertmanager"} >= 1',
        rejected,
        lambda n: n >= 1,
        within=DELIVERY_TIMEOUT,
        diagnostics=procs.describe,
    )

    # Alertmanager saw the 401 and gave up on the notification (no retry of a 4xx).
    async def am_log() -> str:
        return alertmanager.log_path.read_text(errors="replace")

    await poll(
        "Alertmanager to log the 401",
        am_log,
        lambda text: any(
            "Notify for alerts failed" in line and "401" in line for line in text.splitlines()
        ),
        within=10,
        interval=0.1,
        diagnostics=procs.describe,
    )

    assert await client.all_alerts() == []
    assert await client.all_incidents() == []
