"""Stopping while a timer job is in the middle of its transaction (SQLite and
PostgreSQL): the job finishes, it is not cancelled half-way (the scheduler's own
shutdown cancels what still runs, and its log said so with a traceback)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import pytest

from daemon import app as daemon_app
from daemon.config import Config, DatabaseConfig
from tests.conftest import reset


async def test_a_running_timer_job_finishes_before_the_daemon_stops(
        database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    await reset(database_url)
    components = await daemon_app.start(Config(database=DatabaseConfig(url=database_url)))
    inside, finished = asyncio.Event(), asyncio.Event()

    async def slow_sla_check() -> int:  # a job holding its transaction a while
        async with components.store.write():
            inside.set()
            await asyncio.sleep(0.3)
        finished.set()
        return 0

    components.jobs._check_sla = slow_sla_check  # type: ignore[method-assign]
    components.scheduler.get_job("sla-clocks").modify(next_run_time=datetime.now(UTC))
    components.scheduler.wakeup()
    await asyncio.wait_for(inside.wait(), timeout=10)
    with caplog.at_level(logging.ERROR, logger="apscheduler"):
        await daemon_app.stop(components)
    assert finished.is_set()
    assert not [r for r in caplog.records if r.name.startswith("apscheduler")]
