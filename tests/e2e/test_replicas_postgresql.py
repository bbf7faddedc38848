"""Two daemon processes on one PostgreSQL database: alerts may arrive at either,
one of them runs the timers, and when that one is killed the other takes over
without a breach lost or doubled."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import reset

from .harness import (
    DaemonProcess,
    IncidentdClient,
    alertmanager_group,
    constant,
    example_config,
    poll,
)

pytestmark = pytest.mark.e2e

ALL = ["P1", "P2", "P3", "P4", "P5"]


def fast_sla() -> dict[str, Any]:
    config = example_config()
    config["sla"] = {"check_interval_seconds": 0.2, "policies": [
        {"name": "fast", "priorities": ALL, "response_seconds": 3,
         "resolution_seconds": 3600}]}
    return config


def breaches(incident: dict[str, Any]) -> list[str]:
    return [e["detail"]["clock"] for e in incident["timeline"] if e["kind"] == "sla_breached"]


async def fire(client: IncidentdClient) -> int:
    group = f"Replica{uuid.uuid4().hex[:8]}"
    status, text = await client.post_alertmanager(
        alertmanager_group(group=group, fingerprints=[uuid.uuid4().hex[:16]]))
    assert status == 200, text
    page = await client.incidents()
    return int(next(i["id"] for i in page["items"] if group in i["group_key"]))


async def test_two_replicas_share_the_work_and_the_timers_survive_the_leader(
    pg_database: str,
    daemon_factory: Callable[..., DaemonProcess],
    make_client: Callable[[DaemonProcess], IncidentdClient],
) -> None:
    await reset(pg_database)
    url = pg_database
    first = await daemon_factory(config=fast_sla(), database_url=url).start()
    second = await daemon_factory(config=fast_sla(), database_url=url).start()
    one, two = make_client(first), make_client(second)

    # An alert at the second replica; the first (the leader) breaches it, once.
    early = await fire(two)
    incident = await poll("the breach by the leader", lambda: one.incident(early),
                          lambda i: i if breaches(i) else None, within=20,
                          diagnostics=first.describe)
    assert breaches(incident) == ["response"]
    assert "leadership acquired" in first.tail(200)

    await first.kill9()
    late = await fire(two)  # the survivor takes the timers over (advisory lock freed)
    incident = await poll("the breach after the leader died", lambda: two.incident(late),
                          lambda i: i if breaches(i) else None, within=30,
                          diagnostics=second.describe)
    assert breaches(incident) == ["response"]
    assert "leadership acquired" in second.tail(200)
    assert breaches(await two.incident(early)) == ["response"]  # not doubled


async def test_a_frozen_leader_loses_the_timers_within_its_timeout(
    pg_database: str,
    daemon_factory: Callable[..., DaemonProcess],
    make_client: Callable[[DaemonProcess], IncidentdClient],
) -> None:
    """A leader alive but silent (SIGSTOP: a frozen VM, a long GC, a cut-off host)
    keeps its connection open; the server ends it after `leader_timeout_seconds`, the
    other replica takes the timers over, and the leader, woken, does not double them."""
    await reset(pg_database)
    config = fast_sla()
    config["database"] = {"leader_timeout_seconds": 10}
    first = await daemon_factory(config=config, database_url=pg_database).start()
    second = await daemon_factory(config=config, database_url=pg_database).start()
    one, two = make_client(first), make_client(second)
    await poll("the first replica to lead", lambda: constant(first.tail(400)),
               lambda text: "leadership acquired" in text, within=20,
               diagnostics=first.describe)

    first.send_signal(signal.SIGSTOP)
    try:
        frozen_at = time.monotonic()
        late = await fire(two)
        incident = await poll("the breach by the replica that took over",
                              lambda: two.incident(late), lambda i: i if breaches(i) else None,
                              within=40, diagnostics=second.describe)
        took_over = time.monotonic() - frozen_at
        assert "leadership acquired" in second.tail(400)
    finally:
        first.send_signal(signal.SIGCONT)
    assert took_over < 10 + 5 + 10, f"takeover took {took_over:.1f} s"  # timeout + try + CI slack
    await poll("the woken replica to notice", lambda: constant(first.tail(400)),
               lambda text: "leadership lost" in text, within=20, diagnostics=first.describe)
    assert breaches(await one.incident(late)) == ["response"]
    assert breaches(incident) == ["response"]
