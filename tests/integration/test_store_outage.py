"""The database goes away and comes back: the store says `StoreUnavailable` (never a
raw driver error), the ingest writer refuses with 503/429 and stores nothing of a
batch cut mid-transaction, the pool recovers without a failed request, and the
leader stops leading the moment its lock's connection is cut.

PostgreSQL is reached through a TCP proxy the test cuts (`tests/e2e/tcp_proxy.py`);
the shared server itself is never restarted. SQLite has nothing to restart: a full
disk is its outage.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from daemon.errors import Overloaded
from daemon.ingest import IngestWriter
from daemon.leader import Leadership
from daemon.models import Alert, AlertStatus, Severity
from daemon.store import Store, StoreUnavailable, migrate
from daemon.store.tables import alerts as alerts_table
from tests.conftest import FakeClock, make_pipeline, reset
from tests.e2e.tcp_proxy import TcpProxy

# "incidentd-ingest": the advisory lock every ingest transaction takes first.
INGEST_LOCK = 0x696E67657374


def alert(fp: str, group: str = "g1") -> Alert:
    return Alert(
        source="alertmanager", integration="alertmanager", fingerprint=fp,
        status=AlertStatus.FIRING, severity=Severity.ERROR, summary=f"{fp} is down",
        labels={"alertname": fp}, annotations={},
        starts_at=datetime(2026, 11, 26, 11, 0, tzinfo=UTC), ends_at=None,
        generator_url=None, group_key=group,
    )


async def until(what: str, check: Callable[[], Awaitable[bool] | bool], within: float = 15.0
                ) -> None:
    """Poll `check` until true; fail naming `what` after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {within:g}s waiting for {what}", pytrace=False)
        await asyncio.sleep(0.05)


@dataclass
class Outage:
    """A migrated, empty PostgreSQL database, reached directly and through a proxy."""

    proxy: TcpProxy
    url: str  # through the proxy
    direct_url: str

    def asyncpg_dsn(self) -> str:
        return self.direct_url.replace("postgresql+asyncpg://", "postgresql://", 1)


@pytest.fixture
async def outage(pg_database: str) -> AsyncIterator[Outage]:
    await reset(pg_database)
    parsed = make_url(pg_database)
    proxy = await TcpProxy(parsed.host or "127.0.0.1", parsed.port or 5432).start()
    proxied = parsed.set(host="127.0.0.1", port=proxy.port)
    try:
        yield Outage(proxy, proxied.render_as_string(hide_password=False), pg_database)
    finally:
        await proxy.close()


async def count_alerts(outage: Outage, fingerprints: list[str]) -> dict[str, int]:
    conn = await asyncpg.connect(outage.asyncpg_dsn(), timeout=10)
    try:
        rows = await conn.fetch("SELECT fingerprint, count(*) AS n FROM alerts "
                                "WHERE fingerprint = ANY($1::text[]) GROUP BY fingerprint",
                                fingerprints)
    finally:
        await conn.close()
    return {r["fingerprint"]: int(r["n"]) for r in rows}


@pytest.mark.postgres
async def test_cut_mid_query_and_refused_connects_are_store_unavailable(outage: Outage) -> None:
    store = Store.open(outage.url, pool_size=2)
    admin = await asyncpg.connect(outage.asyncpg_dsn(), timeout=10)
    try:
        async with store.read() as conn:  # a pooled connection, idle from now on
            await conn.execute(sa.text("SELECT 1"))

        async def long_query() -> None:
            async with store.write() as conn:
                await conn.execute(sa.text("SELECT pg_sleep(30)"))

        query = asyncio.create_task(long_query())

        async def sleeping() -> bool:
            n = await admin.fetchval("SELECT count(*) FROM pg_stat_activity "
                                     "WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'")
            return bool(n)

        await until("the query to run on the server", sleeping)
        await outage.proxy.cut()
        # The driver's own error for a connection closed mid-query is a bare DBAPIError
        # (SQLSTATE 08003): it must reach callers as "unavailable", not as a bug.
        with pytest.raises(StoreUnavailable):
            await query
        with pytest.raises(StoreUnavailable, match="ConnectionRefused"):
            async with store.read() as conn:
                await conn.execute(sa.text("SELECT 1"))
        with pytest.raises(StoreUnavailable):
            async with store.write(connect_attempts=3) as conn:
                await conn.execute(sa.text("SELECT 1"))

        await outage.proxy.restore()
        # Every pooled connection died in the cut; the first request after it works
        # (pre-ping and the invalidated pool replace them), no failed request first.
        for _ in range(4):
            async with store.write() as conn:
                assert (await conn.execute(sa.text("SELECT 1"))).scalar() == 1
    finally:
        await admin.close()
        await store.close()


@pytest.mark.postgres
async def test_ingest_refuses_while_the_database_is_away_and_stores_nothing_half(
    outage: Outage, clock: FakeClock,
) -> None:
    store = Store.open(outage.url)
    writer = IngestWriter(store=store, pipeline=make_pipeline(clock), max_queued_alerts=1000,
                          max_batch_alerts=100, retry_after_seconds=4)
    writer.start()
    admin = await asyncpg.connect(outage.asyncpg_dsn(), timeout=10)
    try:
        await writer.submit([alert("before")])

        # A batch cut mid-transaction: hold the ingest lock so the batch waits on the
        # server, inside its transaction, then cut its connection.
        await admin.execute("SELECT pg_advisory_lock($1)", INGEST_LOCK)
        cut_short = [alert(f"cut{i}", group="cut") for i in range(5)]
        first = asyncio.create_task(writer.submit(cut_short[:3]))
        second = asyncio.create_task(writer.submit(cut_short[3:], overload_status=429))

        async def waiting_on_the_lock() -> bool:
            n = await admin.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                                     " AND NOT granted")
            return bool(n)

        await until("the ingest batch to wait for its lock", waiting_on_the_lock)
        await outage.proxy.cut()
        for task, status in ((first, 503), (second, 429)):
            with pytest.raises(Overloaded) as refused:
                await task
            assert (refused.value.status, refused.value.retry_after,
                    refused.value.reason) == (status, 4, "store_unavailable")
            # Nothing about the database's whereabouts goes to a client.
            assert str(refused.value) == "database unavailable; retry later"
        await admin.execute("SELECT pg_advisory_unlock($1)", INGEST_LOCK)

        with pytest.raises(Overloaded) as refused:  # refused at connect while it is down
            await writer.submit([alert("during")])
        assert refused.value.status == 503

        await outage.proxy.restore()
        await writer.submit(cut_short)  # the senders' retries
        await writer.submit([alert("during"), alert("after")])
        counts = await count_alerts(outage, [a.fingerprint for a in cut_short]
                                    + ["before", "during", "after"])
        assert counts == {fp: 1 for fp in [a.fingerprint for a in cut_short]
                          + ["before", "during", "after"]}
    finally:
        await admin.close()
        await writer.stop()
        await store.close()


@pytest.mark.postgres
async def test_the_leader_stops_leading_the_moment_its_connection_is_cut(
    outage: Outage,
) -> None:
    # A check every 60 s: losing the lead sooner than that is the termination listener.
    first = Leadership(outage.url, try_seconds=60)
    rival = Leadership(outage.direct_url, try_seconds=0.1)
    await first.start()
    try:
        assert first.is_leader
        await rival.start()
        assert not rival.is_leader
        await outage.proxy.cut()
        await until("the cut leader to step down", lambda: not first.is_leader, within=20)
        # The server saw the connection go and freed the lock: the rival leads now.
        await until("the rival to take the lock", lambda: rival.is_leader, within=20)
        assert not first.is_leader
    finally:
        await rival.stop()
        await first.stop()


@pytest.mark.postgres
async def test_a_leader_cut_off_leads_again_once_the_database_is_back(outage: Outage) -> None:
    leader = Leadership(outage.url, try_seconds=0.2)
    await leader.start()
    try:
        assert leader.is_leader
        await outage.proxy.cut()
        await until("the leader to step down", lambda: not leader.is_leader)
        # Several failed tries while the database is away: it keeps trying, not leading.
        await until("tries while down", lambda: leader._failures >= 3)
        assert not leader.is_leader
        await outage.proxy.restore()
        await until("the leader to lead again", lambda: leader.is_leader)
    finally:
        await leader.stop()


@pytest.mark.postgres
async def test_migrate_and_store_refuse_cleanly_while_the_database_is_away(
    outage: Outage,
) -> None:
    store = Store.open(outage.url)
    await outage.proxy.cut()
    try:
        with pytest.raises(StoreUnavailable):
            await migrate.is_current(store)
        await outage.proxy.restore()
        assert await migrate.is_current(store)
    finally:
        await store.close()


async def test_sqlite_disk_full_is_a_503_not_a_500(tmp_path: Path, clock: FakeClock) -> None:
    store = Store.open(f"sqlite+aiosqlite:///{tmp_path}/incidentd.db")
    await migrate.upgrade(store)
    writer = IngestWriter(store=store, pipeline=make_pipeline(clock), max_queued_alerts=1000,
                          max_batch_alerts=1000, retry_after_seconds=2)
    try:
        async with store.write() as conn:
            pages = (await conn.exec_driver_sql("PRAGMA page_count")).scalar()
            # The writer is SQLite's one connection: from now on its file cannot grow.
            await conn.exec_driver_sql(f"PRAGMA max_page_count = {pages}")
        writer.start()
        big = [alert(f"full{i}", group=f"full{i}") for i in range(300)]
        with pytest.raises(Overloaded) as refused:
            await writer.submit(big)
        assert (refused.value.status, refused.value.reason) == (503, "store_unavailable")
        async with store.read() as conn:
            stored = (await conn.execute(sa.select(sa.func.count()).select_from(alerts_table)))
            assert stored.scalar() == 0  # all or nothing
        async with store.write() as conn:
            await conn.exec_driver_sql("PRAGMA max_page_count = 1073741823")
        await writer.submit(big)  # room again: the same alerts go in
    finally:
        await writer.stop()
        await store.close()
