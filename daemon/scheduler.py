"""Timers: APScheduler runs the periodic ITSM jobs.

Closing quiet incidents, SLA warnings and breaches, escalation timeouts and
the end of maintenance windows. Every job reads what is due from the store,
so a restart loses nothing: whatever fell due while the daemon was down is
done at the first run, which comes at once when the scheduler starts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from daemon import metrics
from daemon.clock import Clock
from daemon.config import Config
from daemon.ingest import BatchResult, Pipeline, record
from daemon.itsm import incidents
from daemon.itsm.followup import FollowUp
from daemon.leader import Leadership
from daemon.models import incident_key
from daemon.runbooks.triggers import Triggers
from daemon.store import Store, StoreUnavailable, gauges

log = structlog.get_logger("incidentd.scheduler")

GAUGE_REFRESH_SECONDS = 15.0


class Jobs:
    def __init__(self, *, store: Store, clock: Clock, config: Config, followup: FollowUp,
                 pipeline: Pipeline, triggers: Triggers | None = None,
                 leadership: Leadership | None = None) -> None:
        self._leadership = leadership
        self._triggers = triggers
        self._store = store
        self._clock = clock
        self._config = config
        self._followup = followup
        self._pipeline = pipeline
        self._running: set[asyncio.Task[object]] = set()
        self._closing = False
        self._store_down: set[str] = set()  # jobs whose last run met no database

    def reconfigure(self, config: Config) -> None:
        """A configuration reload: jobs read `config` from their next run on (see
        `reschedule` for their intervals)."""
        self._config = config

    async def drain(self) -> None:
        """Start nothing new and wait for running jobs, before the store closes under them."""
        self._closing = True
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    async def close_quiet_incidents(self) -> int:
        return await self._guarded("closing quiet incidents", self._close_quiet)

    async def check_sla(self) -> int:
        return await self._guarded("checking SLA clocks", self._check_sla)

    async def escalate_unacknowledged(self) -> int:
        return await self._guarded("escalating", self._escalate)

    async def release_maintenance(self) -> int:
        return await self._guarded("ending maintenance windows", self._release)

    async def expire_approvals(self) -> int:
        return await self._guarded("expiring runbook approvals", self._expire)

    async def refresh_gauges(self) -> int:
        # Every replica exports gauges, so every replica refreshes them.
        return await self._guarded("refreshing gauges", self._refresh_gauges,
                                   leader_only=False)

    async def _guarded(self, what: str, job: Callable[[], Awaitable[int]], *,
                       leader_only: bool = True) -> int:
        if self._closing:
            return 0
        if leader_only and self._leadership is not None and not self._leadership.is_leader:
            return 0  # another replica runs the timers
        task = asyncio.current_task()
        assert task is not None
        self._running.add(task)
        try:
            done = await job()
        except StoreUnavailable as err:
            # The database is away: the next run tries again. Said once per outage and
            # job, not at every run of a job due every fraction of a second.
            if what not in self._store_down:
                log.warning(f"store unavailable; {what} later", reason=str(err))
            self._store_down.add(what)
            return 0
        finally:
            self._running.discard(task)
        if what in self._store_down:
            self._store_down.discard(what)
            log.info(f"store reachable again; {what} again")
        return done

    async def _close_quiet(self) -> int:
        now = self._clock.now()
        before = now - timedelta(seconds=self._config.lifecycle.close_after_seconds)
        async with self._store.write() as conn:
            closed = await incidents.close_quiet(conn, resolved_before=before, now=now)
        for t in closed:
            log.info("incident closed", incident_id=t.incident.id,
                     incident=incident_key(t.incident.id))
        return len(closed)

    async def _check_sla(self) -> int:
        now = self._clock.now()
        async with self._store.write() as conn:
            effects = await self._followup.sweep_sla(conn, now)
        effects.record_metrics()
        for e in effects.sla:
            log.warning(f"SLA {e.kind}", incident_id=e.incident_id,
                        incident=incident_key(e.incident_id), clock=e.clock,
                        priority=e.priority, fraction=e.fraction)
        return len(effects.sla)

    async def _escalate(self) -> int:
        now = self._clock.now()
        async with self._store.write() as conn:
            effects = await self._followup.sweep_escalations(conn, now)
        effects.record_metrics()
        for e in effects.escalations:
            log.info("escalated", incident_id=e.incident_id, incident=incident_key(e.incident_id),
                     policy=e.policy, level=e.level, targets=list(e.targets), reason=e.reason)
        return len(effects.escalations)

    async def _expire(self) -> int:
        if self._triggers is None:
            return 0
        now = self._clock.now()
        async with self._store.write() as conn:
            return await self._triggers.expire(conn, now)

    async def _refresh_gauges(self) -> int:
        """Backlogs and open incidents from the store, the authority: it sees what other
        replicas and a person's priority changes did, which this process's counts miss."""
        metrics.OPEN_INCIDENTS.mark()
        async with self._store.read() as conn:
            backlog = await gauges.backlog(conn)
            open_incidents = await gauges.open_incidents(conn)
        metrics.RUNBOOK_PENDING_APPROVALS.set(backlog.pending_approvals)
        metrics.OUTBOX_PENDING.set(backlog.outbox_pending)
        metrics.OPEN_INCIDENTS.replace(open_incidents)
        return len(open_incidents)

    async def _release(self) -> int:
        result: BatchResult
        async with self._store.write() as conn:
            result = await self._pipeline.release_maintenance(conn)
        record(result)
        return len(result.transitions)


def _intervals(config: Config) -> dict[str, float]:
    """Seconds between runs of each job."""
    return {
        "close-quiet-incidents": 60.0,
        "sla-clocks": config.sla.check_interval_seconds,
        "escalation": config.escalation.check_interval_seconds,
        "maintenance-windows": config.changes.check_interval_seconds,
        "runbook-approvals": 30.0,
        "gauges": GAUGE_REFRESH_SECONDS,
    }


def start_scheduler(jobs: Jobs, config: Config) -> AsyncIOScheduler:
    scheduler = AsyncIOScheduler(timezone="UTC")
    now = datetime.now(UTC)
    intervals = _intervals(config)
    every = {
        "close-quiet-incidents": jobs.close_quiet_incidents,
        "sla-clocks": jobs.check_sla,
        "escalation": jobs.escalate_unacknowledged,
        "maintenance-windows": jobs.release_maintenance,
        "runbook-approvals": jobs.expire_approvals,
        "gauges": jobs.refresh_gauges,
    }
    for job_id, job in every.items():
        seconds = intervals[job_id]
        # The first run comes at once, catching up on what fell due during downtime.
        scheduler.add_job(job, "interval", seconds=seconds, id=job_id, coalesce=True,
                          max_instances=1, next_run_time=now)
    scheduler.start()
    return scheduler


def reschedule(scheduler: AsyncIOScheduler, old: Config, new: Config) -> list[str]:
    """A configuration reload: jobs whose interval changed run at the new one, the next
    run one new interval from now. Returns their ids."""
    before, after = _intervals(old), _intervals(new)
    changed = [job_id for job_id in after if after[job_id] != before[job_id]]
    for job_id in changed:
        scheduler.reschedule_job(job_id, trigger="interval", seconds=after[job_id])
    return changed
