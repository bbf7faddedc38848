"""Escalation policies through the real pipeline and store (SQLite and PostgreSQL).

Incidents are opened by the ingest pipeline and moved with the lifecycle
functions; `sync` is called after each change, as the daemon does.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from daemon.clock import timestamp
from daemon.config import EscalationConfig
from daemon.correlation.topology import Topology, TopologyHolder
from daemon.errors import InvalidInput, InvalidTransition, NotFound
from daemon.itsm import incidents
from daemon.itsm.escalation import EscalationEvent, Escalations
from daemon.models import SYSTEM_ACTOR, Alert, ConfigurationItem, TimelineKind
from daemon.store import Store
from daemon.store import incidents as incident_store
from tests.conftest import FakeClock, make_pipeline
from tests.integration.test_correlation_scenarios import alert

ALICE, DBA = ["user:alice"], ["team:dba", "webhook:ops"]


def ladder(name: str, *timeouts: int, repeat: int = 0) -> dict[str, Any]:
    """A policy whose level n notifies `user:lvl<n>`, or alice then the DBAs for two."""
    levels = [{"targets": ALICE if i == 0 else DBA if i == 1 else [f"user:lvl{i + 1}"],
               "timeout_seconds": t} for i, t in enumerate(timeouts)]
    return {"name": name, "levels": levels, "repeat": repeat}


TWO_LEVELS = {"policies": [ladder("ops", 300, 600)], "default_policy": "ops"}


class Desk:
    """One store, a clock, the real pipeline and an escalation runner."""

    def __init__(self, store: Store, clock: FakeClock, config: dict[str, Any],
                 topology: TopologyHolder | None = None) -> None:
        self.store = store
        self.clock = clock
        self.pipeline = make_pipeline(clock, topology)
        self.escalations = Escalations(EscalationConfig.model_validate(config))

    async def open(self, *alerts: Alert) -> tuple[list[int], list[EscalationEvent]]:
        """Send alerts; returns the incidents they opened and what sync notified."""
        async with self.store.write() as conn:
            before = set(await self._ids(conn))
            await self.pipeline.process(conn, alerts)
            opened = sorted(set(await self._ids(conn)) - before)
            events = await self.escalations.sync(conn, opened, self.clock.now())
        return opened, events

    @staticmethod
    async def _ids(conn: Any) -> list[int]:
        found = await incident_store.list_incidents(conn, statuses=None, limit=1000,
                                                    before_id=None)
        return [i.id for i in found]

    async def move(self, incident_id: int, action: str) -> list[EscalationEvent]:
        async with self.store.write() as conn:
            await incidents.move(conn, incident_id, action, actor="ann", note=None,
                                 now=self.clock.now())
            return await self.escalations.sync(conn, [incident_id], self.clock.now())

    async def sweep(self) -> list[EscalationEvent]:
        async with self.store.write() as conn:
            return await self.escalations.sweep(conn, self.clock.now())

    async def escalate(self, incident_id: int, *, level: int | None = None,
                       note: str | None = None) -> EscalationEvent:
        async with self.store.write() as conn:
            return await self.escalations.escalate(conn, incident_id, actor="bob", note=note,
                                                   level=level, now=self.clock.now())

    async def view(self, incident_id: int) -> dict[str, Any] | None:
        async with self.store.read() as conn:
            return (await self.escalations.views(conn, [incident_id]))[incident_id]

    async def escalated(self, incident_id: int) -> list[tuple[str, dict[str, Any]]]:
        """The incident's `escalated` timeline entries: (actor, detail)."""
        async with self.store.read() as conn:
            found = await incident_store.get_incident(conn, incident_id)
        assert found is not None
        return [(e.actor, e.detail) for e in found.timeline if e.kind is TimelineKind.ESCALATED]


def due_in(clock: FakeClock, seconds: int) -> str | None:
    """`next_at` as a view shows it, `seconds` from now."""
    return timestamp(clock.now() + timedelta(seconds=seconds))


def steps(events: list[EscalationEvent]) -> list[tuple[int, int, int, str]]:
    """(incident, level, cycle, reason) of each event."""
    return [(e.incident_id, e.level, e.cycle, e.reason) for e in events]


async def test_two_levels_then_acknowledged(store: Store, clock: FakeClock) -> None:
    desk = Desk(store, clock, TWO_LEVELS)
    [inc], events = await desk.open(alert("disk-full", None))
    assert events == [EscalationEvent(incident_id=inc, policy="ops", level=1, cycle=0,
                                      targets=tuple(ALICE), reason="opened",
                                      actor=SYSTEM_ACTOR)]
    async with store.write() as conn:  # sync again: nothing new
        assert await desk.escalations.sync(conn, [inc], clock.now()) == []
    clock.advance(299)
    assert await desk.sweep() == []
    clock.advance(1)
    [second] = await desk.sweep()
    assert (second.level, second.targets, second.reason) == (2, tuple(DBA), "timeout")
    view = await desk.view(inc)
    assert view == {"policy": "ops", "level": 2, "cycle": 0, "state": "active",
                    "next_at": due_in(clock, 600),
                    "targets": DBA}
    clock.advance(60)
    assert await desk.move(inc, "acknowledge") == []
    clock.advance(600)
    assert await desk.sweep() == []
    assert (await desk.view(inc) or {})["state"] == "stopped"
    assert await desk.escalated(inc) == [
        (SYSTEM_ACTOR, {"policy": "ops", "level": 1, "targets": ALICE, "cycle": 0,
                        "reason": "opened"}),
        (SYSTEM_ACTOR, {"policy": "ops", "level": 2, "targets": DBA, "cycle": 0,
                        "reason": "timeout"}),
    ]


async def test_repeat_runs_the_ladder_again_then_is_exhausted(store: Store,
                                                              clock: FakeClock) -> None:
    desk = Desk(store, clock, {"policies": [ladder("ops", 300, 300, repeat=1)],
                               "default_policy": "ops"})
    [inc], opened = await desk.open(alert("disk-full", None))
    notified = steps(opened)
    for _ in range(4):
        clock.advance(300)
        notified += steps(await desk.sweep())
    assert notified == [(inc, 1, 0, "opened"), (inc, 2, 0, "timeout"),
                        (inc, 1, 1, "timeout"), (inc, 2, 1, "timeout")]
    assert await desk.view(inc) == {"policy": "ops", "level": 2, "cycle": 1,
                                    "state": "exhausted", "next_at": None, "targets": DBA}
    clock.advance(3600)
    assert await desk.sweep() == []
    assert len(await desk.escalated(inc)) == 4
    # Acknowledged, then resolved and reopened: a new incident life, a new ladder.
    await desk.move(inc, "acknowledge")
    await desk.move(inc, "resolve")
    assert steps(await desk.move(inc, "reopen")) == [(inc, 1, 0, "restarted")]


SHOP = (ConfigurationItem(id="svc-shop", name="shop", type="service", criticality=1,
                          depends_on=("shop-db",)),
        ConfigurationItem(id="shop-db", name="shop-db", type="database", service="svc-shop"),
        ConfigurationItem(id="svc-pay", name="pay", type="service", criticality=1,
                          depends_on=("pay-db",)),
        ConfigurationItem(id="pay-db", name="pay-db", type="database", service="svc-pay"),
        ConfigurationItem(id="lab", name="lab", type="host", criticality=5))

RULES = [
    # both conditions must hold: shop at P2 is not enough for this one
    {"services": ["svc-shop"], "priorities": ["P1"], "policy": "exec"},
    {"services": ["svc-other", "svc-shop"], "policy": "shop"},
    {"priorities": ["P1", "P2"], "policy": "urgent"},
]
POLICIES = [ladder(name, 60, 60) for name in ("exec", "shop", "urgent", "ops")]


@pytest.mark.parametrize("default", ["ops", None])
async def test_rules_choose_the_policy(store: Store, clock: FakeClock,
                                       default: str | None) -> None:
    desk = Desk(store, clock, {"policies": POLICIES, "rules": RULES, "default_policy": default},
                TopologyHolder(Topology.build(SHOP)))
    ids, events = await desk.open(alert("shop-db-down", "shop-db"),
                                  alert("pay-db-down", "pay-db"), alert("lab-down", "lab"))
    async with store.read() as conn:
        found = {i: await incident_store.get_incident(conn, i) for i in ids}
    by_alert = {inc.alert_name: inc for inc in found.values() if inc}
    shop, pay, lab = (by_alert[n] for n in ("shop-db-down", "pay-db-down", "lab-down"))
    # what the rules look at, as the pipeline worked it out
    assert (shop.impacted_services, shop.priority) == (("svc-shop",), "P2")
    assert (pay.impacted_services, pay.priority) == (("svc-pay",), "P2")
    assert (lab.impacted_services, lab.priority) == ((), "P4")
    chosen = {e.incident_id: e.policy for e in events}
    expected = {shop.id: "shop", pay.id: "urgent"} | ({lab.id: "ops"} if default else {})
    assert chosen == expected
    if default is None:
        assert await desk.view(lab.id) is None
        assert await desk.escalated(lab.id) == []
        clock.advance(3600)
        assert {e.incident_id for e in await desk.sweep()} == {shop.id, pay.id}
        with pytest.raises(InvalidTransition, match="no escalation policy applies"):
            await desk.escalate(lab.id)


async def test_manual_escalation(store: Store, clock: FakeClock) -> None:
    desk = Desk(store, clock, {"policies": [ladder("ops", 300, 600, 900)],
                               "default_policy": "ops"})
    [inc, other], _ = await desk.open(alert("disk-full", None), alert("cpu-hot", None))
    clock.advance(100)
    event = await desk.escalate(inc, note="customer on the phone")
    assert (event.level, event.reason, event.actor, event.targets) == (2, "manual", "bob",
                                                                      tuple(DBA))
    assert (await desk.view(inc) or {})["next_at"] == due_in(clock, 600)
    assert (await desk.escalated(inc))[-1] == ("bob", {
        "policy": "ops", "level": 2, "targets": DBA, "cycle": 0, "reason": "manual",
        "note": "customer on the phone"})
    assert (await desk.escalate(inc, level=3)).level == 3
    with pytest.raises(InvalidTransition, match="already at the last level") as last:
        await desk.escalate(inc)
    assert last.value.status == 409
    assert (await desk.escalate(inc, level=1)).level == 1  # back down, by hand
    for bad in (0, 4):
        with pytest.raises(InvalidInput) as wrong:
            await desk.escalate(inc, level=bad)
        assert wrong.value.status == 400 and wrong.value.errors[0]["field"] == "level"
    # acknowledged: the next level hears of it, but no timer runs
    await desk.move(other, "acknowledge")
    event = await desk.escalate(other)
    assert (event.incident_id, event.level) == (other, 2)
    assert await desk.view(other) == {"policy": "ops", "level": 2, "cycle": 0,
                                      "state": "stopped", "next_at": None, "targets": DBA}
    clock.advance(10_000)
    assert steps(await desk.sweep()) == [(inc, 2, 0, "timeout")]
    await desk.move(other, "resolve")
    with pytest.raises(InvalidTransition, match="is resolved") as resolved:
        await desk.escalate(other)
    assert resolved.value.status == 409
    with pytest.raises(NotFound):
        await desk.escalate(999)
    assert len(await desk.escalated(other)) == 2  # opened, manual; nothing after


async def test_after_downtime_one_level_per_sweep(store: Store, clock: FakeClock) -> None:
    desk = Desk(store, clock, {"policies": [ladder("ops", 300, 300, 300, repeat=2)],
                               "default_policy": "ops"})
    [inc], _ = await desk.open(alert("disk-full", None))
    clock.advance(86_400)  # down for a day: dozens of timeouts passed
    assert steps(await desk.sweep()) == [(inc, 2, 0, "timeout")]
    assert await desk.sweep() == []  # level 2 gets its full timeout from now
    clock.advance(299)
    assert await desk.sweep() == []
    clock.advance(1)
    assert steps(await desk.sweep()) == [(inc, 3, 0, "timeout")]


async def test_reopen_and_resume_restart_at_level_one(store: Store, clock: FakeClock) -> None:
    desk = Desk(store, clock, TWO_LEVELS)
    [inc], _ = await desk.open(alert("disk-full", None))
    clock.advance(300)
    assert steps(await desk.sweep()) == [(inc, 2, 0, "timeout")]
    assert await desk.move(inc, "resolve") == []
    clock.advance(600)
    assert await desk.sweep() == []
    assert steps(await desk.move(inc, "reopen")) == [(inc, 1, 0, "restarted")]
    assert (await desk.view(inc) or {})["next_at"] == due_in(clock, 300)
    # held while still triggered, then resumed into triggered: starts over too
    clock.advance(100)
    assert await desk.move(inc, "hold") == []
    assert (await desk.view(inc) or {})["state"] == "stopped"
    assert steps(await desk.move(inc, "resume")) == [(inc, 1, 0, "restarted")]
    reasons = [d["reason"] for _, d in await desk.escalated(inc)]
    assert reasons == ["opened", "timeout", "restarted", "restarted"]


async def test_sweep_stops_ladders_a_missed_sync_left_running(store: Store,
                                                              clock: FakeClock) -> None:
    desk = Desk(store, clock, TWO_LEVELS)
    [inc], _ = await desk.open(alert("disk-full", None))
    async with store.write() as conn:  # acknowledged without a sync
        await incidents.move(conn, inc, "acknowledge", actor="ann", note=None,
                             now=clock.now())
    clock.advance(300)
    assert await desk.sweep() == []
    assert (await desk.view(inc) or {})["state"] == "stopped"


async def test_without_policies_nothing_escalates(store: Store, clock: FakeClock) -> None:
    desk = Desk(store, clock, {})
    assert not desk.escalations.enabled
    [inc], events = await desk.open(alert("disk-full", None))
    assert events == [] and await desk.view(inc) is None
    clock.advance(3600)
    assert await desk.sweep() == []


async def test_two_replicas_never_notify_one_level_twice(pg_store: Store, clock: FakeClock
                                                        ) -> None:
    store = pg_store  # SQLite has a single writer; the row locks are PostgreSQL's
    desk = Desk(store, clock, TWO_LEVELS)
    [inc], _ = await desk.open(alert("disk-full", None))
    clock.advance(300)
    async with store.write() as first:
        taken = await desk.escalations.sweep(first, clock.now())
        async with store.write() as second:  # the other replica skips the locked ladder
            assert await desk.escalations.sweep(second, clock.now()) == []
    assert steps(taken) == [(inc, 2, 0, "timeout")]
    assert await desk.sweep() == []
