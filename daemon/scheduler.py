"""Timers: APScheduler runs the periodic ITSM jobs (for now: closing quiet incidents).

Every job reads what is due from the store, so a restart loses nothing:
whatever fell due while the daemon was down is done at the first run.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from daemon.clock import Clock
from daemon.config import LifecycleConfig
from daemon.itsm import incidents
from daemon.models import incident_key
from daemon.store import Store, StoreUnavailable

log = structlog.get_logger("incidentd.scheduler")


class Jobs:
    def __init__(self, *, store: Store, clock: Clock, lifecycle: LifecycleConfig) -> None:
        self._store = store
        self._clock = clock
        self._lifecycle = lifecycle
        self._running: set[asyncio.Task[object]] = set()
        self._closing = False

    async def drain(self) -> None:
        """Start nothing new and wait for running jobs, before the store closes under them."""
        self._closing = True
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    async def close_quiet_incidents(self) -> int:
        if self._closing:
            return 0
        task = asyncio.current_task()
        assert task is not None
        self._running.add(task)
        try:
            return await self._close_quiet()
        finally:
            self._running.discard(task)

    async def _close_quiet(self) -> int:
        now = self._clock.now()
        before = now - timedelta(seconds=self._lifecycle.close_after_seconds)
        try:
            async with self._store.write() as conn:
                closed = await incidents.close_quiet(conn, resolved_before=before, now=now)
        except StoreUnavailable as err:
            log.warning("store unavailable; closing quiet incidents later", reason=str(err))
            return 0
        for t in closed:
            log.info("incident closed", incident_id=t.incident.id,
                     incident=incident_key(t.incident.id))
        return len(closed)


def start_scheduler(jobs: Jobs, *, interval_seconds: float = 60) -> AsyncIOScheduler:
    scheduler = AsyncIOScheduler(timezone="UTC")
    # The first run comes at once, catching up on what fell due during downtime.
    scheduler.add_job(jobs.close_quiet_incidents, "interval", seconds=interval_seconds,
                      id="close-quiet-incidents", coalesce=True, max_instances=1,
                      next_run_time=datetime.now(UTC))
    scheduler.start()
    return scheduler
