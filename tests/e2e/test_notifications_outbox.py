"""The outbox survives `kill -9`: the daemon as a process, a webhook target that is
down when the alert comes in, a kill before any delivery succeeded, a restart, and
the event arrives exactly once, signed, with the same event id."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from .harness import (
    LOOPBACK,
    DaemonProcess,
    IncidentdClient,
    alertmanager_group,
    example_config,
    free_port,
    metric_value,
    poll,
)

pytestmark = pytest.mark.e2e

SECRET = "e2e-outbox-secret-7d2a"
TARGET = "e2e-hook"


class Target:
    """The webhook target: a real HTTP server the test starts late, on a port
    chosen early (so the daemon's config can name it while nothing listens)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}/incidentd"
        self.received: list[tuple[dict[str, str], bytes]] = []
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def handle(request: web.Request) -> web.Response:
            self.received.append((dict(request.headers), await request.read()))
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/incidentd", handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, LOOPBACK, self.port).start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    t = Target()
    try:
        yield t
    finally:
        await t.close()


def outbox_config(target_url: str) -> dict[str, Any]:
    config = example_config()
    config["notifications"]["targets"] = [{
        "name": TARGET, "type": "webhook", "url": target_url, "secrets": [{"value": SECRET}],
        "routes": [{"events": ["incident.triggered"]}],
    }]
    config["notifications"]["retry"] = {"initial_seconds": 0.05, "max_seconds": 0.2,
                                        "timeout_seconds": 2, "max_attempts": 1000}
    config["notifications"]["poll_interval_seconds"] = 0.1
    return config


async def notifications(client: IncidentdClient) -> list[dict[str, Any]]:
    page = await client._json("GET", "/api/v1/notifications", params={"limit": 100},
                              headers=client.admin_headers())
    return page["items"]  # type: ignore[no-any-return]


async def test_outbox_survives_kill9_and_delivers_exactly_once(
    daemon_factory: Callable[..., DaemonProcess],
    make_client: Callable[[DaemonProcess], IncidentdClient],
    target: Target,
) -> None:
    daemon = await daemon_factory(config=outbox_config(target.url)).start()
    client = make_client(daemon)

    def diagnostics() -> str:
        return daemon.describe(80)

    group = alertmanager_group(group="E2EOutbox", fingerprints=[uuid.uuid4().hex[:16]])
    status, text = await client.post_alertmanager(group)
    assert 200 <= status < 300, f"alert refused: {status} {text[:300]}"

    # The target is down: the daemon keeps the event pending and retries it.
    [before] = await poll(
        "a pending notification that already failed at least once",
        lambda: notifications(client),
        lambda items: [i for i in items if i["state"] == "pending" and i["attempts"] >= 1]
        or None,
        within=20, diagnostics=diagnostics,
    )
    assert before["target"] == TARGET and before["event_type"] == "incident.triggered"
    assert before["last_error"].startswith("cannot connect"), before
    await daemon.kill9()
    assert target.received == []

    await target.start()
    await daemon.restart()
    [after] = await poll(
        "the notification delivered after the restart",
        lambda: notifications(client),
        lambda items: [i for i in items if i["state"] == "delivered"] or None,
        within=30, diagnostics=diagnostics,
    )
    assert after["event_id"] == before["event_id"]
    # Delivered is recorded after the target's answer: nothing else can be on the way.
    # A few more sender passes (real time: the point is that none sends it again).
    await asyncio.sleep(0.5)
    assert len(target.received) == 1, [h for h, _ in target.received]
    headers, body = target.received[0]
    event = json.loads(body)["event"]
    assert event["id"] == headers["X-Incidentd-Event-Id"] == before["event_id"]
    assert event["event_type"] == headers["X-Incidentd-Event-Type"] == "incident.triggered"
    assert event["incident"]["key"] == "INC-000001"
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Incidentd-Signature"] == f"v1={expected}"

    metrics = await client.metrics_text()
    assert metric_value(metrics, "incidentd_notifications_total", target=TARGET,
                        outcome="delivered") == 1
    assert metric_value(metrics, "incidentd_outbox_pending") == 0
