"""Problem records from recurring incidents, through the real pipeline, over HTTP, on both
databases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from daemon import metrics
from daemon.api.problems import ProblemRoutes
from daemon.api.responses import errors_middleware
from daemon.app import build_pipeline
from daemon.config import Config, ProblemsConfig
from daemon.correlation.topology import Topology, TopologyHolder
from daemon.itsm import incidents as lifecycle
from daemon.itsm.followup import FollowUp
from daemon.itsm.problems import ProblemLinked, Problems, problem_key, record_metrics
from daemon.models import Alert, AlertStatus, IncidentStatus, Severity, TimelineKind
from daemon.store import Store
from daemon.store import incidents as incident_store
from tests.conftest import FakeClock
from tests.integration.test_correlation_scenarios import ci, svc

Client = TestClient  # type: ignore[type-arg]
DAY = 86_400
CMDB = (svc("svc-shop", "app"), ci("app", "db", service="svc-shop"),
        ci("db", type_="database"))


class World:
    """A small CMDB and the real pipeline, whose follow-up links incidents to problems."""

    def __init__(self, store: Store, clock: FakeClock, config: ProblemsConfig | None = None
                 ) -> None:
        self.store = store
        self.clock = clock
        holder = TopologyHolder(Topology.build(CMDB))
        settings = Config(problems=config or ProblemsConfig())
        followup = FollowUp(settings, holder, clock=clock)
        self.pipeline = build_pipeline(settings, holder, clock, followup)
        self.problems: Problems = followup.problems
        self.sent = 0

    async def fire(self, name: str = "DbDown", on: str = "db", *, resolve: bool = True
                   ) -> tuple[int, list[ProblemLinked]]:
        """A new alert opens an incident (linked to problems as ingest would); then,
        unless told otherwise, someone resolves it so the next one opens a new incident."""
        self.sent += 1
        new = Alert(
            source="alertmanager", integration="alertmanager", fingerprint=f"fp-{self.sent}",
            status=AlertStatus.FIRING, severity=Severity.ERROR, summary=f"{name} on {on}",
            labels={"alertname": name, "instance": f"{on}:9100"}, annotations={},
            starts_at=self.clock.now(), ends_at=None, generator_url=None,
            group_key=f"am:{self.sent}")
        async with self.store.write() as conn:
            result = await self.pipeline.process(conn, [new])
            opened = [t.incident.id for t in result.transitions if t.previous is None]
            # The pipeline's follow-up links them; linking again (as a later batch or a
            # person's action may) must change nothing.
            linked = result.effects.problems + await self.problems.link(conn, opened,
                                                                        self.clock.now())
        [incident_id] = opened
        if resolve:
            await self.resolve(incident_id)
        return incident_id, linked

    async def resolve(self, incident_id: int) -> None:
        async with self.store.write() as conn:
            await lifecycle.move(conn, incident_id, "resolve", actor="ann", note=None,
                                 now=self.clock.now())

    async def timeline(self, incident_id: int) -> list[tuple[TimelineKind, dict[str, Any]]]:
        async with self.store.read() as conn:
            incident = await incident_store.get_incident(conn, incident_id)
        assert incident is not None
        return [(e.kind, e.detail) for e in incident.timeline
                if e.kind in (TimelineKind.PROBLEM_LINKED, TimelineKind.WORKAROUND)]

    async def views(self, *incident_ids: int) -> dict[int, list[dict[str, Any]]]:
        async with self.store.read() as conn:
            return await self.problems.views(conn, incident_ids)


def opened_by_recurrence() -> float:
    return metrics.REGISTRY.get_sample_value(
        "incidentd_problems_opened_total", {"how": "recurrence"}) or 0.0


async def test_third_recurrence_within_the_window_opens_a_problem(
    store: Store, clock: FakeClock
) -> None:
    world = World(store, clock)
    first, linked = await world.fire()
    assert linked == []
    clock.advance(DAY)
    second, linked = await world.fire()
    assert linked == []  # two recurrences are not a problem yet
    clock.advance(DAY)
    third, linked = await world.fire()
    problem_id = linked[0].problem_id
    assert linked == [ProblemLinked(problem_id, i, True) for i in (first, second, third)]
    before = opened_by_recurrence()
    record_metrics(linked)
    assert opened_by_recurrence() == before + 1  # one problem, counted once

    key = problem_key(problem_id)
    title = "Recurring: DbDown on db"
    for incident_id in (first, second, third):
        assert await world.timeline(incident_id) == [
            (TimelineKind.PROBLEM_LINKED, {"problem": key, "title": title})]
    view = {"id": problem_id, "key": key, "title": title, "status": "open",
            "known_error": False, "workaround": None}
    assert await world.views(first, third) == {first: [view], third: [view]}
    async with store.write() as conn:  # linking again changes nothing
        assert await world.problems.link(conn, [first, second, third], clock.now()) == []
    assert len(await world.timeline(third)) == 1


async def test_recurrences_spread_over_more_than_the_window_do_not_count(
    store: Store, clock: FakeClock
) -> None:
    world = World(store, clock)
    first, _ = await world.fire()
    clock.advance(4 * DAY)
    second, _ = await world.fire()
    clock.advance(4 * DAY)
    third, linked = await world.fire()
    assert linked == []  # the first is 8 days back, outside the 7-day window
    clock.advance(DAY)
    fourth, linked = await world.fire()
    assert {(x.incident_id, x.opened) for x in linked} == {
        (second, True), (third, True), (fourth, True)}
    assert await world.views(first) == {first: []}


async def test_another_alert_name_or_ci_is_another_failure(store: Store, clock: FakeClock
                                                            ) -> None:
    world = World(store, clock, ProblemsConfig(recurrences=3, window_seconds=DAY))
    await world.fire("DbDown", "db")
    await world.fire("DbDown", "app")  # same alert name, another root-cause CI
    await world.fire("DiskFull", "db")  # same CI, another alert name
    clock.advance(60)
    await world.fire("DiskFull", "app")
    _, linked = await world.fire("DbDown", "db")
    assert linked == []  # only two DbDown on db
    _, linked = await world.fire("DbDown", "db")
    assert len(linked) == 3 and all(x.opened for x in linked)


async def test_merged_incidents_and_missing_root_cause_do_not_count(
    store: Store, clock: FakeClock
) -> None:
    world = World(store, clock)
    first, _ = await world.fire()
    async with store.write() as conn:
        # Merged into another: its alerts recur in the incident it was merged into.
        await incident_store.transition(conn, [first], allowed_from=[IncidentStatus.RESOLVED],
                                        to=IncidentStatus.CLOSED, values={"merged_into": 999})
    await world.fire()
    _, linked = await world.fire()
    assert linked == []
    _, linked = await world.fire()
    assert first not in {x.incident_id for x in linked} and len(linked) == 3


async def test_a_fourth_recurrence_links_to_the_open_problem(store: Store, clock: FakeClock
                                                             ) -> None:
    world = World(store, clock)
    for _ in range(3):
        _, linked = await world.fire()
        clock.advance(3600)
    problem_id = linked[0].problem_id
    clock.advance(6 * DAY)  # past the window of the first three: the problem stays open
    fourth, linked = await world.fire()
    assert linked == [ProblemLinked(problem_id, fourth, False)]
    before = opened_by_recurrence()
    record_metrics(linked)
    assert opened_by_recurrence() == before
    assert await world.timeline(fourth) == [
        (TimelineKind.PROBLEM_LINKED,
         {"problem": problem_key(problem_id), "title": "Recurring: DbDown on db"})]


# --- over HTTP ----------------------------------------------------------------------------


@pytest.fixture
async def world(store: Store, clock: FakeClock) -> World:
    return World(store, clock)


@pytest.fixture
async def client(world: World) -> AsyncIterator[Client]:
    app = web.Application(middlewares=[errors_middleware])
    app.add_routes(ProblemRoutes(store=world.store, clock=world.clock,
                                 problems=world.problems).routes())
    async with TestClient(TestServer(app)) as c:
        yield c


async def call(client: Client, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    resp = await client.request(method, path, json=body)
    return resp.status, await resp.json()


async def test_known_error_workaround_reaches_open_and_new_incidents(
    world: World, client: Client
) -> None:
    first, _ = await world.fire()
    await world.fire()
    third, linked = await world.fire(resolve=False)  # still being worked on
    key = problem_key(linked[0].problem_id)
    path = f"/api/v1/problems/{key}"

    status, body = await call(client, "PATCH", path, {"status": "known_error"})
    assert status == 400
    assert body["error"]["errors"] == [
        {"field": "workaround", "reason": "a known error needs a workaround"}]
    status, body = await call(client, "PATCH", path, {
        "status": "known_error", "workaround": "restart pgbouncer", "actor": "dba",
        "note": "pool leak"})
    assert status == 200
    assert (body["status"], body["known_error"], body["workaround"]) == (
        "known_error", True, "restart pgbouncer")
    entry = (TimelineKind.WORKAROUND, {"problem": key, "workaround": "restart pgbouncer",
                                       "note": "pool leak"})
    assert (await world.timeline(third))[-1] == entry
    assert len(await world.timeline(first)) == 1  # resolved ones are left alone

    await world.resolve(third)
    world.clock.advance(3600)
    fourth, linked = await world.fire(resolve=False)
    assert [x.opened for x in linked] == [False]
    assert await world.timeline(fourth) == [
        (TimelineKind.PROBLEM_LINKED, {"problem": key, "title": "Recurring: DbDown on db"}),
        (TimelineKind.WORKAROUND, {"problem": key, "workaround": "restart pgbouncer"}),
    ]
    [view] = (await world.views(fourth))[fourth]
    assert (view["known_error"], view["workaround"]) == (True, "restart pgbouncer")

    # A changed workaround reaches the open incidents again; the same one does not.
    await call(client, "PATCH", path, {"workaround": "raise max_client_conn"})
    await call(client, "PATCH", path, {"workaround": "raise max_client_conn", "title": "Pool"})
    kinds = [k for k, _ in await world.timeline(fourth)]
    assert kinds.count(TimelineKind.WORKAROUND) == 2
    status, body = await call(client, "PATCH", path, {"workaround": None})
    assert (status, body["error"]["errors"][0]["field"]) == (400, "workaround")


async def test_status_moves_and_refusals(world: World, client: Client) -> None:
    for _ in range(3):
        _, linked = await world.fire()
    path = f"/api/v1/problems/{linked[0].problem_id}"
    status, body = await call(client, "PATCH", path, {"status": "resolved"})
    assert (status, body["status"], body["resolved_at"]) == (
        200, "resolved", "2026-11-26T12:00:00Z")
    status, body = await call(client, "PATCH", path, {"status": "known_error"})
    assert status == 409 and body["error"]["code"] == "invalid_transition"
    assert "can become only closed or open" in body["error"]["message"]
    status, body = await call(client, "PATCH", path, {"status": "open"})
    assert (status, body["status"], body["resolved_at"]) == (200, "open", None)
    assert (await call(client, "PATCH", path, {"status": "closed"}))[0] == 200
    status, body = await call(client, "PATCH", path, {"status": "open"})
    assert status == 409 and "final" in body["error"]["message"]
    assert (await call(client, "PATCH", path, {"status": "bogus"}))[0] == 400
    assert (await call(client, "PATCH", path, {"colour": "red"}))[0] == 400
    assert (await call(client, "PATCH", path, {"title": None}))[0] == 400
    assert (await call(client, "PATCH", "/api/v1/problems/PRB-000999", {}))[0] == 404

    # Closed, it no longer collects recurrences: the next three open a new problem.
    world.clock.advance(60)
    _, linked = await world.fire()
    assert linked == []  # the three earlier ones stay with the closed problem
    await world.fire()
    _, linked = await world.fire()
    assert linked[0].problem_id != int(path.rsplit("/", 1)[1]) and len(linked) == 3


async def test_open_read_and_list_problems_over_http(world: World, client: Client) -> None:
    first, _ = await world.fire()
    second, _ = await world.fire(resolve=False)

    status, body = await call(client, "POST", "/api/v1/problems",
                              {"title": "Flaky storage", "known_error": True})
    assert (status, body["error"]["errors"][0]["field"]) == (400, "workaround")
    status, body = await call(client, "POST", "/api/v1/problems",
                              {"title": "Flaky storage", "incidents": [first, "INC-000777"]})
    assert status == 400
    assert body["error"]["errors"] == [
        {"field": "incidents[1]", "reason": "no incident INC-000777"}]
    status, body = await call(client, "POST", "/api/v1/problems",
                              {"title": "Flaky storage", "incidents": ["nope"]})
    assert (status, body["error"]["errors"][0]["field"]) == (400, "incidents[0]")
    assert (await call(client, "POST", "/api/v1/problems", {"incidents": []}))[0] == 400
    assert (await call(client, "POST", "/api/v1/problems", {"title": "x", "size": 1}))[0] == 400

    before = metrics.REGISTRY.get_sample_value(
        "incidentd_problems_opened_total", {"how": "manual"}) or 0.0
    status, body = await call(client, "POST", "/api/v1/problems", {
        "title": "Flaky storage", "description": "SAN firmware", "root_cause_ci": "db",
        "alert_name": "DbDown", "known_error": True, "workaround": "fail over",
        "incidents": [first, f"INC-{second:06d}"], "actor": "ann"})
    assert status == 201
    assert metrics.REGISTRY.get_sample_value(
        "incidentd_problems_opened_total", {"how": "manual"}) == before + 1
    key = body["key"]
    assert {k: body[k] for k in ("title", "status", "known_error", "created_by",
                                  "incident_count")} == {
        "title": "Flaky storage", "status": "known_error", "known_error": True,
        "created_by": "ann", "incident_count": 2}
    assert [(i["key"], i["status"]) for i in body["incidents"]] == [
        (f"INC-{first:06d}", "resolved"), (f"INC-{second:06d}", "triggered")]
    assert body["created_at"] == body["incidents"][0]["linked_at"] == "2026-11-26T12:00:00Z"
    for incident_id in (first, second):
        assert [k for k, _ in await world.timeline(incident_id)] == [
            TimelineKind.PROBLEM_LINKED, TimelineKind.WORKAROUND]

    # The manual problem now collects recurrences of its CI and alert name.
    await world.resolve(second)
    third, linked = await world.fire()
    assert linked == [ProblemLinked(body["id"], third, False)]

    status, again = await call(client, "GET", f"/api/v1/problems/{body['id']}")
    assert (status, again["key"], again["incident_count"]) == (200, key, 3)
    assert (await call(client, "GET", "/api/v1/problems/PRB-000404"))[0] == 404
    assert (await call(client, "GET", "/api/v1/problems/banana"))[0] == 404

    await call(client, "POST", "/api/v1/problems", {"title": "Second"})
    await call(client, "POST", "/api/v1/problems", {"title": "Third"})
    status, listed = await call(client, "GET", "/api/v1/problems?limit=2")
    assert [p["title"] for p in listed["items"]] == ["Third", "Second"]
    status, rest = await call(client, "GET",
                              f"/api/v1/problems?limit=2&cursor={listed['next_cursor']}")
    assert ([p["title"] for p in rest["items"]], rest["next_cursor"]) == (["Flaky storage"], None)
    status, known = await call(client, "GET", "/api/v1/problems?status=known_error,resolved")
    assert [(p["key"], p["incident_count"]) for p in known["items"]] == [(key, 3)]
    status, body = await call(client, "GET", "/api/v1/problems?status=done")
    assert (status, body["error"]["errors"][0]["field"]) == (400, "status")


def test_problem_key() -> None:
    assert problem_key(42) == "PRB-000042"
