"""The correlator's snapshot of open incidents, with the window test done in SQL
(SQLite and PostgreSQL): its edges, and the pipeline joining just inside it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count

import sqlalchemy as sa

from daemon.models import IncidentStatus
from daemon.store import Store
from daemon.store import incidents as incident_store
from daemon.store.link_memory import LinkMemory
from daemon.store.tables import alerts, incident_alerts, incidents
from tests.conftest import FakeClock
from tests.integration.test_correlation_scenarios import CHAIN, World, alert, members

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
SINCE = NOW - timedelta(seconds=600)
TICK = timedelta(microseconds=1)
_ids = count(1)


async def add_incident(store: Store, *seen: tuple[str | None, datetime],
                       status: IncidentStatus = IncidentStatus.TRIGGERED) -> int:
    """An incident whose alerts are on these (CI, last seen)."""
    created = NOW - timedelta(hours=2)
    # As the ingest keeps it: when a bound alert was last seen.
    last_alert_at = max((at for ci_id, at in seen if ci_id is not None), default=None)
    async with store.write() as conn:
        [incident_id] = (await conn.execute(
            sa.insert(incidents).returning(incidents.c.id),
            [{"title": "t", "status": status.value, "severity": "error",
              "group_key": f"g{next(_ids)}", "created_at": created,
              "last_alert_at": last_alert_at}],
        )).scalars().all()
        for ci_id, last_seen in seen:
            [alert_id] = (await conn.execute(
                sa.insert(alerts).returning(alerts.c.id),
                [{"source": "alertmanager", "integration": "alertmanager",
                  "fingerprint": f"fp{next(_ids)}", "status": "firing", "severity": "error",
                  "summary": "s", "labels": {}, "annotations": {}, "starts_at": created,
                  "group_key": "g", "ci_id": ci_id, "first_seen": created,
                  "last_seen": last_seen}],
            )).scalars().all()
            await conn.execute(sa.insert(incident_alerts), [
                {"incident_id": incident_id, "alert_id": alert_id, "role": "symptom",
                 "added_at": created}])
    return incident_id


async def snapshot(store: Store) -> dict[int, tuple[datetime, datetime, set[str]]]:
    async with store.read() as conn:
        return await incident_store.open_incident_cis(conn, since=SINCE, links=LinkMemory())


async def test_the_window_edge_is_inclusive_to_the_microsecond(store: Store) -> None:
    at_edge = await add_incident(store, ("db", SINCE))
    await add_incident(store, ("app", SINCE - TICK))  # just outside: not in the snapshot
    found = await snapshot(store)
    assert found == {at_edge: (NOW - timedelta(hours=2), SINCE, {"db"})}


async def test_one_recent_bound_alert_brings_all_the_incidents_cis(store: Store) -> None:
    # Activity is the incident's, not the alert's: its stale alerts' CIs count too,
    # one entry per CI however many alerts share it.
    old = NOW - timedelta(hours=1)
    incident = await add_incident(store, ("web", old), ("app", old), ("app", NOW - TICK),
                                  ("db", old), ("db", old))
    assert await snapshot(store) == {incident: (NOW - timedelta(hours=2), NOW - TICK,
                                                {"web", "app", "db"})}


async def test_unbound_alerts_and_closed_incidents_are_left_out(store: Store) -> None:
    old = NOW - timedelta(hours=1)
    await add_incident(store, (None, NOW), ("app", old))  # recent, but only unbound
    await add_incident(store, (None, NOW))
    await add_incident(store, ("db", NOW), status=IncidentStatus.RESOLVED)
    await add_incident(store, ("db", NOW), status=IncidentStatus.CLOSED)
    on_hold = await add_incident(store, ("db", NOW), status=IncidentStatus.ON_HOLD)
    assert set(await snapshot(store)) == {on_hold}


async def test_an_alert_just_inside_the_window_joins(store: Store, clock: FakeClock) -> None:
    world = World(store, clock, *CHAIN, window_seconds=600)
    await world.send(alert("app-errors", "app"))
    clock.advance(600)  # the edge itself is inside; 601 is test_no_join_after_the_window
    await world.send(alert("db-down", "db"))
    [inc] = await world.incidents()
    assert members(inc) == {"app-errors", "db-down"}


async def test_repeats_and_resolves_keep_an_incident_active(store: Store,
                                                            clock: FakeClock) -> None:
    """An incident is active while any of its bound alerts is seen: a repeat or a resolve
    of one is a sighting, so a related alert after the window still joins."""
    world = World(store, clock, *CHAIN, window_seconds=600)
    await world.send(alert("app-errors", "app"), alert("web-5xx", "web"))
    clock.advance(500)
    await world.send(alert("app-errors", "app"))  # repeated: seen again now
    clock.advance(500)
    await world.send(alert("web-5xx", "web", status="resolved"))  # resolving: seen now
    clock.advance(500)
    await world.send(alert("db-down", "db"))  # 1,500 s after the incident opened
    [inc] = await world.incidents()
    assert members(inc) == {"app-errors", "web-5xx", "db-down"}
    clock.advance(601)
    await world.send(alert("host-down", "host-1"))  # nothing seen for 601 s: a new one
    assert len(await world.incidents()) == 2
