"""SLA clocks and escalation on the daemon as a process, on real time with short
targets: breaches and escalation happen on their own timers, and a breach that
fell due while the daemon was killed happens once at the next start."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from .harness import (
    DaemonProcess,
    IncidentdClient,
    alertmanager_group,
    example_config,
    metric_value,
    poll,
)

pytestmark = pytest.mark.e2e

ALL = ["P1", "P2", "P3", "P4", "P5"]


def fast_config(*, response: int, resolution: int) -> dict[str, Any]:
    config = example_config()
    config["sla"] = {"check_interval_seconds": 0.2, "warn_at": [0.5], "policies": [
        {"name": "fast", "priorities": ALL, "response_seconds": response,
         "resolution_seconds": resolution}]}
    config["escalation"] = {"check_interval_seconds": 0.2, "default_policy": "fast",
                            "policies": [{"name": "fast", "levels": [
                                {"targets": ["user:primary"], "timeout_seconds": 1},
                                {"targets": ["team:sre"], "timeout_seconds": 60}]}]}
    return config


def clock(incident: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in incident["sla"] if c["clock"] == name)


def entries(incident: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["detail"] for e in incident["timeline"] if e["kind"] == kind]


def instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def open_incident(client: IncidentdClient) -> int:
    group = f"Sla{uuid.uuid4().hex[:8]}"
    status, text = await client.post_alertmanager(
        alertmanager_group(group=group, fingerprints=[uuid.uuid4().hex[:16]]))
    assert status == 200, text
    [incident] = await client.all_incidents()
    return int(incident["id"])


async def test_breach_warning_and_escalation_run_on_their_timers(
    daemon_factory: Callable[..., DaemonProcess],
    make_client: Callable[[DaemonProcess], IncidentdClient],
) -> None:
    daemon = await daemon_factory(config=fast_config(response=2, resolution=600)).start()
    client = make_client(daemon)
    number = await open_incident(client)

    incident = await poll(
        "the response clock to breach and level 2 to be notified",
        lambda: client.incident(number),
        lambda i: i if clock(i, "response")["state"] == "breached"
        and i["escalation"]["level"] == 2 else None,
        within=15, diagnostics=daemon.describe)
    assert [w["fraction"] for w in entries(incident, "sla_warning")] == [0.5]
    assert [(e["level"], e["targets"]) for e in entries(incident, "escalated")] == [
        (1, ["user:primary"]), (2, ["team:sre"])]
    response = clock(incident, "response")
    assert instant(response["breached_at"]) == instant(incident["created_at"]) + timedelta(
        seconds=2)

    text = await client.metrics_text()
    assert metric_value(text, "incidentd_sla_breaches_total", clock="response") == 1
    assert metric_value(text, "incidentd_escalations_total", reason="timeout") == 1

    incident = await client.action(number, "acknowledge", "alice")
    assert incident["escalation"]["state"] == "stopped"
    assert clock(incident, "response")["state"] == "breached"
    assert clock(incident, "resolution")["state"] == "running"


async def test_a_breach_due_while_killed_happens_once_at_restart(
    daemon_factory: Callable[..., DaemonProcess],
    make_client: Callable[[DaemonProcess], IncidentdClient],
) -> None:
    daemon = await daemon_factory(config=fast_config(response=3, resolution=4)).start()
    client = make_client(daemon)
    number = await open_incident(client)
    await daemon.kill9()
    await asyncio.sleep(4.5)  # both targets pass while it is down
    await daemon.restart()

    incident = await poll(
        "both clocks breached after the restart", lambda: client.incident(number),
        lambda i: i if len(entries(i, "sla_breached")) == 2 else None,
        within=15, diagnostics=daemon.describe)
    created = instant(incident["created_at"])
    for name, target in (("response", 3), ("resolution", 4)):
        c = clock(incident, name)
        assert instant(c["breached_at"]) == created + timedelta(seconds=target), c
    await asyncio.sleep(1)  # several more timer runs: still once
    incident = await client.incident(number)
    assert sorted(b["clock"] for b in entries(incident, "sla_breached")) == [
        "resolution", "response"]
