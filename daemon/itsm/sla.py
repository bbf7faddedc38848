"""SLA clocks: response and resolution targets per priority, counted in business time.

Every incident whose priority has a policy gets two clocks. `response` runs until
the incident is acknowledged, `resolution` until it is resolved; both pause while
it is on hold. A clock is stored as the business time elapsed up to `since` plus,
while it runs, the calendar's time from `since` to now, so nothing needs to tick:
`sync` reconciles the clocks with the incident after every change, and `sweep`
fires the warnings and breaches whose instant (`next_check_at`) has come. Because
that instant is in the store, a breach that fell due while the daemon was down
fires at the first sweep after start, once.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncConnection

from daemon import metrics
from daemon.clock import timestamp
from daemon.config import SlaConfig
from daemon.itsm.calendar import Calendar
from daemon.models import SYSTEM_ACTOR, IncidentStatus, TimelineEntry, TimelineKind
from daemon.store import incidents as incident_store
from daemon.store import sla as store
from daemon.store.sla import ClockRow, IncidentFacts

RESPONSE = "response"
RESOLUTION = "resolution"
CLOCKS = (RESPONSE, RESOLUTION)
ALWAYS = "24x7"
# The calendar counts in microseconds; a threshold reached within one is reached.
_EPS = 1e-6


class ClockState(enum.StrEnum):
    RUNNING = "running"
    MET = "met"
    BREACHED = "breached"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class SlaEvent:
    """A warning, breach or met target, for metrics (and later notifications)."""

    incident_id: int
    clock: str  # "response" | "resolution"
    priority: str  # "P1".."P5"
    kind: str  # "warning" | "breached" | "met"
    fraction: float | None = None  # warnings only


@dataclass(frozen=True, slots=True)
class _Policy:
    name: str
    calendar_name: str
    calendar: Calendar
    targets: Mapping[str, int]


class _Want(enum.Enum):
    """What the incident's state asks of a clock."""

    RUN = "run"
    PAUSE = "pause"
    STOP = "stop"
    CANCEL = "cancel"


@dataclass(slots=True)
class _Out:
    """Events and timeline entries gathered while reconciling, written in one batch."""

    events: list[SlaEvent] = field(default_factory=list)
    entries: list[tuple[int, TimelineEntry]] = field(default_factory=list)


_UTC_ALWAYS = Calendar(zone=ZoneInfo("UTC"))


def _wanted(clock: str, facts: IncidentFacts) -> _Want:
    status = facts.status
    if status == IncidentStatus.CLOSED and facts.merged_into is not None:
        return _Want.CANCEL  # its work goes on in the incident it was merged into
    if clock == RESPONSE:
        if status == IncidentStatus.TRIGGERED:
            return _Want.RUN
        if status == IncidentStatus.ON_HOLD and facts.acknowledged_at is None:
            return _Want.PAUSE
        return _Want.STOP
    if status in (IncidentStatus.TRIGGERED, IncidentStatus.ACKNOWLEDGED):
        return _Want.RUN
    return _Want.PAUSE if status == IncidentStatus.ON_HOLD else _Want.STOP


class SlaClocks:
    """Keeps the SLA clocks of incidents in the store, in the caller's transaction."""

    def __init__(self, config: SlaConfig) -> None:
        self._warn_at = tuple(config.warn_at)
        calendars = {ALWAYS: _UTC_ALWAYS} | {
            name: Calendar.from_config(cfg) for name, cfg in config.calendars.items()}
        self._by_name = {
            p.name: _Policy(p.name, p.calendar, calendars[p.calendar],
                            {RESPONSE: p.response_seconds, RESOLUTION: p.resolution_seconds})
            for p in config.policies
        }
        self._by_priority: dict[str, _Policy] = {prio: self._by_name[p.name]
                             for p in config.policies for prio in p.priorities}

    # -- public API ----------------------------------------------------------

    async def sync(self, conn: AsyncConnection, incident_ids: Iterable[int], now: datetime,
                   *, rows: Mapping[int, Any] | None = None) -> list[SlaEvent]:
        """Bring the clocks of these incidents in line with their state (idempotent).

        `rows`: these incidents' rows, if the caller read them in this transaction."""
        facts = (store.facts_of(rows.values()) if rows is not None
                 else await store.incident_facts(conn, incident_ids))
        existing: dict[int, dict[str, ClockRow]] = {}
        for row in await store.clocks_of(conn, facts, lock=True):
            existing.setdefault(row.incident_id, {})[row.clock] = row
        out, new, changed = _Out(), list[ClockRow](), list[ClockRow]()
        for incident_id, fact in sorted(facts.items()):
            have = existing.get(incident_id, {})
            for clock in CLOCKS:
                stored = have.get(clock)
                if stored is None:
                    started = self._start(fact, clock)
                    if started is not None:
                        new.append(self._reconcile(started, fact, now, out))
                    continue
                updated = self._reconcile(stored, fact, now, out)
                if updated != stored:
                    changed.append(updated)
        await store.insert(conn, new)
        await store.update(conn, changed)
        await incident_store.add_timeline(conn, out.entries)
        return out.events

    async def sweep(self, conn: AsyncConnection, now: datetime, *, limit: int = 500
                    ) -> list[SlaEvent]:
        """Fire the warnings and breaches that have fallen due (at most `limit` clocks)."""
        out, changed = _Out(), []
        for row in await store.due(conn, now, limit=limit):
            updated = self._check(row, now, out)
            if updated != row:
                changed.append(updated)
        await store.update(conn, changed)
        await incident_store.add_timeline(conn, out.entries)
        return out.events

    async def views(self, conn: AsyncConnection, incident_ids: Sequence[int], now: datetime
                    ) -> dict[int, list[dict[str, Any]]]:
        """The clocks of each incident as the incident JSON shows them, response first."""
        result: dict[int, list[dict[str, Any]]] = {i: [] for i in incident_ids}
        rows = sorted(await store.clocks_of(conn, incident_ids),
                      key=lambda r: (r.incident_id, CLOCKS.index(r.clock)))
        for row in rows:
            result.setdefault(row.incident_id, []).append(self._view(row, now))
        return result

    # -- reconciling ---------------------------------------------------------

    def _start(self, fact: IncidentFacts, clock: str) -> ClockRow | None:
        policy = self._by_priority.get(fact.priority) if fact.priority else None
        if policy is None or fact.merged_into is not None:
            return None
        return ClockRow(
            incident_id=fact.id, clock=clock, policy=policy.name, priority=fact.priority or "",
            target_seconds=policy.targets[clock], elapsed_seconds=0.0, since=fact.created_at,
            started_at=fact.created_at, state=ClockState.RUNNING, paused=False, warned=0,
            due_at=None, breached_at=None, stopped_at=None, next_check_at=None,
        )

    def _reconcile(self, row: ClockRow, fact: IncidentFacts, now: datetime, out: _Out
                   ) -> ClockRow:
        want = _wanted(row.clock, fact)
        policy = self._by_priority.get(fact.priority) if fact.priority else None
        # A breach crossed since the last look is recorded under the policy that
        # applied while it ran, before anything else changes.
        row = self._catch_breach(row, now, out)
        retarget = policy is None or (policy.name, policy.targets[row.clock], fact.priority) != (
            row.policy, row.target_seconds, row.priority)
        if row.since is not None and (want is not _Want.RUN or retarget):
            row = self._fold(row, now)
        if retarget:
            if policy is None:
                # No target for this priority: nothing to measure until it gets one.
                want = _Want.CANCEL
                row = dataclasses.replace(row, priority=fact.priority or row.priority)
            else:
                row = self._retarget(row, policy, fact.priority or "")
        if want is _Want.CANCEL:
            row = dataclasses.replace(row, state=ClockState.CANCELLED, paused=False,
                                      stopped_at=row.stopped_at or now)
        elif want is _Want.STOP:
            row = self._stop(row, now, out)
        else:
            row = _restart(row)
            row = dataclasses.replace(row, paused=want is _Want.PAUSE,
                                      since=(row.since or now) if want is _Want.RUN else None)
        return self._schedule(row)

    def _retarget(self, row: ClockRow, policy: _Policy, priority: str) -> ClockRow:
        """Another priority, another policy: the business time spent so far is kept.

        Warnings already sent stay sent as far as they are still passed under the new
        target; those passed but not sent go to the next sweep, which sends one.
        """
        target = policy.targets[row.clock]
        return dataclasses.replace(
            row, policy=policy.name, priority=priority, target_seconds=target,
            warned=min(row.warned, self._passed(row.elapsed_seconds, target)))

    def _stop(self, row: ClockRow, now: datetime, out: _Out) -> ClockRow:
        if row.stopped_at is not None:
            return row  # already stopped: keep when and how
        if row.state == ClockState.RUNNING:
            if row.elapsed_seconds + _EPS >= row.target_seconds:
                # Only reachable when a retarget put the clock past its new target:
                # the target was exceeded from that moment, which is now.
                row = self._breach(row, now, now, out)
            else:
                row = dataclasses.replace(row, state=ClockState.MET)
                out.events.append(SlaEvent(row.incident_id, row.clock, row.priority, "met"))
        return dataclasses.replace(row, paused=False, stopped_at=now)

    # -- timers --------------------------------------------------------------

    def _check(self, row: ClockRow, now: datetime, out: _Out) -> ClockRow:
        """The sweep's look at one due clock: a breach, else the latest passed warning."""
        if row.since is None or row.state != ClockState.RUNNING:
            return dataclasses.replace(row, next_check_at=None)  # nothing can fall due
        row = self._catch_breach(row, now, out)
        if row.state != ClockState.RUNNING:
            return self._schedule(row)
        elapsed = self._elapsed(row, now)
        passed = self._passed(elapsed, row.target_seconds)
        if passed > row.warned:
            # One warning for the highest fraction passed: a sweep that comes late
            # (after downtime) does not replay the ones in between.
            fraction = self._warn_at[passed - 1]
            out.events.append(SlaEvent(row.incident_id, row.clock, row.priority, "warning",
                                       fraction))
            out.entries.append((row.incident_id, TimelineEntry(
                at=now, actor=SYSTEM_ACTOR, kind=TimelineKind.SLA_WARNING,
                detail=self._detail(row, elapsed, due=self._due(row)) | {"fraction": fraction},
            )))
            row = dataclasses.replace(row, warned=passed)
        return self._schedule(row)

    def _catch_breach(self, row: ClockRow, now: datetime, out: _Out) -> ClockRow:
        """Breach a running clock whose target has passed, at the instant it did."""
        if row.state != ClockState.RUNNING or row.since is None:
            return row
        if self._elapsed(row, now) + _EPS < row.target_seconds:
            return row
        return self._breach(row, self._due(row), now, out)

    def _breach(self, row: ClockRow, at: datetime, now: datetime, out: _Out) -> ClockRow:
        out.events.append(SlaEvent(row.incident_id, row.clock, row.priority, "breached"))
        out.entries.append((row.incident_id, TimelineEntry(
            at=now, actor=SYSTEM_ACTOR, kind=TimelineKind.SLA_BREACHED,
            detail=self._detail(row, self._elapsed(row, now), due=at))))
        return dataclasses.replace(row, state=ClockState.BREACHED, breached_at=at,
                                   next_check_at=None)

    def _schedule(self, row: ClockRow) -> ClockRow:
        """Recompute `due_at` and `next_check_at` (both only while the clock runs)."""
        if row.since is None:
            return dataclasses.replace(row, due_at=None, next_check_at=None)
        if row.state != ClockState.RUNNING:
            # A breached clock that runs on keeps the instant it was due.
            return dataclasses.replace(row, due_at=row.breached_at or self._due(row),
                                       next_check_at=None)
        pending = self._warn_at[row.warned:]
        threshold = pending[0] * row.target_seconds if pending else row.target_seconds
        check = self._at_elapsed(row, threshold)
        return dataclasses.replace(row, due_at=self._due(row), next_check_at=check)

    # -- arithmetic ----------------------------------------------------------

    def _calendar(self, row: ClockRow) -> Calendar:
        policy = self._by_name.get(row.policy)
        # A policy removed from the configuration keeps counting in plain time until
        # the next sync moves the clock to its priority's current policy.
        return policy.calendar if policy else _UTC_ALWAYS

    def _elapsed(self, row: ClockRow, now: datetime) -> float:
        if row.since is None:
            return row.elapsed_seconds
        return row.elapsed_seconds + self._calendar(row).business_seconds(row.since, now)

    def _at_elapsed(self, row: ClockRow, seconds: float) -> datetime:
        """When a running clock shows `seconds` of business time (`since` if already)."""
        assert row.since is not None
        left = max(0.0, seconds - row.elapsed_seconds)
        return self._calendar(row).add_business_seconds(row.since, left)

    def _due(self, row: ClockRow) -> datetime:
        return self._at_elapsed(row, row.target_seconds)

    def _fold(self, row: ClockRow, now: datetime) -> ClockRow:
        return dataclasses.replace(row, elapsed_seconds=self._elapsed(row, now), since=None)

    def _passed(self, elapsed: float, target: int) -> int:
        """How many warning fractions `elapsed` has reached (they are sorted)."""
        return sum(1 for f in self._warn_at if elapsed + _EPS >= f * target)

    def _detail(self, row: ClockRow, elapsed: float, *, due: datetime) -> dict[str, Any]:
        return {"clock": row.clock, "policy": row.policy, "priority": row.priority,
                "target_seconds": row.target_seconds, "due_at": timestamp(due),
                "elapsed_seconds": round(elapsed, 3)}

    def _view(self, row: ClockRow, now: datetime) -> dict[str, Any]:
        elapsed = self._elapsed(row, now)
        policy = self._by_name.get(row.policy)
        return {
            "clock": row.clock,
            "policy": row.policy,
            "priority": row.priority,
            "calendar": policy.calendar_name if policy else None,
            "target_seconds": row.target_seconds,
            "started_at": timestamp(row.started_at),
            "due_at": timestamp(row.due_at),
            "elapsed_seconds": round(elapsed, 3),
            "remaining_seconds": round(max(0.0, row.target_seconds - elapsed), 3),
            "paused": row.paused,
            "state": row.state,
            "breached_at": timestamp(row.breached_at),
            "stopped_at": timestamp(row.stopped_at),
        }


def _restart(row: ClockRow) -> ClockRow:
    """A stopped clock that must count again (reopened, or acknowledgement cleared)
    goes on from its elapsed time; a breach stays: it is history."""
    if row.stopped_at is None and row.state != ClockState.CANCELLED:
        return row
    state = ClockState.BREACHED if row.breached_at else ClockState.RUNNING
    return dataclasses.replace(row, state=state, stopped_at=None)


def record_metrics(events: Iterable[SlaEvent]) -> None:
    """After commit: warning → metrics.SLA_WARNINGS, breached → metrics.SLA_BREACHES,
    met → metrics.SLA_MET (labels clock, priority)."""
    counters = {"warning": metrics.SLA_WARNINGS, "breached": metrics.SLA_BREACHES,
                "met": metrics.SLA_MET}
    for event in events:
        counters[event.kind].labels(event.clock, event.priority).inc()
