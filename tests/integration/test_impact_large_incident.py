"""Root cause, roles and priority of a large incident, assessed from per-CI aggregates
(SQLite and PostgreSQL): the same answers as alert by alert, and only roles that
change are written."""

from __future__ import annotations

import dataclasses
from collections import Counter

import sqlalchemy as sa

from daemon.config import PriorityConfig
from daemon.itsm import impact
from daemon.itsm.priority import PriorityMatrix
from daemon.models import Alert, Incident, Priority, Severity, TimelineKind
from daemon.store import Store
from daemon.store import incidents as incident_store
from daemon.store.link_memory import LinkMemory
from daemon.store.tables import incidents
from tests.conftest import FakeClock
from tests.integration.test_correlation_scenarios import World, alert, ci

APPS = 50
GRAPH = (ci("host", type_="host"), ci("db", "host", type_="database"),
         *(ci(f"app-{i}", "db") for i in range(APPS)))


def symptoms(count: int, prefix: str = "app") -> list[Alert]:
    return [alert(f"{prefix}-{k}", f"app-{k % APPS}") for k in range(count)]


async def only_incident(world: World) -> Incident:
    found = await world.incidents()
    assert len(found) == 1
    return found[0]


def roles(incident: Incident) -> Counter[tuple[str, str]]:
    """(role, CI) → how many alerts, apps folded into one CI name."""
    return Counter((a.role, "app" if (a.ci or "").startswith("app-") else str(a.ci))
                   for a in incident.alerts)


async def set_roles(store: Store, incident_id: int, root: str | None) -> int:
    async with store.write() as conn:
        await conn.execute(sa.update(incidents).where(incidents.c.id == incident_id)
                           .values(root_cause_ci=root))
        return await incident_store.set_roles(conn, [incident_id])


async def test_root_cause_moves_in_a_large_incident(store: Store, clock: FakeClock) -> None:
    world = World(store, clock, *GRAPH)
    await world.send(alert("db-down", "db"))
    clock.advance(10)
    await world.send(*symptoms(250))
    clock.advance(10)
    await world.send(*symptoms(500)[250:])
    inc = await only_incident(world)
    assert (inc.root_cause_ci, inc.severity) == ("db", Severity.ERROR)
    assert roles(inc) == {("root_cause", "db"): 1, ("symptom", "app"): 500}

    clock.advance(10)
    await world.send(dataclasses.replace(alert("host-down", "host"), severity=Severity.CRITICAL))
    inc = await only_incident(world)
    assert (inc.root_cause_ci, inc.severity) == ("host", Severity.CRITICAL)
    assert roles(inc) == {("root_cause", "host"): 1, ("symptom", "db"): 1,
                          ("symptom", "app"): 500}
    moved = [e.detail for e in inc.timeline if e.kind is TimelineKind.ROOT_CAUSE_CHANGED]
    assert moved == [{"from": "db", "to": "host"}]

    # Roles depend only on the alert's CI and the root: a move rewrites the two
    # alerts on the old and new root, an unchanged root rewrites nothing.
    assert await set_roles(store, inc.id, "host") == 0
    assert await set_roles(store, inc.id, "db") == 2
    assert roles(await only_incident(world)) == {
        ("root_cause", "db"): 1, ("symptom", "host"): 1, ("symptom", "app"): 500}
    assert await set_roles(store, inc.id, None) == 1
    assert await set_roles(store, inc.id, "host") == 1
    assert roles(await only_incident(world)) == {
        ("root_cause", "host"): 1, ("symptom", "db"): 1, ("symptom", "app"): 500}


async def test_refresh_writes_only_changed_roles(pg_store: Store, clock: FakeClock) -> None:
    """Through the pipeline: PostgreSQL gives an updated row a new version (`xmin`), so
    the links whose version stays the same were not written."""
    world = World(pg_store, clock, *GRAPH)
    await world.send(alert("db-down", "db"), *symptoms(200))
    first = await versions(pg_store)
    clock.advance(10)
    await world.send(alert("late-app", "app-7"))  # joins; the root stays db
    second = await versions(pg_store)
    assert {k: v for k, v in second.items() if k in first} == first
    clock.advance(10)
    await world.send(alert("host-down", "host"))  # the root moves to host
    third = await versions(pg_store)
    rewritten = {fp for fp, v in third.items() if fp in second and v != second[fp]}
    assert rewritten == {"db-down"}
    assert (await only_incident(world)).root_cause_ci == "host"


async def versions(store: Store) -> dict[str, str]:
    async with store.read() as conn:
        result = await conn.execute(sa.text(
            "SELECT a.fingerprint, l.xmin::text AS v FROM incident_alerts l "
            "JOIN alerts a ON a.id = l.alert_id"))
        return {r.fingerprint: r.v for r in result}


async def test_a_label_rule_matching_one_alert_of_many(store: Store, clock: FakeClock) -> None:
    """Priority rules still see every alert's labels: the one alert of 300 with the
    label decides, and a rule on a label no alert has never does."""
    world = World(store, clock, *GRAPH)
    plain = alert("app-tagged", "app-3")
    tagged = dataclasses.replace(plain, labels=plain.labels | {"team": "dba"})
    await world.send(alert("db-down", "db"), *symptoms(150), tagged, *symptoms(150, "more"))
    inc = await only_incident(world)
    config = PriorityConfig.model_validate({"rules": [
        {"match": ['region="mars"'], "impact": 3, "urgency": 3},
        {"match": ['team="dba"', 'alertname=~"app-.*"'], "impact": 1, "urgency": 1},
        {"match": ['team!="dba"'], "impact": 3, "urgency": 3},
    ]})
    async with store.write() as conn:
        await impact.refresh(conn, world.holder.current, [inc.id], clock.now(),
                             priorities=PriorityMatrix(config), links=LinkMemory())
    assert (await only_incident(world)).priority is Priority(config.matrix[0][0])
