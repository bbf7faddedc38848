"""Runs queued runbook runs: claim, run the steps, close the loop.

One pass (`Executor.run_once`; the background loop does the same, starting
runs as slots free up):

1. In a short transaction, claim queued runs, oldest first (`FOR UPDATE SKIP
   LOCKED` on PostgreSQL, so replicas never claim the same run), and set each
   running. A second running run on the same CI violates the partial unique
   index: that run stays queued for a later pass (the per-CI lock). A run
   whose runbook was disabled (kill switch, breaker) or removed meanwhile is
   skipped instead.
2. Run the steps outside any transaction, each time-limited (the whole run
   too), retried when idempotent, gated by `when` on the previous outcome.
   Each finished step's record is saved in its own short transaction, so a
   restart sees how far a run got. A dry run renders and records every step
   and runs nothing.
3. Record the outcome with a timeline entry, count it for the circuit breaker,
   then resolve the incident (a `wait_for_resolution` step saw the alerts
   clear) or escalate it (the fix failed or timed out).

A run left `running` by a process that died is never re-run:
`interrupt_running` marks it `interrupted` at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import structlog
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_exponential_jitter,
)

from daemon import metrics
from daemon.clock import Clock, timestamp
from daemon.config import RunbooksConfig
from daemon.errors import UserError
from daemon.itsm.actions import Actions
from daemon.itsm.followup import Effects, FollowUp
from daemon.models import TimelineEntry, TimelineKind, incident_key
from daemon.runbooks import steps
from daemon.runbooks.catalog import CatalogHolder, Runbook, Step
from daemon.runbooks.templates import TemplateFailed, render_step
from daemon.runbooks.triggers import disabled_reason
from daemon.store import Store, StoreUnavailable
from daemon.store import incidents as incident_store
from daemon.store import runbooks as store
from daemon.store.runbooks import RunView

log = structlog.get_logger(__name__)

# A running process marks its runs this often; a run unmarked for SILENT_SECONDS
# belongs to a process that died.
HEARTBEAT_SECONDS = 10.0
SILENT_SECONDS = 35.0
# How long `stop` lets runs in flight finish before interrupting them.
STOP_GRACE_SECONDS = 10.0
# Extra queued runs looked at per claim, past those behind a CI lock.
CLAIM_LOOKAHEAD = 20
# How long a finished run's outcome is retried while the database is away.
FINISH_RETRY_SECONDS = 300.0

DRY_RUN = "dry_run"
# tenacity 9.2 renamed `initial` to `multiplier` (same meaning) and warns on the old name.
_RETRY_WAIT = (wait_exponential_jitter(multiplier=0.5, max=5, jitter=0.5)
               if "multiplier" in inspect.signature(wait_exponential_jitter).parameters
               else wait_exponential_jitter(initial=0.5, max=5, jitter=0.5))


@dataclass(slots=True)
class _Progress:
    """How far a run got: the finished steps' records and the step in flight."""

    records: list[dict[str, Any]] = field(default_factory=list)
    current: dict[str, Any] | None = None


class Executor:
    """Claims and runs queued runs: a background loop, or one pass at a time (`run_once`)."""

    # Between attempts of an idempotent step (tests make it shorter).
    retry_wait: Any = _RETRY_WAIT

    def __init__(self, *, store: Store, clock: Clock, catalog: CatalogHolder,
                 config: RunbooksConfig, actions: Actions,
                 escalations_escalate: Callable[..., Awaitable[Any]] | None = None,
                 followup: FollowUp | None = None) -> None:
        self._store = store
        self._clock = clock
        self._owner = uuid.uuid4().hex
        self._last_beat: datetime | None = None
        self._catalog = catalog
        self._config = config
        self._actions = actions
        self._escalate = escalations_escalate
        self._followup = followup
        self._tasks: set[asyncio.Task[None]] = set()
        self._woken = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        """Start the loop; call `interrupt_running` first."""
        self._stopping = False
        self._loop_task = asyncio.get_running_loop().create_task(self._loop(),
                                                                 name="runbook-executor")

    def wake(self) -> None:
        self._woken.set()

    def reconfigure(self, config: RunbooksConfig) -> None:
        """A configuration reload: concurrency, polling and output limits from now on;
        runs in flight keep going."""
        self._config = config
        self._woken.set()  # more room, maybe

    async def stop(self) -> None:
        """Claim nothing more; let runs in flight finish for a while, then interrupt them
        (they are recorded `interrupted`, never re-run)."""
        self._stopping = True
        self._woken.set()
        loop_task, self._loop_task = self._loop_task, None
        if loop_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await loop_task
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=STOP_GRACE_SECONDS)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def run_once(self) -> int:
        """Claim what may run now and run it to the end; returns how many ran."""
        tasks = await self._start_claimed()
        await asyncio.gather(*tasks, return_exceptions=True)
        return len(tasks)

    async def _loop(self) -> None:
        store_down = False  # said once per outage, not once per pass
        while not self._stopping:
            self._woken.clear()
            try:
                await self._heartbeat()
                await self._start_claimed()
            except StoreUnavailable as err:  # the database is away: the next pass tries again
                if not store_down:
                    log.warning("runbooks: store unavailable; retrying each poll",
                                reason=str(err))
                store_down = True
                self._last_beat = None  # beat (and look for dead runs) as soon as it is back
            except Exception as err:  # a bug: the loop must outlive it
                log.warning("runbook claim failed; retrying", reason=type(err).__name__)
            else:
                if store_down:
                    log.info("runbooks: store reachable again")
                store_down = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), self._config.poll_interval_seconds)

    async def _start_claimed(self) -> list[asyncio.Task[None]]:
        claimed = await self._claim()
        tasks = []
        for run in claimed:
            task = asyncio.get_running_loop().create_task(self._execute(run),
                                                          name=f"runbook-run-{run.id}")
            self._tasks.add(task)
            task.add_done_callback(self._done)
            tasks.append(task)
        return tasks

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._woken.set()  # a slot (and maybe a CI lock) is free

    # -- claiming ----------------------------------------------------------------

    async def _claim(self) -> list[RunView]:
        room = self._config.max_concurrent_runs - len(self._tasks)
        if room <= 0 or self._stopping:
            return []
        # A look on a reader first: an idle pass never takes SQLite's one write lock
        # away from the ingest writer.
        async with self._store.read() as conn:
            if not await store.any_queued(conn):
                return []
        now = self._clock.now()
        claimed: list[RunView] = []
        skipped: list[RunView] = []
        async with self._store.write() as conn:
            guards = await store.states(conn)
            for run in await store.queued(conn, limit=room + CLAIM_LOOKAHEAD):
                if len(claimed) >= room:
                    break
                why = disabled_reason(guards, run.runbook)
                if why is None and run.runbook not in self._catalog.current.runbooks:
                    why = f"runbook {run.runbook} is no longer in the catalog"
                if why is not None:
                    skipped += await store.move(conn, [run.id], allowed_from=[store.QUEUED],
                                                to=store.SKIPPED, now=now, error=why)
                    continue
                moved = await self._lock(conn, run, now)
                if moved is not None:
                    claimed.append(moved)
            for run in skipped:
                await self._timeline(conn, run, store.SKIPPED, now=now, error=run.error)
            effects = await self._after(conn, [r.incident_id for r in skipped], now)
        effects.record_metrics()
        for run in skipped:
            metrics.RUNBOOK_RUNS.labels(run.runbook, store.SKIPPED).inc()
        for run in claimed:
            log.info("runbook run started", run=run.id, runbook=run.runbook,
                     incident=_key(run), dry_run=run.dry_run)
        return claimed

    async def _lock(self, conn: AsyncConnection, run: RunView, now: datetime
                    ) -> RunView | None:
        """Set the run running, unless another run holds its CI (then None: it waits)."""
        try:
            async with conn.begin_nested():
                moved = await store.move(conn, [run.id], allowed_from=[store.QUEUED],
                                         to=store.RUNNING, now=now, started_at=now,
                                         owner=self._owner, heartbeat_at=now)
        except sa_exc.IntegrityError:
            return None
        return moved[0] if moved else None

    # -- running -------------------------------------------------------------------

    async def _execute(self, run: RunView) -> None:
        runbook = self._catalog.current.runbooks.get(run.runbook)
        progress = _Progress()
        error: str | None = None
        try:
            if runbook is None:
                error = f"runbook {run.runbook} is no longer in the catalog"
            else:
                await asyncio.wait_for(self._steps(run, runbook, progress),
                                       runbook.timeout_seconds)
        except TimeoutError:
            assert runbook is not None
            error = f"the run timed out after {runbook.timeout_seconds:g} s"
            self._cut_short(progress, error)
        except asyncio.CancelledError:
            await asyncio.shield(self._interrupt([(run, progress.records)]))
            raise
        except Exception as exc:  # a bug or the store: the run fails, the loop goes on
            log.exception("runbook run failed unexpectedly", run=run.id, runbook=run.runbook)
            error = f"internal error: {type(exc).__name__}"
            self._cut_short(progress, error)
        await self._finish_when_stored(run, runbook, progress.records, error)

    async def _finish_when_stored(self, run: RunView, runbook: Runbook | None,
                                  records: list[dict[str, Any]], error: str | None) -> None:
        """`_finish`, retried while the database is away: the steps ran, and their outcome
        must not be lost to an outage (nor the run left `running` under this process,
        whose heartbeat would keep it from ever being reported interrupted)."""
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(StoreUnavailable),
            wait=wait_exponential(multiplier=0.5, max=5),
            stop=stop_after_delay(FINISH_RETRY_SECONDS), reraise=True)
        try:
            async for attempt in retrying:
                with attempt:
                    if attempt.retry_state.attempt_number == 2:
                        log.warning("runbook run outcome not recorded: store unavailable; "
                                    "retrying", run=run.id, runbook=run.runbook)
                    # A first try whose commit landed unseen makes the retry find the run
                    # no longer running: it then stops there, nothing is recorded twice.
                    await self._finish(run, runbook, records, error)
        except StoreUnavailable as err:
            log.error("runbook run outcome lost: store unavailable; the run stays `running` "
                      "until this process restarts and reports it interrupted",
                      run=run.id, runbook=run.runbook, reason=str(err))

    def _cut_short(self, progress: _Progress, error: str) -> None:
        if progress.current is not None:
            progress.records.append(progress.current | {
                "status": store.FAILED, "error": error,
                "finished_at": timestamp(self._clock.now())})
            progress.current = None

    async def _steps(self, run: RunView, runbook: Runbook, progress: _Progress) -> None:
        context = run.context | {"params": run.params, "run": {
            "id": run.id, "runbook": run.runbook, "dry_run": run.dry_run}}
        previous: str | None = None
        for index, step in enumerate(runbook.steps):
            record = await self._step(run, runbook, index, step, context, previous, progress)
            progress.records.append(record)
            progress.current = None
            await self._save(run, progress.records)
            if record["status"] in (store.SUCCEEDED, store.FAILED):
                previous = record["status"]

    async def _step(self, run: RunView, runbook: Runbook, index: int, step: Step,
                    context: dict[str, Any], previous: str | None,
                    progress: _Progress) -> dict[str, Any]:
        now = timestamp(self._clock.now())
        record: dict[str, Any] = {
            "name": step.name, "type": step.type, "status": store.SKIPPED, "input": None,
            "output": None, "exit_code": None, "http_status": None, "started_at": now,
            "finished_at": now, "attempts": 0, "error": None}
        if not run.dry_run and not _wanted(step, index, previous):
            record["error"] = f"skipped: runs when the previous step {step.when}"
            return record
        try:
            rendered = render_step(step, context, path=f"{runbook.name}.steps.{index}")
        except TemplateFailed as exc:
            return record | {"status": store.FAILED, "error": str(exc)}
        record["input"] = steps.recorded_input(rendered)
        if run.dry_run:
            return record | {"status": DRY_RUN}
        progress.current = record
        outcome, attempts = await self._attempts(run, step, rendered, context)
        return record | {
            "status": store.SUCCEEDED if outcome.ok else store.FAILED,
            "output": outcome.output, "exit_code": outcome.exit_code,
            "http_status": outcome.http_status, "attempts": attempts, "error": outcome.error,
            "finished_at": timestamp(self._clock.now())}

    async def _attempts(self, run: RunView, step: Step, rendered: dict[str, Any],
                        context: dict[str, Any]) -> tuple[steps.Outcome, int]:
        attempts = 0

        async def once() -> steps.Outcome:
            nonlocal attempts
            attempts += 1
            try:
                return await asyncio.wait_for(self._do(run, step, rendered, context),
                                              step.timeout_seconds)
            except TimeoutError:
                what = ("the alerts did not resolve" if step.type == "wait_for_resolution"
                        else "timed out")
                return steps.Outcome(ok=False, error=f"{what} within {step.timeout_seconds:g} s")

        if not (step.idempotent and step.retries > 0):
            return await once(), attempts
        retrying = AsyncRetrying(
            stop=stop_after_attempt(step.retries + 1), wait=self.retry_wait,
            retry=retry_if_result(lambda o: not o.ok),
            retry_error_callback=lambda state: state.outcome.result() if state.outcome
            else None)
        outcome: steps.Outcome = await retrying(once)
        return outcome, attempts

    async def _do(self, run: RunView, step: Step, rendered: dict[str, Any],
                  context: dict[str, Any]) -> steps.Outcome:
        limit = self._config.max_output_bytes
        if step.type == "http":
            async with aiohttp.ClientSession() as session:
                return await steps.http(rendered, session=session, max_output=limit)
        if step.type == "command":
            return await steps.command(rendered, max_output=limit)
        if step.type == "python":
            return await steps.python(rendered, context=context, max_output=limit)
        if step.type == "wait_for_resolution":
            return await steps.wait_for_resolution(
                self._store, incident_id=run.incident_id,
                alert_id=run.alert_id if run.trigger == "alert" else None)
        return await self._notify(run, rendered["message"])

    async def _notify(self, run: RunView, message: str) -> steps.Outcome:
        if run.incident_id is None:
            return steps.Outcome(ok=False, error="the run has no incident to notify about")
        now = self._clock.now()
        async with self._store.write() as conn:
            await incident_store.add_timeline(conn, [(run.incident_id, TimelineEntry(
                at=now, actor=_actor(run), kind=TimelineKind.RUNBOOK_NOTIFY,
                detail={"run": run.id, "runbook": run.runbook, "message": message}))])
            effects = await self._after(conn, [run.incident_id], now)
        effects.record_metrics()
        return steps.Outcome(ok=True, output=message)

    async def _save(self, run: RunView, records: list[dict[str, Any]]) -> None:
        try:
            async with self._store.write() as conn:
                await store.set_steps(conn, run.id, records, self._clock.now())
        except StoreUnavailable as err:
            # Progress only: the run goes on, and its end records every step anyway.
            log.warning("runbook step not saved: store unavailable", run=run.id,
                        runbook=run.runbook, reason=str(err))

    # -- closing the loop ----------------------------------------------------------

    async def _finish(self, run: RunView, runbook: Runbook | None,
                      records: list[dict[str, Any]], error: str | None) -> None:
        failed = next((r for r in records if r["status"] == store.FAILED), None)
        if error is None and failed is not None:
            error = f"step {failed['name']} failed: {failed['error']}"
        status = store.FAILED if error is not None else store.SUCCEEDED
        now = self._clock.now()
        opened = False
        async with self._store.write() as conn:
            moved = await store.move(conn, [run.id], allowed_from=[store.RUNNING], to=status,
                                     now=now, steps=records, error=error)
            if not moved:
                return  # interrupted meanwhile (a stop): that is its outcome
            if runbook is not None and not run.dry_run:
                opened = await self._breaker(conn, runbook, failed=status == store.FAILED,
                                             error=error, now=now)
            detail_extra = {"failed_step": failed["name"] if failed else None,
                            "breaker_opened": opened}
            await self._timeline(conn, moved[0], status, now=now, error=error, **detail_extra)
            effects = await self._after(conn, [run.incident_id] if run.incident_id else [],
                                        now)
        effects.record_metrics()
        outcome = DRY_RUN if run.dry_run and status == store.SUCCEEDED else status
        metrics.RUNBOOK_RUNS.labels(run.runbook, outcome).inc()
        if run.started_at is not None:
            metrics.RUNBOOK_DURATION.labels(run.runbook).observe(
                max((now - run.started_at).total_seconds(), 0.0))
        log.info("runbook run finished", run=run.id, runbook=run.runbook, incident=_key(run),
                 status=status, dry_run=run.dry_run, error=error)
        if run.dry_run or run.incident_id is None:
            return
        if status == store.SUCCEEDED and _saw_resolution(records):
            await self._resolve(run)
        elif status == store.FAILED:
            note = f"runbook {run.runbook} failed: {error}"
            if opened:
                note += "; its circuit breaker opened and it is disabled"
            await self._escalate_incident(run, note)

    async def _breaker(self, conn: AsyncConnection, runbook: Runbook, *, failed: bool,
                       error: str | None, now: datetime) -> bool:
        """Count the outcome; True when this failure opened the breaker."""
        before = (await store.states(conn)).get(runbook.name)
        threshold = runbook.circuit_breaker_failures
        state = await store.record_outcome(
            conn, runbook.name, failed=failed, threshold=threshold, now=now,
            reason=f"circuit breaker open: {threshold} failures in a row; last: {error}")
        opened = state.disabled and not (before is not None and before.disabled)
        if opened:
            log.warning("runbook disabled by its circuit breaker", runbook=runbook.name,
                        failures=state.consecutive_failures)
        return opened

    async def _resolve(self, run: RunView) -> None:
        assert run.incident_id is not None
        try:
            await self._actions.move(run.incident_id, "resolve", actor=_actor(run),
                                     note=f"resolved by automation: {run.runbook}")
        except UserError:
            pass  # resolved (or closed) already, by its alerts or a person
        else:
            log.info("incident resolved by automation", run=run.id, runbook=run.runbook,
                     incident=_key(run))

    async def _escalate_incident(self, run: RunView, note: str) -> None:
        if self._escalate is None:
            return
        assert run.incident_id is not None
        try:
            await self._escalate(run.incident_id, actor=_actor(run), note=note, level=None)
        except UserError as exc:  # no policy, last level, no longer open
            log.info("runbook failure not escalated", run=run.id, incident=_key(run),
                     reason=exc.message)

    # -- interruption ----------------------------------------------------------------

    async def interrupt_running(self) -> int:
        """Runs whose process fell silent → `interrupted`; never re-run.

        Each running process writes a heartbeat on its runs every HEARTBEAT_SECONDS;
        a run without one for SILENT_SECONDS belongs to a process that died (kill -9,
        a lost replica). Called at start and then from the loop, so on any replica.
        """
        now = self._clock.now()
        async with self._store.read() as conn:
            found = await store.stale_running(
                conn, silent_since=now - timedelta(seconds=SILENT_SECONDS), owner=self._owner)
        return await self._interrupt([(r, r.steps) for r in found])

    async def _heartbeat(self) -> None:
        """Say this process still runs its runs; find runs whose process died."""
        now = self._clock.now()
        if self._last_beat is not None and now - self._last_beat < timedelta(
                seconds=HEARTBEAT_SECONDS):
            return
        self._last_beat = now
        if self._tasks:
            async with self._store.write() as conn:
                await store.heartbeat(conn, owner=self._owner, now=now)
        await self.interrupt_running()

    async def _interrupt(self, runs: list[tuple[RunView, list[dict[str, Any]]]]) -> int:
        if not runs:
            return 0
        now = self._clock.now()
        moved_all: list[RunView] = []
        async with self._store.write() as conn:
            for run, records in runs:
                error = self._interrupted_error(run, records)
                moved = await store.move(conn, [run.id], allowed_from=[store.RUNNING],
                                         to=store.INTERRUPTED, now=now, error=error,
                                         steps=records)
                for m in moved:
                    await self._timeline(conn, m, store.INTERRUPTED, now=now, error=error)
                moved_all += moved
            effects = await self._after(conn, [m.incident_id for m in moved_all], now)
        effects.record_metrics()
        for m in moved_all:
            metrics.RUNBOOK_RUNS.labels(m.runbook, store.INTERRUPTED).inc()
            log.warning("runbook run interrupted; it is not run again", run=m.id,
                        runbook=m.runbook, incident=_key(m), reason=m.error)
        return len(moved_all)

    def _interrupted_error(self, run: RunView, records: list[dict[str, Any]]) -> str:
        number = len(records) + 1
        runbook = self._catalog.current.runbooks.get(run.runbook)
        if runbook is not None and number > len(runbook.steps):
            return "the daemon stopped after the last step; not re-run"
        name = runbook.steps[number - 1].name if runbook is not None else "?"
        return f"the daemon stopped during step {number} ({name}); not re-run"

    # -- shared ------------------------------------------------------------------------

    async def _timeline(self, conn: AsyncConnection, run: RunView, status: str, *,
                        now: datetime, error: str | None, **extra: Any) -> None:
        if run.incident_id is None:
            return
        kind = (TimelineKind.RUNBOOK_SUCCEEDED if status == store.SUCCEEDED
                else TimelineKind.RUNBOOK_FAILED)
        detail = {"run": run.id, "runbook": run.runbook, "status": status,
                  "dry_run": run.dry_run, "error": error, **extra}
        await incident_store.add_timeline(conn, [(run.incident_id, TimelineEntry(
            at=now, actor=_actor(run), kind=kind, detail=detail))])

    async def _after(self, conn: AsyncConnection, incident_ids: list[int | None],
                     now: datetime) -> Effects:
        ids = [i for i in incident_ids if i is not None]
        if self._followup is None or not ids:
            return Effects()
        return await self._followup.after(conn, ids, now)


def _wanted(step: Step, index: int, previous: str | None) -> bool:
    """Whether `when` lets the step run after the previous outcome; the first always runs."""
    return index == 0 or step.when == "always" or previous is None or step.when == previous


def _saw_resolution(records: list[dict[str, Any]]) -> bool:
    return any(r["type"] == "wait_for_resolution" and r["status"] == store.SUCCEEDED
               for r in records)


def _actor(run: RunView) -> str:
    return f"runbook:{run.runbook}"


def _key(run: RunView) -> str | None:
    return incident_key(run.incident_id) if run.incident_id is not None else None
