"""Change records, maintenance windows and suspected changes, on SQLite and PostgreSQL.

Maintenance and suspects are driven directly (`Maintenance.split`/`release`,
`changes.suspect`) over alerts stored by dedup, so each decision is checked on
its own; one test runs them through the real pipeline as the daemon wires them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from daemon.api.changes import ChangeRoutes
from daemon.api.responses import errors_middleware
from daemon.config import ChangesConfig, PriorityConfig
from daemon.correlation import dedup
from daemon.correlation.engine import Group, Placed
from daemon.correlation.topology import Topology, TopologyHolder
from daemon.errors import InvalidTransition
from daemon.itsm import changes, impact, incidents
from daemon.itsm.changes import ChangeEdit, ChangeRecorder, ChangeState, Outcome
from daemon.itsm.maintenance import Maintenance, Suppressed
from daemon.itsm.priority import PriorityMatrix
from daemon.models import (
    Alert,
    AlertStatus,
    ChangeRecord,
    ConfigurationItem,
    Severity,
    TimelineKind,
)
from daemon.receivers import pagerduty
from daemon.store import Store
from daemon.store import changes as change_store
from daemon.store import incidents as incident_store
from daemon.store.link_memory import LinkMemory
from tests.conftest import FakeClock, make_pipeline

Client = TestClient  # type: ignore[type-arg]


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, 26, hour, minute, tzinfo=UTC)


FILED = at(8)  # when the test's change records are filed, unless said


def ci(id_: str, *deps: str) -> ConfigurationItem:
    return ConfigurationItem(id=id_, name=id_, type="app", depends_on=deps)


# web-1 → app-1 → db-1; other-1 stands alone.
CIS = (ci("db-1"), ci("app-1", "db-1"), ci("web-1", "app-1"), ci("other-1"))


def graph() -> TopologyHolder:
    return TopologyHolder(Topology.build(CIS))


def alert(fp: str, ci_id: str | None, *, status: str = "firing") -> Alert:
    return Alert(
        source="alertmanager", integration="alertmanager", fingerprint=fp,
        status=AlertStatus(status), severity=Severity.ERROR, summary=f"{fp} firing",
        labels={"alertname": fp} | ({"ci": ci_id} if ci_id else {}), annotations={},
        starts_at=at(9), ends_at=None, generator_url=None, group_key=f"am:{fp}", ci_id=ci_id,
    )


async def file_change(store: Store, *, state: ChangeState, cis: Sequence[str] = ("db-1",),
                      start: datetime | None = None, end: datetime | None = None,
                      summary: str = "Upgrade PostgreSQL", now: datetime = FILED) -> int:
    async with store.write() as conn:
        change_id, _ = await changes.create(conn, ChangeRecord(
            integration="api", summary=summary, source=None, occurred_at=now, type="normal",
            cis=tuple(cis), planned_start=start, planned_end=end,
        ), now, state=state)
    return change_id


async def fire(store: Store, maintenance: Maintenance, now: datetime, *alerts: Alert
               ) -> tuple[list[Suppressed], list[Placed]]:
    """Store new alerts as dedup does, then split them as the pipeline does."""
    async with store.write() as conn:
        outcome = await dedup.apply(conn, alerts, now)
        return await maintenance.split(conn, outcome.new, now)


def fps(placed: Sequence[Placed]) -> list[str]:
    return [a.fingerprint for a, _ in placed]


# --- maintenance windows ------------------------------------------------------------------

async def test_an_approved_window_holds_back_alerts_on_its_cis_and_their_dependents(
    store: Store
) -> None:
    change_id = await file_change(store, state=ChangeState.APPROVED, start=at(10), end=at(11))
    maintenance = Maintenance(ChangesConfig(), graph(), depth=3)
    held, rest = await fire(store, maintenance, at(10, 30), alert("db", "db-1"),
                            alert("other", "other-1"), alert("app", "app-1"),
                            alert("web", "web-1"), alert("unbound", None))
    assert [(s.change_id, s.fingerprint) for s in held] == [
        (change_id, "db"), (change_id, "app"), (change_id, "web")]
    assert fps(rest) == ["other", "unbound"]
    async with store.read() as conn:
        linked = await change_store.alerts_of_change(conn, change_id)
    assert [(a.fingerprint, a.id) for a in linked] == [(s.fingerprint, s.alert_id) for s in held]

    # The window is planned_start ≤ now < planned_end.
    held, rest = await fire(store, maintenance, at(9, 59), alert("db-early", "db-1"))
    assert (held, fps(rest)) == ([], ["db-early"])
    held, rest = await fire(store, maintenance, at(11), alert("db-late", "db-1"))
    assert (held, fps(rest)) == ([], ["db-late"])


async def test_an_unapproved_change_holds_back_nothing(store: Store) -> None:
    await file_change(store, state=ChangeState.REQUESTED, start=at(10), end=at(11))
    held, rest = await fire(store, Maintenance(ChangesConfig(), graph(), depth=3), at(10, 30),
                            alert("db", "db-1"))
    assert (held, fps(rest)) == ([], ["db"])


async def test_without_dependents_only_the_changed_ci_is_covered(store: Store) -> None:
    await file_change(store, state=ChangeState.IN_PROGRESS, start=at(10), end=at(11))
    config = ChangesConfig(maintenance_includes_dependents=False)
    held, rest = await fire(store, Maintenance(config, graph(), depth=3), at(10, 30),
                            alert("db", "db-1"), alert("app", "app-1"))
    assert ([s.fingerprint for s in held], fps(rest)) == (["db"], ["app"])


async def test_when_the_window_ends_a_still_firing_alert_is_released_once(
    store: Store
) -> None:
    await file_change(store, state=ChangeState.APPROVED, start=at(10), end=at(11))
    maintenance = Maintenance(ChangesConfig(), graph(), depth=3)
    held, _ = await fire(store, maintenance, at(10, 30), alert("db-a", "db-1"),
                         alert("app-b", "app-1"))
    assert len(held) == 2
    async with store.write() as conn:  # app-b clears during the window
        await dedup.apply(conn, [alert("app-b", "app-1", status="resolved")], at(10, 45))
        assert await maintenance.release(conn, at(10, 59)) == []  # still in the window
        released = await maintenance.release(conn, at(11))
    assert fps(released) == ["db-a"]
    [(back, alert_id)] = released
    assert back == alert("db-a", "db-1") and alert_id == held[0].alert_id
    async with store.write() as conn:  # the caller correlates it: it gets an incident
        await incidents.open_incidents(conn, [Group(key=-1, created_at=at(11),
                                                    last_activity=at(11), group_key="g",
                                                    alerts=list(released))], at(11))
        assert await maintenance.release(conn, at(11, 1)) == []


async def test_completing_a_change_early_ends_its_window(store: Store) -> None:
    change_id = await file_change(store, state=ChangeState.IN_PROGRESS, start=at(10),
                                  end=at(11))
    maintenance = Maintenance(ChangesConfig(), graph(), depth=3)
    await fire(store, maintenance, at(10, 10), alert("db", "db-1"))
    async with store.write() as conn:
        await changes.edit(conn, change_id, ChangeEdit(state=ChangeState.COMPLETED), at(10, 20))
        assert fps(await maintenance.release(conn, at(10, 20))) == ["db"]


async def test_an_overlapping_window_keeps_holding_an_alert_until_it_ends(
    store: Store
) -> None:
    await file_change(store, state=ChangeState.APPROVED, start=at(10), end=at(11))
    maintenance = Maintenance(ChangesConfig(), graph(), depth=3)
    await fire(store, maintenance, at(10, 30), alert("app", "app-1"))
    # Approved later, on the app itself, running past the first window.
    second = await file_change(store, state=ChangeState.APPROVED, cis=["app-1"],
                               start=at(10, 45), end=at(12))
    async with store.write() as conn:
        assert await maintenance.release(conn, at(11)) == []
        assert [a.fingerprint for a in await change_store.alerts_of_change(conn, second)] == [
            "app"]
        assert fps(await maintenance.release(conn, at(12))) == ["app"]


async def test_through_the_pipeline_a_held_alert_pages_only_after_the_window(
    store: Store, clock: FakeClock
) -> None:
    change_id = await file_change(store, state=ChangeState.APPROVED, start=at(11, 30),
                                  end=at(12, 30))
    pipeline = make_pipeline(clock, graph())
    async with store.write() as conn:
        result = await pipeline.process(conn, [alert("app-down", "app-1"),
                                               alert("other-down", "other-1")])
    assert result.suppressed == 1
    async with store.read() as conn:
        items = await incident_store.list_incidents(conn, statuses=None, limit=10,
                                                    before_id=None)
    assert [[a.fingerprint for a in i.alerts] for i in items] == [["other-down"]]

    clock.current = at(12, 30)
    async with store.write() as conn:
        await pipeline.release_maintenance(conn)
        await pipeline.release_maintenance(conn)  # the next tick finds nothing more
        items = await incident_store.list_incidents(conn, statuses=None, limit=10,
                                                    before_id=None)
        assert [[a.fingerprint for a in i.alerts] for i in items] == [
            ["app-down"], ["other-down"]]
        suspects = await changes.suspects_of(conn, [items[0].id])
    assert [s["id"] for s in suspects[items[0].id]] == [change_id]


# --- suspected changes --------------------------------------------------------------------

async def open_incident(store: Store, topology: Topology, now: datetime, *alerts: Alert
                        ) -> int:
    """An incident as the pipeline opens one: its alerts, root cause and impact."""
    async with store.write() as conn:
        new = (await dedup.apply(conn, alerts, now)).new
        [opened] = await incidents.open_incidents(conn, [Group(
            key=-1, created_at=now, last_activity=now, group_key="g", alerts=new)], now)
        await impact.refresh(conn, topology, [opened.incident.id], now,
                             priorities=PriorityMatrix(PriorityConfig()), links=LinkMemory())
    return opened.incident.id


async def record(store: Store, summary: str, when: datetime, *, cis: Sequence[str] = ("db-1",),
                 state: str = "completed") -> int:
    """A change event as PagerDuty reports one (a completed standard change)."""
    async with store.write() as conn:
        return await change_store.insert_change(conn, ChangeRecord(
            integration="pagerduty", summary=summary, source="argo", occurred_at=when,
            cis=tuple(cis), state=state), when)


async def test_a_recent_change_upstream_of_an_incident_is_suspected_once(store: Store) -> None:
    topology = graph().current
    deploy = await record(store, "Deploy db-1 v2", at(10))
    await record(store, "Deploy db-1 v1", at(12) - timedelta(hours=30))
    await record(store, "Deploy other-1", at(11), cis=["other-1"])
    await record(store, "Called off", at(11), state="cancelled")
    await record(store, "Not approved yet", at(11), state="requested")
    await file_change(store, state=ChangeState.APPROVED, start=at(13), end=at(14),
                      summary="Planned for later")
    incident_id = await open_incident(store, topology, at(12), alert("app-down", "app-1"))

    for made in (1, 0):  # the second look finds nothing new
        async with store.write() as conn:
            assert await changes.suspect(conn, topology, [incident_id], at(12, 5),
                                         window_seconds=86_400, depth=3) == made
    async with store.read() as conn:
        suspects = await changes.suspects_of(conn, [incident_id])
        incident = await incident_store.get_incident(conn, incident_id)
    assert suspects == {incident_id: [{
        "id": deploy, "summary": "Deploy db-1 v2", "type": "standard", "state": "completed",
        "cis": ["db-1"], "occurred_at": "2026-11-26T10:00:00Z", "planned_start": None,
        "planned_end": None, "outcome": None}]}
    assert incident is not None
    entries = [e.detail for e in incident.timeline if e.kind is TimelineKind.CHANGE_SUSPECTED]
    assert entries == [{"change": deploy, "summary": "Deploy db-1 v2", "cis": ["db-1"]}]


async def test_a_change_during_an_open_incident_is_suspected_and_downstream_is_not(
    store: Store
) -> None:
    topology = graph().current
    incident_id = await open_incident(store, topology, at(12), alert("app-down", "app-1"))
    during = await record(store, "Hotfix app-1", at(12, 10), cis=["app-1"])
    await record(store, "Deploy web-1", at(11), cis=["web-1"])  # depends on app-1: a victim
    async with store.write() as conn:
        assert await changes.suspect(conn, topology, [incident_id], at(12, 20),
                                     window_seconds=86_400, depth=3) == 1
        assert [s["id"] for s in (await changes.suspects_of(conn, [incident_id]))[incident_id]
                ] == [during]


async def test_a_long_planned_window_overlapping_the_lookback_is_suspected(
    store: Store
) -> None:
    topology = graph().current
    # Started 30 h before, but planned to run until 2 h before the incident.
    started = at(12) - timedelta(hours=30)
    old = await file_change(store, state=ChangeState.IN_PROGRESS, now=started, start=started,
                            end=at(10))
    incident_id = await open_incident(store, topology, at(12), alert("db-down", "db-1"))
    async with store.write() as conn:
        assert await changes.suspect(conn, topology, [incident_id], at(12),
                                     window_seconds=86_400, depth=3) == 1
        assert [s["id"] for s in (await changes.suspects_of(conn, [incident_id]))[incident_id]
                ] == [old]


async def test_each_incident_looks_back_from_its_own_opening(store: Store) -> None:
    topology = graph().current
    deploy = await record(store, "Deploy db-1", at(12) - timedelta(hours=30))
    earlier = await open_incident(store, topology, at(12) - timedelta(hours=20),
                                  alert("app-slow", "app-1"))
    later = await open_incident(store, topology, at(12), alert("app-down", "app-1"))
    async with store.write() as conn:
        assert await changes.suspect(conn, topology, [later, earlier], at(12, 5),
                                     window_seconds=86_400, depth=3) == 1
        found = await changes.suspects_of(conn, [earlier, later])
    assert {i: [s["id"] for s in found[i]] for i in found} == {earlier: [deploy]}


# --- PagerDuty change events --------------------------------------------------------------

async def test_pagerduty_change_event_binds_its_source_or_custom_details(
    store: Store, clock: FakeClock
) -> None:
    recorder = ChangeRecorder(store=store, clock=clock, topology=graph())

    async def send(payload: dict[str, Any]) -> None:
        event = pagerduty.parse_change(json.dumps({"routing_key": "k", "payload": payload}))
        await recorder.record(pagerduty.to_change(event, integration="pd", clock=clock))

    await send({"summary": "Deploy db", "source": "db-1", "custom_details": {"ci": "app-1"}})
    await send({"summary": "Deploy via argo", "source": "argo",
                "custom_details": {"cis": ["app-1", "web-1", 7]}})
    await send({"summary": "Deploy something", "source": "argo"})
    async with store.read() as conn:
        rows = await change_store.list_changes(conn, limit=10, before_id=None)
    assert [(r.summary, r.cis, r.type, r.state, r.occurred_at) for r in reversed(rows)] == [
        ("Deploy db", ["db-1"], "standard", "completed", clock.current),
        ("Deploy via argo", ["app-1", "web-1"], "standard", "completed", clock.current),
        ("Deploy something", [], "standard", "completed", clock.current),
    ]


# --- HTTP ---------------------------------------------------------------------------------

@pytest.fixture
async def client(store: Store, clock: FakeClock) -> AsyncIterator[Client]:
    app = web.Application(middlewares=[errors_middleware])
    app.add_routes(ChangeRoutes(store=store, clock=clock, topology=graph()).routes())
    async with TestClient(TestServer(app)) as c:
        yield c


async def call(client: Client, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    resp = await client.request(method, path, json=body)
    return resp.status, await resp.json()


def fields(answer: Any) -> list[str]:
    return [e["field"] for e in answer["error"]["errors"]]


async def test_file_approve_run_and_complete_a_change_over_http(
    client: Client, clock: FakeClock
) -> None:
    clock.current = at(9)
    status, body = await call(client, "POST", "/api/v1/changes", {
        "summary": "Upgrade PostgreSQL 16", "cis": ["db-1", "db-9"],
        "planned_start": "2026-11-26T10:00:00Z", "planned_end": "2026-11-26T11:00:00+00:00",
        "description": "minor version", "links": [{"href": "https://cab.example/42"}]})
    assert status == 201
    assert (body["type"], body["state"], body["cis"], body["occurred_at"]) == (
        "normal", "requested", ["db-1", "db-9"], "2026-11-26T10:00:00Z")
    assert body["warnings"] == [{"field": "cis[1]", "reason": "no CI 'db-9' in the CMDB"}]
    path = f"/api/v1/changes/{body['id']}"

    assert (await call(client, "PATCH", path, {"state": "in_progress"}))[0] == 409
    status, body = await call(client, "PATCH", path, {"state": "approved", "approver": "cab"})
    assert (status, body["state"], body["approver"]) == (200, "approved", "cab")
    status, body = await call(client, "PATCH", path, {"planned_start": "2026-11-26T10:15:00Z"})
    assert (body["planned_start"], body["occurred_at"]) == ("2026-11-26T10:15:00Z",) * 2
    status, body = await call(client, "PATCH", path, {"planned_end": "2026-11-26T10:00:00Z"})
    assert (status, fields(body)) == (400, ["planned_end"])

    clock.current = at(10, 20)
    status, body = await call(client, "PATCH", path, {"state": "in_progress"})
    assert (body["state"], body["occurred_at"]) == ("in_progress", "2026-11-26T10:20:00Z")
    status, body = await call(client, "PATCH", path, {"state": "approved"})
    assert status == 409 and body["error"]["code"] == "invalid_transition"
    assert "from in_progress" in body["error"]["message"]
    status, body = await call(client, "PATCH", path, {"state": "completed",
                                                      "outcome": "backed_out"})
    assert (body["state"], body["outcome"]) == ("completed", "backed_out")
    status, body = await call(client, "PATCH", path, {"description": "too late"})
    assert status == 409 and "final" in body["error"]["message"]

    status, body = await call(client, "GET", path)
    assert (status, body["id"], body["alerts"], body["incidents"]) == (
        200, int(path.rsplit("/", 1)[1]), [], [])


async def test_standard_changes_are_pre_approved_and_lists_filter_by_state(
    client: Client
) -> None:
    _, standard = await call(client, "POST", "/api/v1/changes",
                             {"summary": "Rotate certs", "type": "standard"})
    _, normal = await call(client, "POST", "/api/v1/changes", {"summary": "Resize disks"})
    assert (standard["state"], normal["state"]) == ("approved", "requested")
    status, body = await call(client, "PATCH", f"/api/v1/changes/{standard['id']}",
                              {"state": "completed"})
    assert (status, body["outcome"]) == (200, "successful")
    _, listed = await call(client, "GET", "/api/v1/changes?state=requested,approved")
    assert [c["id"] for c in listed["items"]] == [normal["id"]]
    _, listed = await call(client, "GET", "/api/v1/changes?limit=1")
    assert ([c["id"] for c in listed["items"]], listed["next_cursor"]) == (
        [normal["id"]], str(normal["id"]))
    status, body = await call(client, "GET", "/api/v1/changes?state=done")
    assert (status, fields(body)) == (400, ["state"])
    assert (await call(client, "GET", "/api/v1/changes/999"))[0] == 404
    assert (await call(client, "GET", "/api/v1/changes/abc"))[0] == 404
    assert (await call(client, "PATCH", "/api/v1/changes/999", {"state": "approved"}))[0] == 404


@pytest.mark.parametrize(("body", "field"), [
    ({"summary": "x", "planned_start": "2026-11-26T11:00:00Z",
      "planned_end": "2026-11-26T10:00:00Z"}, "planned_end"),
    ({"summary": "x", "planned_end": "2026-11-26T10:00:00Z"}, "planned_start"),
    ({"summary": "x", "colour": "red"}, "colour"),
    ({"summary": "x", "type": "urgent"}, "type"),
    ({"summary": "x", "cis": "db-1"}, "cis"),
    ({"summary": "x", "cis": ["db-1", ""]}, "cis[1]"),
    ({"summary": "x", "outcome": "failed"}, "outcome"),
    ({"summary": "x", "state": "rejected"}, "state"),
    ({"summary": ""}, "summary"),
    ({}, "summary"),
])
async def test_invalid_change_bodies_name_the_field(client: Client, body: Any, field: str
                                                    ) -> None:
    status, answer = await call(client, "POST", "/api/v1/changes", body)
    assert (status, answer["error"]["code"], fields(answer)[:1]) == (400, "invalid_input", [field])


async def test_invalid_patches_name_the_field(client: Client) -> None:
    _, change = await call(client, "POST", "/api/v1/changes", {"summary": "x"})
    path = f"/api/v1/changes/{change['id']}"
    for body, field in (({"state": "done"}, "state"), ({"cis": None}, "cis"),
                        ({"outcome": "failed"}, "outcome"), ({"summary": "y"}, "summary")):
        status, answer = await call(client, "PATCH", path, body)
        assert (status, fields(answer)) == (400, [field]), body


async def test_a_change_shows_the_alerts_it_held_and_the_incidents_it_is_suspected_of(
    store: Store, client: Client
) -> None:
    change_id = await file_change(store, state=ChangeState.APPROVED, start=at(10), end=at(11))
    await fire(store, Maintenance(ChangesConfig(), graph(), depth=3), at(10, 30),
               alert("db-slow", "db-1"))
    incident_id = await open_incident(store, graph().current, at(10, 50),
                                      alert("web-down", "web-1"))
    async with store.write() as conn:
        await changes.suspect(conn, graph().current, [incident_id], at(10, 50),
                              window_seconds=3600, depth=3)
    _, body = await call(client, "GET", f"/api/v1/changes/{change_id}")
    assert [(a["fingerprint"], a["ci"], a["status"], a["incident_ids"]) for a in body["alerts"]
            ] == [("db-slow", "db-1", "firing", [])]
    assert [(i["id"], i["key"], i["status"]) for i in body["incidents"]] == [
        (incident_id, f"INC-{incident_id:06d}", "triggered")]


async def test_edits_outside_the_lifecycle_change_nothing(store: Store) -> None:
    change_id = await file_change(store, state=ChangeState.REQUESTED)
    async with store.write() as conn:
        with pytest.raises(InvalidTransition, match="cannot move from requested to completed"):
            await changes.edit(conn, change_id, ChangeEdit(state=ChangeState.COMPLETED,
                                                           outcome=Outcome.FAILED), at(9))
    async with store.read() as conn:
        row = await change_store.get_change(conn, change_id)
    assert row is not None and (row.state, row.outcome) == ("requested", None)
