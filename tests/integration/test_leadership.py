"""One replica runs the timers: a PostgreSQL advisory lock elects it, and another
takes over when it goes; on SQLite a second daemon on the same file is refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from daemon.config import ConfigError
from daemon.leader import Leadership


async def test_one_leader_among_replicas_and_a_quick_takeover(pg_database: str) -> None:
    first = Leadership(pg_database, try_seconds=0.1)
    second = Leadership(pg_database, try_seconds=0.1)
    await first.start()
    await second.start()
    try:
        await asyncio.sleep(0.3)
        assert (first.is_leader, second.is_leader) == (True, False)
        await first.stop()  # SIGTERM, or the process dying: its connection closes
        for _ in range(50):
            if second.is_leader:
                break
            await asyncio.sleep(0.1)
        assert second.is_leader
    finally:
        await first.stop()
        await second.stop()


async def test_a_second_daemon_on_one_sqlite_file_is_refused(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/incidentd.db"
    first = Leadership(url)
    await first.start()
    assert first.is_leader
    with pytest.raises(ConfigError, match=r"is in use by incidentd .* use PostgreSQL"):
        await Leadership(url).start()
    await first.stop()
    again = Leadership(url)  # free once the first one stops
    await again.start()
    await again.stop()


async def test_two_replicas_ingesting_one_group_at_once_open_one_incident(
        pg_database: str) -> None:
    """Two daemons, one PostgreSQL: alerts of one Alertmanager group arrive at both at
    the same moment; the group still gets one incident."""
    from daemon.store import Store, migrate
    from daemon.store import incidents as incident_store
    from tests.conftest import FakeClock, empty, make_pipeline
    from tests.integration.test_correlation_scenarios import alert

    stores = [Store.open(pg_database), Store.open(pg_database)]
    await migrate.upgrade(stores[0])
    await empty(stores[0])
    clock = FakeClock()
    replicas = [make_pipeline(clock), make_pipeline(clock)]
    try:
        for round_ in range(5):
            group = f"am:group-{round_}"
            started = asyncio.Event()

            async def ingest(i: int, fingerprint: str, group: str = group,
                             started: asyncio.Event = started) -> None:
                async with stores[i].write() as conn:
                    if i == 0:
                        await replicas[i].process(conn, [alert(fingerprint, None, group=group)])
                        started.set()
                        await asyncio.sleep(0.05)  # still uncommitted while the other runs
                    else:
                        await started.wait()
                        await replicas[i].process(conn, [alert(fingerprint, None, group=group)])

            await asyncio.gather(ingest(0, f"a{round_}"), ingest(1, f"b{round_}"))
        async with stores[0].read() as conn:
            items = await incident_store.list_incidents(conn, statuses=None, limit=100,
                                                        before_id=None)
        assert sorted(len(i.alerts) for i in items) == [2] * 5
    finally:
        for s in stores:
            await s.close()
