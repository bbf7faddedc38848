"""Topology correlation scenarios, through the real pipeline and store (SQLite and PostgreSQL).

Each asserts exactly which incidents exist, their root causes and impacted services.
"""

from __future__ import annotations

from datetime import UTC, datetime

from daemon.correlation.topology import Topology, TopologyHolder
from daemon.models import (
    Alert,
    AlertStatus,
    ConfigurationItem,
    Incident,
    IncidentStatus,
    Severity,
    TimelineKind,
)
from daemon.store import Store
from daemon.store import incidents as incident_store
from tests.conftest import FakeClock, make_pipeline


def ci(id_: str, *deps: str, type_: str = "app", service: str | None = None,
       criticality: int = 3) -> ConfigurationItem:
    return ConfigurationItem(id=id_, name=id_, type=type_, service=service,
                             criticality=criticality, depends_on=deps)


def svc(id_: str, *deps: str) -> ConfigurationItem:
    return ci(id_, *deps, type_="service", criticality=1)


def alert(fp: str, ci_id: str | None, *, status: str = "firing", group: str | None = None
          ) -> Alert:
    labels = {"alertname": fp} | ({"instance": f"{ci_id}:9100"} if ci_id else {})
    return Alert(
        source="alertmanager", integration="alertmanager", fingerprint=fp,
        status=AlertStatus(status), severity=Severity.ERROR, summary=f"{fp} firing",
        labels=labels, annotations={}, starts_at=datetime(2026, 11, 26, 11, 0, tzinfo=UTC),
        ends_at=None, generator_url=None, group_key=group or f"am:{fp}",
    )


class World:
    """A graph, a clock and the pipeline over one store."""

    def __init__(self, store: Store, clock: FakeClock, *cis: ConfigurationItem,
                 **settings: object) -> None:
        self.store = store
        self.clock = clock
        self.holder = TopologyHolder(Topology.build(cis))
        self.pipeline = make_pipeline(clock, self.holder, **settings)

    async def send(self, *alerts: Alert) -> None:
        async with self.store.write() as conn:
            await self.pipeline.process(conn, alerts)
        self.pipeline.committed()  # as the ingest writer: later batches use what it kept

    async def incidents(self) -> list[Incident]:
        async with self.store.read() as conn:
            items = await incident_store.list_incidents(conn, statuses=None, limit=100,
                                                        before_id=None)
            return [found for i in reversed(items)
                    if (found := await incident_store.get_incident(conn, i.id)) is not None]


def members(incident: Incident) -> set[str]:
    return {a.fingerprint for a in incident.alerts}


CHAIN = (svc("svc-shop", "web"), ci("web", "app", service="svc-shop"),
         ci("app", "db", service="svc-shop"), ci("db", "host-1", type_="database"),
         ci("host-1", type_="host"))


async def test_chain_symptoms_first_then_the_root_cause(store: Store, clock: FakeClock) -> None:
    world = World(store, clock, *CHAIN)
    await world.send(alert("web-5xx", "web"))
    clock.advance(20)
    await world.send(alert("app-errors", "app"))
    [inc] = await world.incidents()
    assert inc.root_cause_ci == "app"
    clock.advance(20)
    await world.send(alert("db-down", "db"))  # the real cause arrives last
    [inc] = await world.incidents()
    assert members(inc) == {"web-5xx", "app-errors", "db-down"}
    assert inc.root_cause_ci == "db"
    assert inc.impacted_cis == ("app", "svc-shop", "web")
    assert inc.impacted_services == ("svc-shop",)
    roles = {a.fingerprint: a.role for a in inc.alerts}
    assert roles == {"web-5xx": "symptom", "app-errors": "symptom", "db-down": "root_cause"}
    moves = [e.detail for e in inc.timeline if e.kind is TimelineKind.ROOT_CAUSE_CHANGED]
    assert moves == [{"from": "web", "to": "app"}, {"from": "app", "to": "db"}]


async def test_diamond_joins_siblings_through_their_shared_dependency(
    store: Store, clock: FakeClock
) -> None:
    world = World(store, clock, svc("svc", "api-1", "api-2"), ci("api-1", "db", service="svc"),
                  ci("api-2", "db", service="svc"), ci("db", type_="database"))
    await world.send(alert("api-1-slow", "api-1"), alert("api-2-slow", "api-2"))
    [inc] = await world.incidents()
    assert inc.root_cause_ci == "api-1"  # neither depends on the other: a tie, by id
    await world.send(alert("db-slow", "db"))
    [inc] = await world.incidents()
    assert (inc.root_cause_ci, inc.impacted_services) == ("db", ("svc",))
    assert set(inc.impacted_cis) == {"api-1", "api-2", "svc"}


async def test_two_unrelated_stacks_in_the_same_second_stay_apart(
    store: Store, clock: FakeClock
) -> None:
    world = World(store, clock, *CHAIN, svc("svc-pay", "pay-api"),
                  ci("pay-api", "pay-db", service="svc-pay"), ci("pay-db", type_="database"))
    await world.send(alert("db-down", "db"), alert("pay-db-down", "pay-db"),
                     alert("app-errors", "app"), alert("pay-api-errors", "pay-api"))
    shop, pay = await world.incidents()
    assert (members(shop), shop.root_cause_ci, shop.impacted_services) == (
        {"db-down", "app-errors"}, "db", ("svc-shop",))
    assert (members(pay), pay.root_cause_ci, pay.impacted_services) == (
        {"pay-db-down", "pay-api-errors"}, "pay-db", ("svc-pay",))


async def test_a_bridge_alert_merges_two_incidents_into_the_older(
    store: Store, clock: FakeClock
) -> None:
    world = World(store, clock, ci("app-a", "db"), ci("app-b", "db"), ci("db", type_="database"),
                  join_siblings=False)
    await world.send(alert("a-errors", "app-a"))
    clock.advance(5)
    await world.send(alert("b-errors", "app-b"))
    assert len(await world.incidents()) == 2
    clock.advance(5)
    await world.send(alert("db-down", "db"))
    older, newer = await world.incidents()
    assert older.status is IncidentStatus.TRIGGERED
    assert members(older) == {"a-errors", "b-errors", "db-down"}
    assert older.root_cause_ci == "db"
    assert (newer.status, newer.merged_into, newer.alerts) == (IncidentStatus.CLOSED, older.id, ())
    assert [e.detail for e in newer.timeline if e.kind is TimelineKind.MERGED] == [
        {"into": older.key}]


async def test_no_join_after_the_window(store: Store, clock: FakeClock) -> None:
    world = World(store, clock, *CHAIN, window_seconds=600)
    await world.send(alert("app-errors", "app"))
    clock.advance(601)
    await world.send(alert("db-down", "db"))
    assert [members(i) for i in await world.incidents()] == [{"app-errors"}, {"db-down"}]


async def test_a_repeat_keeps_an_incident_active(store: Store, clock: FakeClock) -> None:
    world = World(store, clock, *CHAIN, window_seconds=600)
    await world.send(alert("app-errors", "app"))
    clock.advance(500)
    await world.send(alert("app-errors", "app"))  # Alertmanager's repeat: activity
    clock.advance(500)
    await world.send(alert("db-down", "db"))
    [inc] = await world.incidents()
    assert inc.root_cause_ci == "db"


async def test_flapping_alert_opens_nothing_new(store: Store, clock: FakeClock) -> None:
    world = World(store, clock, *CHAIN, flapping_changes=4, flapping_window_seconds=3600)
    for _ in range(4):
        await world.send(alert("db-down", "db"))
        clock.advance(60)
        await world.send(alert("db-down", "db", status="resolved"))
        clock.advance(60)
    # changes: 1 opens it, 3 reopens it, 5 and 7 are flapping: back into it, no reopening
    [inc] = await world.incidents()
    assert [a.flapping for a in inc.alerts] == [False, False, True, True]
    assert [e.kind for e in inc.timeline].count(TimelineKind.REOPENED) == 1
    assert inc.status is IncidentStatus.RESOLVED


async def test_alert_on_an_unknown_ci_is_unbound_and_grouped_by_labels(
    store: Store, clock: FakeClock
) -> None:
    world = World(store, clock, *CHAIN)
    await world.send(alert("mystery", "nope", group="g"), alert("mystery-2", None, group="g"),
                     alert("db-down", "db"))
    unbound, bound = sorted(await world.incidents(), key=lambda i: i.root_cause_ci or "")
    assert unbound.root_cause_ci is None and unbound.impacted_services == ()
    assert {(a.fingerprint, a.ci, a.role) for a in unbound.alerts} == {
        ("mystery", None, "unbound"), ("mystery-2", None, "unbound")}
    assert bound.root_cause_ci == "db"


async def test_binding_rules_take_the_ci_label_first(store: Store, clock: FakeClock) -> None:
    world = World(store, clock, *CHAIN)
    labelled = alert("x", None)
    labelled = Alert(**{**{f: getattr(labelled, f) for f in labelled.__dataclass_fields__},
                        "labels": {"alertname": "x", "ci": "db", "instance": "web:80"}})
    await world.send(labelled)
    [inc] = await world.incidents()
    assert inc.alerts[0].ci == "db"
