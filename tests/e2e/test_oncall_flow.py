"""From page to acknowledgement with real parts: Alertmanager fires at the daemon,
the daemon's signed webhook reaches the on-call tool (a local aiohttp server
here), and the engineer acknowledges through the link in it."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from .harness import (
    AlertmanagerProcess,
    DaemonProcess,
    IncidentdClient,
    ProcessRegistry,
    constant,
    example_config,
    local_server,
    poll,
)

pytestmark = pytest.mark.e2e

SECRET = "e2e-webhook-secret"


class OnCallTool:
    """What a paging tool or chat bridge sees: every webhook we send it."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.url = ""

    async def hook(self, request: web.Request) -> web.Response:
        self.received.append((request.headers.get("X-Incidentd-Signature", ""),
                              await request.read()))
        return web.Response(status=204)

    def events(self, event_type: str) -> list[dict[str, Any]]:
        out = []
        for _, body in self.received:
            event: dict[str, Any] = json.loads(body)["event"]
            if event["event_type"] == event_type:
                out.append(event)
        return out


@pytest.fixture
async def tool() -> AsyncIterator[OnCallTool]:
    tool = OnCallTool()
    app = web.Application()
    app.router.add_post("/hook", tool.hook)
    async with local_server(app) as port:
        tool.url = f"http://127.0.0.1:{port}/hook"
        yield tool


async def test_alertmanager_page_then_acknowledge_from_the_signed_link(
    tool: OnCallTool,
    daemon_factory: Callable[..., DaemonProcess],
    alertmanager_factory: Callable[..., AlertmanagerProcess],
    make_client: Callable[[DaemonProcess], IncidentdClient],
    procs: ProcessRegistry,
    http: aiohttp.ClientSession,
) -> None:
    config = example_config()
    config["notifications"] = {
        "targets": [{"name": "oncall-tool", "type": "webhook", "url": tool.url,
                     "secrets": [{"value": SECRET}]}],
        "poll_interval_seconds": 0.1,
        "action_links": {"secret": {"value": "e2e-link-secret"}},
    }
    daemon = daemon_factory(config=config)
    alertmanager = alertmanager_factory(daemon.alertmanager_webhook_url)
    await daemon.start()
    await alertmanager.start()
    client = make_client(daemon)
    name = f"OnCall{uuid.uuid4().hex[:6]}"
    await alertmanager.amtool_add({"alertname": name, "severity": "critical"},
                                  annotations={"summary": f"{name} is failing"})

    [triggered] = await poll(
        "the incident.triggered webhook", lambda: constant(tool.events("incident.triggered")),
        lambda events: events or None, within=60, diagnostics=procs.describe)
    signature, body = next((s, b) for s, b in tool.received
                           if json.loads(b)["event"]["id"] == triggered["id"])
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert signature == f"v1={expected}"
    incident = triggered["incident"]
    assert incident["status"] == "triggered" and name in incident["title"]

    link = triggered["actions"]["acknowledge"]
    assert link.startswith(f"{daemon.base_url}/actions/")
    async with http.get(link) as page:  # what a link preview or mail scanner does
        assert page.status == 200 and "acknowledge" in (await page.text()).lower()
    assert (await client.incident(incident["id"]))["status"] == "triggered"

    async with http.post(link) as done:
        assert done.status == 200, await done.text()
    acknowledged = await client.incident(incident["id"])
    assert acknowledged["status"] == "acknowledged"
    assert [e["actor"] for e in acknowledged["timeline"]
            if e["kind"] == "acknowledged"] == ["oncall-tool"]
    await poll("the incident.acknowledged webhook",
               lambda: constant(tool.events("incident.acknowledged")),
               lambda events: events or None, within=20, diagnostics=procs.describe)
    async with http.post(link) as again:  # links work once
        assert again.status == 403

