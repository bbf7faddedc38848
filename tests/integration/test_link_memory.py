"""What the ingest writer keeps of the open incidents' links between batches (SQLite and
PostgreSQL): always what the database says, through joins, merges, resolves, flapping
and reopenings, and forgotten when anyone else changes links or alert states."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping

import pytest
import sqlalchemy as sa

from daemon.itsm import incidents as itsm_incidents
from daemon.models import Alert, AlertStatus, IncidentStatus, Severity
from daemon.store import Store
from daemon.store.link_memory import LinkSummary, read_summaries
from daemon.store.tables import alerts, link_changes
from tests.conftest import FakeClock
from tests.integration.test_correlation_scenarios import World, alert, ci, svc

# Two services on shared databases and hosts: alerts on them join, merge and spread.
GRAPH = (
    svc("svc-a", "web-a"), svc("svc-b", "web-b"),
    ci("web-a", "app-a", service="svc-a"), ci("web-b", "app-b", service="svc-b"),
    ci("app-a", "db-1", service="svc-a"), ci("app-b", "db-2", service="svc-b"),
    ci("db-1", "host-1", type_="database"), ci("db-2", "host-2", type_="database"),
    ci("host-1", "net", type_="host"), ci("host-2", "net", type_="host"),
    ci("net", type_="network"), ci("lonely", type_="app"),
)
CIS = [c.id for c in GRAPH] + [None, "not-in-cmdb"]
SEVERITIES = list(Severity)


def _as_dict(summaries: Mapping[int, LinkSummary]) -> dict[int, tuple[object, ...]]:
    return {i: (s.cis, s.firing_on, s.worst_rank) for i, s in summaries.items()}


Shapes = dict[int, tuple[int, frozenset[str], frozenset[str]]]


async def assert_kept_is_true(world: World, shapes: Shapes | None = None) -> int:
    """`shapes`: what the last call saw (updated): a summary whose shape did not move
    since must have the same CIs, or a root cause worked out from them would be stale."""
    links = world.pipeline.links
    kept = dict(links.kept)
    async with world.store.read() as conn:
        fresh = await read_summaries(conn, kept)
    assert _as_dict(kept) == _as_dict(fresh)
    if shapes is not None:
        for incident_id, summary in kept.items():
            now = (summary.shape, frozenset(summary.cis), frozenset(summary.firing))
            before = shapes.get(incident_id)
            if before is not None and before[0] == now[0]:
                assert before == now, f"incident {incident_id}: CIs moved, shape did not"
            shapes[incident_id] = now
    # Correlation's index of CIs to incidents is moved with each change: it must be
    # what the kept summaries' CIs say, with no CI left mapping to nothing.
    owners: dict[str, set[int]] = {}
    for incident_id, summary in kept.items():
        for ci_id in summary.cis:
            owners.setdefault(ci_id, set()).add(incident_id)
    assert {c: set(ids) for c, ids in links.owners.items()} == owners
    return len(kept)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_what_is_kept_is_what_the_database_says(store: Store, clock: FakeClock,
                                                      seed: int) -> None:
    # A short window and reopen window, so incidents also go quiet, resolve and reopen.
    world = World(store, clock, *GRAPH, window_seconds=120)
    rnd = random.Random(seed)
    firing: dict[str, Alert] = {}
    kept_sizes = []
    shapes: Shapes = {}
    for step in range(60):
        batch: list[Alert] = []
        for n in range(rnd.randint(1, 8)):
            roll = rnd.random()
            if firing and roll < 0.3:  # a resolve
                fp = rnd.choice(sorted(firing))
                batch.append(alert(fp, firing.pop(fp).ci_id, status="resolved"))
            elif firing and roll < 0.5:  # a repeat
                batch.append(firing[rnd.choice(sorted(firing))])
            else:  # new, or an old fingerprint firing again (flapping, reopening)
                fp = f"fp-{rnd.randint(0, 40)}" if roll < 0.7 else f"new-{step}-{n}"
                if fp in firing or any(a.fingerprint == fp for a in batch):
                    continue
                new = dataclasses.replace(alert(fp, rnd.choice(CIS)),
                                          severity=rnd.choice(SEVERITIES))
                firing[fp] = new
                batch.append(new)
        await world.send(*batch)
        kept_sizes.append(await assert_kept_is_true(world, shapes))
        clock.advance(rnd.choice([5, 5, 30, 200]))
    assert max(kept_sizes) > 0  # the memory was used, not empty all along
    merged = [i for i in await world.incidents() if i.merged_into is not None]
    reopened = [i for i in await world.incidents()
                if any(e.kind.value == "reopened" for e in i.timeline)]
    assert merged or reopened or seed != 1  # the seeds reach merges and reopenings


async def link_count(store: Store) -> int:
    async with store.read() as conn:
        return int((await conn.execute(sa.select(link_changes.c.n))).scalar_one())


async def test_own_batches_keep_it_and_a_hand_resolve_makes_it_forget(
        store: Store, clock: FakeClock) -> None:
    world = World(store, clock, *GRAPH)
    await world.send(alert("db-down", "db-1"), alert("app-slow", "app-a"))
    await world.send(alert("web-5xx", "web-a"))
    [incident] = await world.incidents()
    assert set(world.pipeline.links.kept) == {incident.id}
    before = await link_count(store)

    # A person resolves it (its alerts resolve with it) and reopens it, between batches.
    async with store.write() as conn:
        await itsm_incidents.move(conn, incident.id, "resolve", actor="ann", note=None,
                                  now=clock.now())
        await itsm_incidents.move(conn, incident.id, "reopen", actor="ann", note=None,
                                  now=clock.now())
    assert await link_count(store) > before  # the database counted it
    clock.advance(5)
    await world.send(alert("host-down", "host-1"))
    # Had the old summary been kept, db-1 would still fire and stay the root cause.
    [incident] = [i for i in await world.incidents() if i.status is IncidentStatus.TRIGGERED]
    assert incident.root_cause_ci == "host-1"
    assert await assert_kept_is_true(world) == 1


async def test_a_change_by_hand_in_sql_makes_it_forget(store: Store, clock: FakeClock) -> None:
    world = World(store, clock, *GRAPH)
    await world.send(alert("db-down", "db-1"), alert("app-slow", "app-a"))
    async with store.write() as conn:
        await conn.execute(sa.update(alerts).where(alerts.c.fingerprint == "db-down")
                           .values(status=AlertStatus.RESOLVED.value))
    clock.advance(5)
    await world.send(alert("web-5xx", "web-a"))
    [incident] = await world.incidents()
    assert incident.root_cause_ci == "app-a"  # db-1 no longer fires
    await assert_kept_is_true(world)


async def test_two_writers_on_one_database_see_each_others_batches(
        store: Store, clock: FakeClock) -> None:
    """Two replicas (or a replica and the timer's maintenance release): each batch moves
    the count once, so the other forgets what it kept."""
    one, two = World(store, clock, *GRAPH), World(store, clock, *GRAPH)
    await one.send(alert("db-down", "db-1"))
    await two.send(alert("app-slow", "app-a"))  # joins one's incident
    clock.advance(5)
    await one.send(alert("host-down", "host-1"))
    [incident] = await one.incidents()
    assert incident.root_cause_ci == "host-1"
    assert {a.fingerprint for a in incident.alerts} == {"db-down", "app-slow", "host-down"}
    await assert_kept_is_true(one)
    clock.advance(5)
    await two.send(alert("web-5xx", "web-a"))  # two kept the incident without host-1
    [incident] = await two.incidents()
    assert incident.root_cause_ci == "host-1"
    await assert_kept_is_true(two)


async def test_an_unconfirmed_batch_leaves_nothing_trusted(store: Store,
                                                           clock: FakeClock) -> None:
    world = World(store, clock, *GRAPH)
    await world.send(alert("db-down", "db-1"))
    # A batch whose transaction rolls back after the pipeline ran.
    with pytest.raises(RuntimeError):
        async with store.write() as conn:
            await world.pipeline.process(conn, [alert("host-down", "host-1")])
            raise RuntimeError("the commit failed")
    clock.advance(5)
    await world.send(alert("app-slow", "app-a"))
    [incident] = await world.incidents()
    assert incident.root_cause_ci == "db-1"  # host-down never landed
    await assert_kept_is_true(world)


async def test_without_the_counter_row_ingest_goes_on_trusting_nothing(
        store: Store, clock: FakeClock) -> None:
    world = World(store, clock, *GRAPH)
    async with store.write() as conn:
        await conn.execute(sa.delete(link_changes))
    try:
        await world.send(alert("db-down", "db-1"))
        clock.advance(5)
        await world.send(alert("app-slow", "app-a"))
        [incident] = await world.incidents()
        assert {a.fingerprint for a in incident.alerts} == {"db-down", "app-slow"}
        assert world.pipeline.links.kept  # used within a batch, not trusted across them
    finally:  # put back for the tests after (one PostgreSQL database per session)
        async with store.write() as conn:
            await conn.execute(sa.insert(link_changes).values(id=1, n=0, ingesting=False))
