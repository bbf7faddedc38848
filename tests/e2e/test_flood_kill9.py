"""10,000 alerts from several clients, `kill -9` in the middle of the flood: after a
restart every alert that was answered 2xx is stored, exactly once. The same across
two replicas on PostgreSQL, one of them killed."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import reset

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


async def test_two_replicas_flooded_one_killed_every_acknowledged_alert_once(
    pg_database: str,
    daemon_factory: Callable[..., DaemonProcess],
    make_client: Callable[[DaemonProcess], IncidentdClient],
) -> None:
    """Behind a load balancer: clients spread 10,000 alerts over two replicas on one
    PostgreSQL database; one replica is `kill -9`ed mid-flood and the clients send what
    it did not answer to the other, as a balancer with health checks would. Every alert
    answered 2xx is stored once, and a request retried at the other replica after the
    first may have committed it still makes one incident per group."""
    await reset(pg_database)
    doomed = await daemon_factory(database_url=pg_database).start()
    survivor = await daemon_factory(database_url=pg_database).start()
    clients = [make_client(doomed), make_client(survivor)]
    acknowledged: list[str] = []
    groups: list[str] = []
    refused: Counter[str] = Counter()
    half_way = asyncio.Event()

    async def send(body: dict[str, Any], first: int) -> None:
        order = [first, 1 - first]
        for attempt in range(20):
            client = clients[order[min(attempt, 1)]]  # failed at one: the other from now on
            try:
                status, _ = await client.post_alertmanager(body)
            except (aiohttp.ClientError, OSError):
                refused["connection"] += 1
                continue
            if 200 <= status < 300:
                return
            refused[str(status)] += 1
            await asyncio.sleep(0.2)  # 503 + Retry-After: overloaded; come back
        raise AssertionError(f"request never accepted: refused {refused}")

    async def flood(number: int) -> None:
        for r in range(REQUESTS_PER_CLIENT):
            fingerprints = [uuid.uuid4().hex[:16] for _ in range(ALERTS_PER_REQUEST)]
            group = f"Flood{number}x{r}"
            await send(alertmanager_group(group=group, fingerprints=fingerprints),
                       first=(number + r) % 2)
            acknowledged.extend(fingerprints)
            groups.append(group)
            if len(acknowledged) >= KILL_AFTER_ACKNOWLEDGED:
                half_way.set()

    async def killer() -> None:
        await half_way.wait()
        await doomed.kill9()

    await asyncio.gather(*(flood(n) for n in range(CLIENTS)), killer())
    assert refused["connection"] > 0, "the kill should land mid-flood"
    assert len(acknowledged) == CLIENTS * REQUESTS_PER_CLIENT * ALERTS_PER_REQUEST

    engine = create_async_engine(pg_database, poolclass=sa.pool.NullPool)
    try:
        async with engine.connect() as conn:
            counts = Counter(fp for (fp,) in await conn.execute(
                sa.text("SELECT fingerprint FROM alerts")))
            per_group = Counter(key for (key,) in await conn.execute(
                sa.text("SELECT group_key FROM incidents")))
    finally:
        await engine.dispose()
    missing = [fp for fp in acknowledged if fp not in counts]
    doubled = [fp for fp in acknowledged if counts[fp] > 1]
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged alerts lost"
    assert not doubled, f"{len(doubled)} acknowledged alerts stored more than once"
    wrong = {g: n for g in groups
             if (n := sum(c for k, c in per_group.items() if k.endswith(f'"{g}"}}'))) != 1}
    assert not wrong, f"groups without exactly one incident (group: incidents): {wrong}"
