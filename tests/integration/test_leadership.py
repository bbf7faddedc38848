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
    with pytest.raises(ConfigError, match="is in use by incidentd .* use PostgreSQL"):
        await Leadership(url).start()
    await first.stop()
    again = Leadership(url)  # free once the first one stops
    await again.start()
    await again.stop()
