"""10,000 alerts from several clients, `kill -9` in the middle of the flood: after a
restart every alert that was answered 2xx is stored, exactly once."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections import Counter
from collections.abc import Callable

import aiohttp
import pytest

from .harness import DaemonProcess, IncidentdClient, alertmanager_group

pytestmark = pytest.mark.e2e

CLIENTS = 8
REQUESTS_PER_CLIENT = 125
ALERTS_PER_REQUEST = 10  # 8 clients x 125 requests x 10 = 10,000 alerts
KILL_AFTER_ACKNOWLEDGED = 4_000


async def test_every_acknowledged_alert_survives_kill9_mid_flood_exactly_once(
    daemon: DaemonProcess, make_client: Callable[[DaemonProcess], IncidentdClient],
) -> None:
    client = make_client(daemon)
    acknowledged: list[str] = []
    refused: Counter[str] = Counter()
    half_way = asyncio.Event()

    async def flood(number: int) -> None:
        for r in range(REQUESTS_PER_CLIENT):
            fingerprints = [uuid.uuid4().hex[:16] for _ in range(ALERTS_PER_REQUEST)]
            body = alertmanager_group(group=f"Flood{number}x{r}", fingerprints=fingerprints)
            try:
                status, _ = await client.post_alertmanager(body)
            except (aiohttp.ClientError, OSError):
                refused["connection"] += 1
                return  # the daemon is gone: this client stops
            if 200 <= status < 300:
                acknowledged.extend(fingerprints)
                if len(acknowledged) >= KILL_AFTER_ACKNOWLEDGED:
                    half_way.set()
            else:
                refused[str(status)] += 1  # 503 when the queue is full: not promised

    async def killer() -> None:
        await half_way.wait()
        await daemon.kill9()

    await asyncio.gather(*(flood(n) for n in range(CLIENTS)), killer())
    total = CLIENTS * REQUESTS_PER_CLIENT * ALERTS_PER_REQUEST
    assert KILL_AFTER_ACKNOWLEDGED <= len(acknowledged) < total, (
        f"the kill should land mid-flood: {len(acknowledged)} acknowledged, refused {refused}")

    await daemon.restart()
    stored = sqlite3.connect(daemon.db_path)
    try:
        counts = Counter(fp for (fp,) in stored.execute("SELECT fingerprint FROM alerts"))
    finally:
        stored.close()
    missing = [fp for fp in acknowledged if fp not in counts]
    doubled = [fp for fp in acknowledged if counts[fp] > 1]
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged alerts lost"
    assert not doubled, f"{len(doubled)} acknowledged alerts stored more than once"
    assert (await client.incidents())["items"], "the restarted daemon serves its incidents"
