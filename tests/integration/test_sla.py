"""SLA clocks through the real pipeline and store (SQLite and PostgreSQL), on a FakeClock.

Each test moves incidents as the daemon does and calls `SlaClocks.sync` after every
step, as the lead's wiring does; the timer job is `sweep`. Expected instants are
written out in full so a wrong calendar walk cannot hide.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa

from daemon.app import build_pipeline
from daemon.config import Config, PriorityConfig, SlaConfig, SlaPolicy
from daemon.correlation.topology import TopologyHolder
from daemon.ingest import Pipeline
from daemon.itsm import incidents
from daemon.itsm.calendar import CalendarConfig
from daemon.itsm.priority import PriorityMatrix
from daemon.itsm.sla import SlaClocks, SlaEvent, record_metrics
from daemon.metrics import SLA_BREACHES, SLA_MET, SLA_WARNINGS
from daemon.models import IncidentStatus, Priority, TimelineKind
from daemon.store import Store
from daemon.store import incidents as incident_store
from tests.conftest import FakeClock
from tests.integration.test_correlation_scenarios import alert

ALL = ["P1", "P2", "P3", "P4", "P5"]
MIN, HOUR = 60, 3600
T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)  # the FakeClock's start: a Thursday


def utc(year: int, month: int, day: int, hour: int, minute: int = 0, second: int = 0
        ) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def ts(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def policy(name: str, priorities: list[str], response: int, resolution: int,
           calendar: str = "24x7") -> SlaPolicy:
    return SlaPolicy.model_validate({"name": name, "priorities": priorities,
                                     "response_seconds": response,
                                     "resolution_seconds": resolution, "calendar": calendar})


STANDARD = SlaConfig(policies=[policy("std", ALL, 30 * MIN, 4 * HOUR)])


class Desk:
    """One store, one clock, the ingest pipeline and the SLA clocks, as the daemon has them."""

    def __init__(self, store: Store, clock: FakeClock, sla: SlaConfig) -> None:
        self.store, self.clock, self.sla = store, clock, sla
        self.clocks = SlaClocks(sla)
        # The pipeline gets the same SLA settings, so wiring that already syncs
        # clocks on open agrees with ours (sync is idempotent).
        self.pipeline: Pipeline = build_pipeline(Config(sla=sla), TopologyHolder(), clock)

    async def open(self, fp: str = "disk-full") -> int:
        async with self.store.write() as conn:
            result = await self.pipeline.process(conn, [alert(fp, None)])
            [opened] = [t.incident.id for t in result.transitions if t.previous is None]
            assert await self.clocks.sync(conn, [opened], self.clock.now()) == []
        return opened

    async def move(self, incident_id: int, action: str) -> list[SlaEvent]:
        async with self.store.write() as conn:
            await incidents.move(conn, incident_id, action, actor="ann", note=None,
                                 now=self.clock.now())
            return await self.clocks.sync(conn, [incident_id], self.clock.now())

    async def prioritize(self, incident_id: int, priority: Priority) -> list[SlaEvent]:
        async with self.store.write() as conn:
            await incidents.set_priority(conn, incident_id, priority=priority, impact=None,
                                         urgency=None, reason="test", actor="ann",
                                         now=self.clock.now(),
                                         matrix=PriorityMatrix(PriorityConfig()))
            return await self.clocks.sync(conn, [incident_id], self.clock.now())

    async def sync(self, *ids: int) -> list[SlaEvent]:
        async with self.store.write() as conn:
            return await self.clocks.sync(conn, ids, self.clock.now())

    async def sweep(self) -> list[SlaEvent]:
        async with self.store.write() as conn:
            return await self.clocks.sweep(conn, self.clock.now())

    async def sweep_at(self, at: datetime) -> list[SlaEvent]:
        assert at >= self.clock.current, "time only moves forward"
        self.clock.current = at
        return await self.sweep()

    async def views(self, incident_id: int) -> dict[str, dict[str, Any]]:
        async with self.store.read() as conn:
            found = await self.clocks.views(conn, [incident_id], self.clock.now())
        assert [v["clock"] for v in found[incident_id]] in ([], ["response", "resolution"])
        return {v["clock"]: v for v in found[incident_id]}

    async def sla_timeline(self, incident_id: int) -> list[tuple[str, dict[str, Any]]]:
        async with self.store.read() as conn:
            inc = await incident_store.get_incident(conn, incident_id)
        assert inc is not None
        kinds = (TimelineKind.SLA_WARNING, TimelineKind.SLA_BREACHED)
        return [(e.kind.value, e.detail) for e in inc.timeline if e.kind in kinds]


def ev(incident_id: int, clock: str, kind: str, fraction: float | None = None,
       priority: str = "P3") -> SlaEvent:
    return SlaEvent(incident_id, clock, priority, kind, fraction)


async def priority_of(store: Store, incident_id: int) -> str:
    async with store.read() as conn:
        inc = await incident_store.get_incident(conn, incident_id)
    assert inc is not None and inc.priority is not None
    return inc.priority.value


# -- 1. business hours across a weekend and a holiday ----------------------------

BERLIN = SlaConfig(
    calendars={"berlin-office": CalendarConfig(
        timezone="Europe/Berlin", always=False, weekdays=[0, 1, 2, 3, 4],
        start=time(9), end=time(17), holidays=[date(2026, 5, 25)])},  # Whit Monday
    policies=[policy("office", ALL, 4 * HOUR, 8 * HOUR, calendar="berlin-office")],
)


async def test_business_hours_skip_the_weekend_and_a_holiday(store: Store) -> None:
    # Friday 22 May 2026, 16:00 in Berlin (CEST, UTC+2): one business hour left that day;
    # Saturday, Sunday and Whit Monday are closed; Tuesday opens at 09:00 (07:00 UTC).
    clock = FakeClock(utc(2026, 5, 22, 14, 0))
    desk = Desk(store, clock, BERLIN)
    inc = await desk.open()
    p = await priority_of(store, inc)
    views = await desk.views(inc)
    # response 4 h = Fri 1 h + Tue 09-12 local; resolution 8 h = Fri 1 h + Tue 09-16 local
    assert views["response"]["due_at"] == ts(utc(2026, 5, 26, 10, 0))
    assert views["resolution"]["due_at"] == ts(utc(2026, 5, 26, 14, 0))
    assert views["resolution"]["calendar"] == "berlin-office"
    assert views["resolution"]["started_at"] == ts(utc(2026, 5, 22, 14, 0))

    assert await desk.sweep_at(utc(2026, 5, 22, 14, 59, 59)) == []
    assert await desk.sweep_at(utc(2026, 5, 25, 10, 0)) == []  # Monday, a holiday
    views = await desk.views(inc)
    assert views["response"]["elapsed_seconds"] == 3600.0  # Friday's hour, nothing since
    assert views["response"]["remaining_seconds"] == 3 * 3600.0
    assert not views["response"]["paused"]

    # Response: 75 % (3 h) at Tue 11:00 local, breach at 12:00 local.
    assert await desk.sweep_at(utc(2026, 5, 26, 8, 59, 59)) == []
    assert await desk.sweep_at(utc(2026, 5, 26, 9, 0)) == [
        ev(inc, "response", "warning", 0.75, p)]
    assert await desk.sweep_at(utc(2026, 5, 26, 9, 59, 59)) == []
    assert await desk.sweep_at(utc(2026, 5, 26, 10, 0)) == [
        ev(inc, "response", "breached", None, p)]
    # Resolution: 75 % (6 h) at Tue 14:00 local, breach at 16:00 local.
    assert await desk.sweep_at(utc(2026, 5, 26, 11, 59, 59)) == []
    assert await desk.sweep_at(utc(2026, 5, 26, 12, 0)) == [
        ev(inc, "resolution", "warning", 0.75, p)]
    assert await desk.sweep_at(utc(2026, 5, 26, 13, 59, 59)) == []
    assert await desk.sweep_at(utc(2026, 5, 26, 14, 0)) == [
        ev(inc, "resolution", "breached", None, p)]
    assert await desk.sweep_at(utc(2026, 5, 27, 14, 0)) == []

    views = await desk.views(inc)
    assert views["response"]["breached_at"] == ts(utc(2026, 5, 26, 10, 0))
    assert views["resolution"]["breached_at"] == ts(utc(2026, 5, 26, 14, 0))
    assert views["resolution"]["state"] == "breached"
    # Wednesday 16:00 local: Fri 1 h + Tue 8 h + Wed 09-16 7 h
    assert views["resolution"]["elapsed_seconds"] == 16 * 3600.0
    assert views["resolution"]["remaining_seconds"] == 0.0
    timeline = await desk.sla_timeline(inc)
    assert [(k, d["clock"], d.get("fraction")) for k, d in timeline] == [
        ("sla_warning", "response", 0.75), ("sla_breached", "response", None),
        ("sla_warning", "resolution", 0.75), ("sla_breached", "resolution", None)]
    assert timeline[3][1] == {"clock": "resolution", "policy": "office", "priority": p,
                              "target_seconds": 8 * 3600, "due_at": ts(utc(2026, 5, 26, 14, 0)),
                              "elapsed_seconds": 8 * 3600.0}


# -- 2. pause and resume; the response clock is met --------------------------------

async def test_hold_pauses_and_shifts_due_and_acknowledge_meets_response(
        store: Store, clock: FakeClock) -> None:
    desk = Desk(store, clock, STANDARD)
    inc = await desk.open()
    p = await priority_of(store, inc)
    clock.advance(10 * MIN)
    assert await desk.move(inc, "hold") == []
    views = await desk.views(inc)
    for name in ("response", "resolution"):
        assert (views[name]["paused"], views[name]["state"], views[name]["due_at"]) == (
            True, "running", None)
        assert views[name]["elapsed_seconds"] == 600.0

    clock.advance(3 * HOUR)  # on hold for N = 3 h: nothing counts, nothing fires
    assert await desk.sweep() == []
    assert (await desk.views(inc))["response"]["elapsed_seconds"] == 600.0
    assert await desk.move(inc, "resume") == []
    views = await desk.views(inc)
    assert views["response"]["paused"] is False
    assert views["response"]["due_at"] == ts(T0 + timedelta(minutes=30, hours=3))
    assert views["resolution"]["due_at"] == ts(T0 + timedelta(hours=4 + 3))
    assert await desk.sync(inc) == []  # idempotent: nothing moved, nothing fires

    clock.advance(5 * MIN)
    assert await desk.move(inc, "acknowledge") == [ev(inc, "response", "met", None, p)]
    views = await desk.views(inc)
    assert views["response"] | {"calendar": None} == {
        "clock": "response", "policy": "std", "priority": p, "calendar": None,
        "target_seconds": 1800, "started_at": ts(T0), "due_at": None,
        "elapsed_seconds": 900.0, "remaining_seconds": 900.0, "paused": False,
        "state": "met", "breached_at": None, "stopped_at": ts(clock.now())}
    assert views["response"]["calendar"] == "24x7"
    assert views["resolution"]["state"] == "running"  # acknowledged: resolution goes on
    assert views["resolution"]["due_at"] == ts(T0 + timedelta(hours=7))
    assert await desk.sync(inc) == []  # a met clock is met once
    # Holding an acknowledged incident pauses only the resolution clock.
    assert await desk.move(inc, "hold") == []
    views = await desk.views(inc)
    assert (views["response"]["state"], views["response"]["paused"]) == ("met", False)
    assert views["resolution"]["paused"] is True
    assert await desk.sla_timeline(inc) == []


# -- 3. a breach while the daemon was down --------------------------------------------

async def test_breach_during_downtime_fires_once_at_the_first_sweep(
        store: Store, clock: FakeClock) -> None:
    desk = Desk(store, clock, STANDARD)
    inc = await desk.open()
    p = await priority_of(store, inc)
    clock.advance(5 * MIN)
    assert await desk.sweep() == []

    # Down for two days; the new process knows only what the store holds.
    clock.advance(2 * 24 * HOUR)
    restarted = SlaClocks(STANDARD)
    async with store.write() as conn:
        first = await restarted.sweep(conn, clock.now())
    assert sorted(first, key=lambda e: e.clock) == [
        ev(inc, "resolution", "breached", None, p), ev(inc, "response", "breached", None, p)]
    async with store.write() as conn:
        assert await restarted.sweep(conn, clock.now()) == []
    clock.advance(HOUR)
    async with store.write() as conn:
        assert await restarted.sweep(conn, clock.now()) == []
        assert await restarted.sync(conn, [inc], clock.now()) == []

    views = await desk.views(inc)
    assert views["response"]["breached_at"] == ts(T0 + timedelta(minutes=30))
    assert views["resolution"]["breached_at"] == ts(T0 + timedelta(hours=4))
    timeline = await desk.sla_timeline(inc)
    assert sorted((k, d["clock"]) for k, d in timeline) == [
        ("sla_breached", "resolution"), ("sla_breached", "response")]  # no warnings


# -- 4. a priority change retargets --------------------------------------------------

TIERED = SlaConfig(policies=[policy("p1", ["P1"], 15 * MIN, 1 * HOUR),
                             policy("rest", ["P2", "P3", "P4"], 1 * HOUR, 4 * HOUR)])


async def test_priority_change_retargets_keeping_elapsed_time(
        store: Store, clock: FakeClock) -> None:
    desk = Desk(store, clock, TIERED)
    inc = await desk.open()
    assert await priority_of(store, inc) in {"P2", "P3", "P4"}
    clock.advance(10 * MIN)
    assert await desk.prioritize(inc, Priority.P1) == []
    views = await desk.views(inc)
    assert (views["response"]["policy"], views["response"]["priority"],
            views["response"]["target_seconds"]) == ("p1", "P1", 900)
    assert views["response"]["elapsed_seconds"] == 600.0
    assert views["response"]["due_at"] == ts(T0 + timedelta(minutes=15))
    assert views["resolution"]["due_at"] == ts(T0 + timedelta(hours=1))
    # 75 % of 15 min is 11:15 in.
    assert await desk.sweep_at(T0 + timedelta(minutes=11, seconds=14)) == []
    assert await desk.sweep_at(T0 + timedelta(minutes=11, seconds=15)) == [
        ev(inc, "response", "warning", 0.75, "P1")]
    assert await desk.sweep_at(T0 + timedelta(minutes=15)) == [
        ev(inc, "response", "breached", None, "P1")]

    # P5 has no policy: the clocks are cancelled; back to a covered priority, they count on.
    assert await desk.prioritize(inc, Priority.P5) == []
    views = await desk.views(inc)
    assert (views["resolution"]["state"], views["resolution"]["due_at"]) == ("cancelled", None)
    assert (views["response"]["state"], views["response"]["priority"]) == ("cancelled", "P5")
    assert views["response"]["breached_at"] == ts(T0 + timedelta(minutes=15))  # still history
    clock.advance(HOUR)
    assert await desk.sweep() == []
    assert await desk.prioritize(inc, Priority.P2) == []
    views = await desk.views(inc)
    assert (views["resolution"]["state"], views["resolution"]["policy"]) == ("running", "rest")
    assert views["resolution"]["elapsed_seconds"] == 15 * 60.0  # the cancelled hour not counted
    assert views["resolution"]["due_at"] == ts(clock.now() + timedelta(hours=4, minutes=-15))
    assert views["response"]["state"] == "breached"


async def test_priority_raised_past_its_new_target_breaches_at_the_change(
        store: Store, clock: FakeClock) -> None:
    desk = Desk(store, clock, TIERED)
    inc = await desk.open()
    clock.advance(20 * MIN)  # past P1's 15-minute response target, under the old one
    changed_at = clock.now()
    assert await desk.prioritize(inc, Priority.P1) == []
    clock.advance(1)
    assert await desk.sweep() == [ev(inc, "response", "breached", None, "P1")]
    views = await desk.views(inc)
    assert views["response"]["breached_at"] == ts(changed_at)
    assert await desk.sweep() == []


async def test_warnings_re_arm_when_a_retarget_makes_them_unpassed(
        store: Store, clock: FakeClock) -> None:
    desk = Desk(store, clock, TIERED)
    inc = await desk.open()
    p = await priority_of(store, inc)
    assert await desk.prioritize(inc, Priority.P1) == []
    assert await desk.sweep_at(T0 + timedelta(minutes=11, seconds=15)) == [
        ev(inc, "response", "warning", 0.75, "P1")]
    clock.advance(45)  # 12:00 in: 20 % of the hour P3 gives again
    assert await desk.prioritize(inc, Priority(p)) == []
    views = await desk.views(inc)
    assert (views["response"]["priority"], views["response"]["target_seconds"]) == (p, 3600)
    assert views["response"]["due_at"] == ts(T0 + timedelta(hours=1))
    assert await desk.sweep_at(T0 + timedelta(minutes=44, seconds=59)) == []
    assert await desk.sweep_at(T0 + timedelta(minutes=45)) == [
        ev(inc, "response", "warning", 0.75, p)]


# -- 5. acknowledged after the target but before any sweep ------------------------------

async def test_acknowledge_after_target_before_sweep_is_a_breach_recorded_once(
        store: Store, clock: FakeClock) -> None:
    desk = Desk(store, clock, STANDARD)
    inc = await desk.open()
    p = await priority_of(store, inc)
    clock.advance(45 * MIN)  # the 75 % warning and the breach were both due; no sweep ran
    assert await desk.move(inc, "acknowledge") == [ev(inc, "response", "breached", None, p)]
    views = await desk.views(inc)
    assert views["response"]["state"] == "breached"
    assert views["response"]["breached_at"] == ts(T0 + timedelta(minutes=30))
    assert views["response"]["stopped_at"] == ts(T0 + timedelta(minutes=45))
    assert views["response"]["elapsed_seconds"] == 2700.0
    assert await desk.sweep() == []
    assert await desk.sync(inc) == []
    timeline = await desk.sla_timeline(inc)
    assert [(k, d["clock"], d["due_at"]) for k, d in timeline] == [
        ("sla_breached", "response", ts(T0 + timedelta(minutes=30)))]

    # Resolved and reopened, the response clock runs again, still breached: history stays.
    assert await desk.move(inc, "resolve") == [ev(inc, "resolution", "met", None, p)]
    clock.advance(MIN)
    assert await desk.move(inc, "reopen") == []
    views = await desk.views(inc)
    assert (views["response"]["state"], views["response"]["stopped_at"]) == ("breached", None)
    assert views["response"]["due_at"] == ts(T0 + timedelta(minutes=30))
    assert views["resolution"]["state"] == "running"
    clock.advance(HOUR)
    assert await desk.sweep() == []  # the response breach does not fire again
    assert len(await desk.sla_timeline(inc)) == 1


# -- 6. reopening restarts from the elapsed time ----------------------------------------

async def test_reopen_restarts_the_clocks_from_their_elapsed_time(
        store: Store, clock: FakeClock) -> None:
    desk = Desk(store, clock, STANDARD)
    inc = await desk.open()
    p = await priority_of(store, inc)
    clock.advance(10 * MIN)
    assert await desk.move(inc, "acknowledge") == [ev(inc, "response", "met", None, p)]
    clock.advance(50 * MIN)
    assert await desk.move(inc, "resolve") == [ev(inc, "resolution", "met", None, p)]
    views = await desk.views(inc)
    assert (views["resolution"]["state"], views["resolution"]["elapsed_seconds"]) == (
        "met", 3600.0)
    assert views["resolution"]["stopped_at"] == ts(T0 + timedelta(hours=1))

    clock.advance(2 * HOUR)  # resolved: nothing counts
    reopened_at = clock.now()
    assert await desk.move(inc, "reopen") == []
    views = await desk.views(inc)
    assert (views["resolution"]["state"], views["resolution"]["stopped_at"]) == ("running", None)
    assert views["resolution"]["elapsed_seconds"] == 3600.0
    assert views["resolution"]["due_at"] == ts(reopened_at + timedelta(hours=3))
    # Reopening clears the acknowledgement: the response clock counts on from 10 minutes.
    assert views["response"]["state"] == "running"
    assert views["response"]["due_at"] == ts(reopened_at + timedelta(minutes=20))
    assert views["response"]["started_at"] == ts(T0)

    assert await desk.sweep_at(reopened_at + timedelta(minutes=12, seconds=29)) == []
    assert await desk.sweep_at(reopened_at + timedelta(minutes=12, seconds=30)) == [
        ev(inc, "response", "warning", 0.75, p)]  # 22:30 of 30 minutes
    assert await desk.move(inc, "acknowledge") == [ev(inc, "response", "met", None, p)]
    assert await desk.sweep_at(reopened_at + timedelta(hours=2)) == [
        ev(inc, "resolution", "warning", 0.75, p)]  # 1 h + 2 h = 75 % of 4 h
    assert await desk.sweep_at(reopened_at + timedelta(hours=3)) == [
        ev(inc, "resolution", "breached", None, p)]


# -- more edges ----------------------------------------------------------------------

async def test_merged_incident_clocks_are_cancelled(store: Store, clock: FakeClock) -> None:
    desk = Desk(store, clock, STANDARD)
    older = await desk.open("a")
    newer = await desk.open("b")
    clock.advance(MIN)
    async with store.write() as conn:
        await incidents.merge_incidents(conn, [(newer, older)], clock.now())
        assert await desk.clocks.sync(conn, [older, newer], clock.now()) == []
    views = await desk.views(newer)
    assert {v["state"] for v in views.values()} == {"cancelled"}
    assert {v["stopped_at"] for v in views.values()} == {ts(clock.now())}
    clock.advance(24 * HOUR)
    assert {e.incident_id for e in await desk.sweep()} == {older}  # the merged one is silent
    assert (await desk.views(newer))["response"]["state"] == "cancelled"


async def test_no_policy_no_clocks_and_several_warning_fractions(
        store: Store, clock: FakeClock) -> None:
    desk = Desk(store, clock, SlaConfig(policies=[policy("p1", ["P1"], MIN, HOUR)]))
    inc = await desk.open()
    assert await desk.sync(inc) == []
    async with store.read() as conn:
        assert await desk.clocks.views(conn, [inc, 999], clock.now()) == {inc: [], 999: []}

    warned = SlaConfig(warn_at=[0.9, 0.5, 0.75],
                       policies=[policy("all", ALL, 100 * MIN, 1000 * MIN)])
    desk = Desk(store, clock, warned)
    other = await desk.open("other")
    p = await priority_of(store, other)
    assert await desk.sweep_at(T0 + timedelta(minutes=50)) == [
        ev(other, "response", "warning", 0.5, p)]
    # A late sweep sends one warning, for the highest fraction passed.
    assert await desk.sweep_at(T0 + timedelta(minutes=95)) == [
        ev(other, "response", "warning", 0.9, p)]
    assert await desk.sweep_at(T0 + timedelta(minutes=99, seconds=59)) == []
    assert await desk.sweep_at(T0 + timedelta(minutes=100)) == [
        ev(other, "response", "breached", None, p)]
    timeline = await desk.sla_timeline(other)
    assert [d.get("fraction") for _, d in timeline] == [0.5, 0.9, None]


async def test_two_replicas_never_fire_the_same_breach(pg_store: Store, clock: FakeClock
                                                      ) -> None:
    store = pg_store  # row locks matter on PostgreSQL; SQLite has one writer
    desk = Desk(store, clock, STANDARD)
    inc = await desk.open()
    clock.advance(5 * HOUR)
    other = SlaClocks(STANDARD)
    async with store.write() as first:
        fired = await desk.clocks.sweep(first, clock.now())
        async with store.write() as second:  # the other replica, while the first holds them
            # Without SKIP LOCKED this would wait for `first` forever: fail fast instead.
            await second.execute(sa.text("SET LOCAL lock_timeout = '2s'"))
            assert await other.sweep(second, clock.now()) == []
    assert {(e.clock, e.kind) for e in fired} == {("response", "breached"),
                                                  ("resolution", "breached")}
    async with store.write() as conn:
        assert await other.sweep(conn, clock.now()) == []
    assert len(await desk.sla_timeline(inc)) == 2


async def test_sweep_limit_leaves_the_rest_for_the_next_run(
        store: Store, clock: FakeClock) -> None:
    desk = Desk(store, clock, STANDARD)
    ids = [await desk.open(f"a{i}") for i in range(3)]
    clock.advance(5 * HOUR)
    async with store.write() as conn:
        first = await desk.clocks.sweep(conn, clock.now(), limit=4)
    assert len(first) == 4 and all(e.kind == "breached" for e in first)
    rest = await desk.sweep()
    assert len(rest) == 2
    assert sorted((e.incident_id, e.clock) for e in first + rest) == sorted(
        (i, c) for i in ids for c in ("response", "resolution"))


def test_record_metrics_counts_by_kind() -> None:
    def value(counter: Any, clock: str, prio: str) -> float:
        return float(counter.labels(clock, prio)._value.get())

    before = [value(SLA_WARNINGS, "response", "P2"), value(SLA_BREACHES, "resolution", "P2"),
              value(SLA_MET, "response", "P2")]
    record_metrics([SlaEvent(1, "response", "P2", "warning", 0.75),
                    SlaEvent(1, "resolution", "P2", "breached"),
                    SlaEvent(2, "response", "P2", "met"), SlaEvent(3, "response", "P2", "met")])
    after = [value(SLA_WARNINGS, "response", "P2"), value(SLA_BREACHES, "resolution", "P2"),
             value(SLA_MET, "response", "P2")]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 2]


def test_incident_status_values_the_clocks_depend_on() -> None:
    # The clocks compare stored status strings with these; a rename must fail here.
    assert [s.value for s in IncidentStatus] == [
        "triggered", "acknowledged", "on_hold", "resolved", "closed"]
