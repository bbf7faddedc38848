"""What the daemon writes to its log: JSON lines, where it listens, and never a secret."""

from __future__ import annotations

import json

import pytest

from .harness import ADMIN_TOKEN, INTEGRATION_TOKEN, DaemonProcess, IncidentdClient

pytestmark = pytest.mark.e2e


async def test_log_is_json_lines_without_secrets(
    daemon: DaemonProcess, client: IncidentdClient
) -> None:
    body = (b'{"version":"4","status":"firing","groupKey":"g","alerts":[{"status":"firing",'
            b'"labels":{"alertname":"LogTest"},"startsAt":"2026-11-26T10:00:00Z"}]}')
    assert (await client.post_alertmanager(body))[0] == 200
    assert (await client.post_alertmanager(body, token=ADMIN_TOKEN))[0] == 401
    assert (await client.post_alertmanager(b"{broken", token=INTEGRATION_TOKEN))[0] == 400
    incidents = await client.all_incidents()
    assert len(incidents) == 1
    assert await daemon.stop() == 0

    text = daemon.log_path.read_text()
    assert ADMIN_TOKEN not in text and INTEGRATION_TOKEN not in text
    # The harness marks each start with its own line; everything else is the daemon's.
    records = [json.loads(line) for line in text.splitlines()
               if line.strip() and not line.startswith("=====")]
    listening = [r for r in records if r["event"] == "listening"]
    assert len(listening) == 1 and listening[0]["url"] == daemon.base_url
    opened = [r for r in records if r["event"] == "incident opened"]
    assert [r["incident_id"] for r in opened] == [incidents[0]["id"]]
    assert records[-1]["event"] == "stopped"
