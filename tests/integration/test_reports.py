"""The summary report on hand-seeded tables (SQLite and PostgreSQL): every figure exact.

The rows are inserted directly, not through the pipeline, so the report is
tested against the definitions alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.api.reports import ReportRoutes, parse_priorities, parse_time
from daemon.api.responses import errors_middleware
from daemon.errors import InvalidInput
from daemon.itsm.reports import SummaryQuery, percentile, stats, summary
from daemon.store import Store
from daemon.store import reports as report_store
from daemon.store.tables import (
    alerts,
    change_alerts,
    change_incidents,
    changes,
    incident_alerts,
    incidents,
    sla_clocks,
    timeline,
)
from tests.conftest import FakeClock

SINCE = datetime(2026, 11, 20, tzinfo=UTC)
UNTIL = datetime(2026, 11, 27, tzinfo=UTC)
H = timedelta(hours=1)
S = timedelta(seconds=1)
Client = TestClient  # type: ignore[type-arg]


class Seed:
    """Direct inserts into the tables the report reads."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.alerts = 0

    async def incident(self, created: datetime, *, status: str = "triggered",
                       priority: str | None = None, services: Sequence[str] = (),
                       ack: float | None = None, resolved: float | None = None,
                       merged_into: int | None = None) -> int:
        result = await self.conn.execute(sa.insert(incidents).returning(incidents.c.id), {
            "title": "t", "status": status, "severity": "error", "group_key": "g",
            "created_at": created, "priority": priority, "impacted_services": list(services),
            "acknowledged_at": None if ack is None else created + timedelta(seconds=ack),
            "resolved_at": None if resolved is None else created + timedelta(seconds=resolved),
            "merged_into": merged_into,
        })
        return int(result.scalar_one())

    async def alert(self, first_seen: datetime, *incident_ids: int) -> int:
        self.alerts += 1
        result = await self.conn.execute(sa.insert(alerts).returning(alerts.c.id), {
            "source": "generic", "integration": "generic", "fingerprint": f"fp{self.alerts}",
            "status": "firing", "severity": "error", "summary": "s", "labels": {},
            "annotations": {}, "starts_at": first_seen, "group_key": "g",
            "first_seen": first_seen, "last_seen": first_seen,
        })
        alert_id = int(result.scalar_one())
        for incident_id in incident_ids:
            await self.conn.execute(sa.insert(incident_alerts), {
                "incident_id": incident_id, "alert_id": alert_id, "role": "member",
                "added_at": first_seen})
        return alert_id

    async def clock(self, incident_id: int, clock: str, state: str) -> None:
        await self.conn.execute(sa.insert(sla_clocks), {
            "incident_id": incident_id, "clock": clock, "policy": "default", "priority": "P3",
            "target_seconds": 3600, "started_at": SINCE, "state": state})

    async def event(self, incident_id: int, kind: str) -> None:
        await self.conn.execute(sa.insert(timeline), {
            "incident_id": incident_id, "at": SINCE, "actor": "test", "kind": kind,
            "detail": {}})

    async def change(self, occurred: datetime, *, state: str = "completed",
                     outcome: str | None = None, suspected_of: Sequence[int] = (),
                     maintenance_of: Sequence[int] = ()) -> int:
        result = await self.conn.execute(sa.insert(changes).returning(changes.c.id), {
            "integration": "generic", "summary": "deploy", "occurred_at": occurred,
            "received_at": occurred, "details": {}, "links": [], "state": state,
            "outcome": outcome})
        change_id = int(result.scalar_one())
        for incident_id in suspected_of:
            await self.conn.execute(sa.insert(change_incidents), {
                "change_id": change_id, "incident_id": incident_id, "linked_at": occurred})
        for alert_id in maintenance_of:
            await self.conn.execute(sa.insert(change_alerts), {
                "change_id": change_id, "alert_id": alert_id, "linked_at": occurred})
        return change_id


async def seed_world(store: Store) -> dict[str, int]:
    """Six incidents in range (plus a merged one and two just outside), their clocks, timeline,
    alerts and the week's changes. The expected figures are worked out in the tests."""
    async with store.write() as conn:
        s = Seed(conn)
        i1 = await s.incident(SINCE, status="resolved", priority="P1",  # at since: included
                              services=["checkout"], ack=60, resolved=600)
        i2 = await s.incident(SINCE + H, status="closed", priority="P1",
                              services=["checkout", "search"], ack=120, resolved=1200)
        i3 = await s.incident(SINCE + 2 * H, status="acknowledged", priority="P2",
                              services=["search"], ack=300)
        i4 = await s.incident(SINCE + 3 * H, priority="P3")
        i5 = await s.incident(SINCE + 4 * H, status="resolved", services=["checkout"],
                              ack=30, resolved=60)
        i9 = await s.incident(SINCE + 6 * H, status="on_hold", priority="P4",
                              services=["payments"], ack=900)
        merged = await s.incident(SINCE + 5 * H, status="closed", priority="P2",
                                  services=["checkout"], ack=10, resolved=20, merged_into=i1)
        at_until = await s.incident(UNTIL, priority="P1", services=["checkout"], ack=5)
        before = await s.incident(SINCE - S, priority="P1", services=["checkout"], ack=5)

        for incident_id, response, resolution in [
            (i1, "met", "met"), (i2, "breached", "met"), (i3, "met", "running"),
            (i4, "running", "breached"), (i5, "cancelled", "cancelled"),
            (i9, "met", "breached"), (merged, "breached", "breached"),
            (at_until, "breached", "breached"), (before, "breached", "breached"),
        ]:
            await s.clock(incident_id, "response", response)
            await s.clock(incident_id, "resolution", resolution)

        for incident_id, kind in [(i1, "reopened"), (i1, "reopened"), (i3, "reopened"),
                                  (i4, "acknowledged"), (merged, "reopened"),
                                  (at_until, "reopened"), (before, "reopened")]:
            await s.event(incident_id, kind)

        await s.alert(SINCE, i1, i2)  # on two incidents: one alert
        await s.alert(SINCE, i1)
        await s.alert(SINCE + H, i2)
        await s.alert(SINCE + H, i3)
        await s.alert(SINCE + H, i5)
        await s.alert(SINCE + H, merged)
        await s.alert(UNTIL, at_until)
        # Under maintenance: counted when in no incident and first seen in [since, until).
        quiet = [await s.alert(SINCE + 24 * H), await s.alert(SINCE + 48 * H),
                 await s.alert(SINCE)]
        in_incident = await s.alert(SINCE + 48 * H, i4)
        late = await s.alert(UNTIL)
        early = await s.alert(SINCE - S)
        await s.alert(SINCE + 24 * H)  # in no incident but under no change either

        await s.change(SINCE + H, outcome="successful",
                       maintenance_of=[*quiet, in_incident, late, early])
        await s.change(SINCE + 2 * H, outcome="failed")
        await s.change(SINCE + 3 * H, outcome="successful", suspected_of=[i4])
        await s.change(SINCE + 4 * H, outcome="backed_out", suspected_of=[i3])
        await s.change(SINCE, state="in_progress")  # at since: included, no outcome yet
        await s.change(UNTIL, outcome="failed")
        await s.change(SINCE - S, outcome="failed")
        await s.change(SINCE + H, state="cancelled", outcome="failed")
        await s.change(SINCE + H, state="rejected", suspected_of=[i1])
        await s.change(SINCE + H, state="requested")
    return {"i1": i1, "i2": i2, "i3": i3, "i4": i4, "i5": i5, "i9": i9}


async def report(store: Store, *, service: str | None = None, priorities: tuple[str, ...] = (),
                 since: datetime = SINCE, until: datetime = UNTIL) -> dict[str, Any]:
    async with store.read() as conn:
        return await summary(conn, SummaryQuery(since=since, until=until, service=service,
                                                priorities=priorities))


CHANGES = {"total": 5, "with_incident": 2, "success_rate": 0.4, "failed": 2}


async def test_whole_week(store: Store) -> None:
    await seed_world(store)
    body = await report(store)
    assert body["since"] == "2026-11-20T00:00:00Z"
    assert body["until"] == "2026-11-27T00:00:00Z"
    assert body["filters"] == {"service": None, "priority": None}
    assert body["incidents"] == {
        "total": 6,
        "by_status": {"triggered": 1, "acknowledged": 1, "on_hold": 1, "resolved": 2,
                      "closed": 1},
        "by_priority": {"P1": 2, "P2": 1, "P3": 1, "P4": 1, "P5": 0, "none": 1},
    }
    # acks 60, 120, 300, 30, 900 → sorted 30 60 120 300 900: p50 = 3rd, p90 = 5th
    assert body["mtta_seconds"] == {"count": 5, "mean": 282.0, "p50": 120.0, "p90": 900.0}
    # resolves 600, 1200, 60 → sorted 60 600 1200: p50 = 2nd, p90 = 3rd
    assert body["mttr_seconds"] == {"count": 3, "mean": 620.0, "p50": 600.0, "p90": 1200.0}
    assert body["sla"] == {
        "response": {"met": 3, "breached": 1, "running": 1, "compliance": 0.75},
        "resolution": {"met": 2, "breached": 2, "running": 1, "compliance": 0.5},
    }
    assert body["reopen_rate"] == pytest.approx(2 / 6)  # i1 (twice) and i3
    # linked: 5 alerts on i1/i2/i3/i5 + the maintenance alert that joined i4; suppressed: 3
    assert body["alerts"] == {"total": 6, "per_incident": 1.0, "suppressed_by_maintenance": 3,
                              "noise_reduction": pytest.approx(1 - 6 / 9)}
    # 5 judged; c3, c4 suspected; c2, c4 failed → 2 clean of 5
    assert body["changes"] == CHANGES


async def test_service_filter_matches_inside_the_json_list(store: Store) -> None:
    await seed_world(store)
    body = await report(store, service="checkout")
    assert body["filters"] == {"service": "checkout", "priority": None}
    assert body["incidents"] == {
        "total": 3,  # i1, i2, i5 (the merged one and those outside the range are not)
        "by_status": {"triggered": 0, "acknowledged": 0, "on_hold": 0, "resolved": 2,
                      "closed": 1},
        "by_priority": {"P1": 2, "P2": 0, "P3": 0, "P4": 0, "P5": 0, "none": 1},
    }
    assert body["mtta_seconds"] == {"count": 3, "mean": 70.0, "p50": 60.0, "p90": 120.0}
    assert body["mttr_seconds"] == {"count": 3, "mean": 620.0, "p50": 600.0, "p90": 1200.0}
    assert body["sla"] == {
        "response": {"met": 1, "breached": 1, "running": 0, "compliance": 0.5},
        "resolution": {"met": 2, "breached": 0, "running": 0, "compliance": 1.0},
    }
    assert body["reopen_rate"] == pytest.approx(1 / 3)
    # Suppressed alerts have no service: a filtered report counts none.
    assert body["alerts"] == {"total": 4, "per_incident": pytest.approx(4 / 3),
                              "suppressed_by_maintenance": 0, "noise_reduction": 0.25}
    assert body["changes"] == CHANGES

    search = await report(store, service="search")
    assert search["incidents"]["total"] == 2  # i2 lists it second
    assert (await report(store, service="check"))["incidents"]["total"] == 0  # no substrings


async def test_priority_filter(store: Store) -> None:
    await seed_world(store)
    body = await report(store, priorities=("P1", "P2"))
    assert body["filters"] == {"service": None, "priority": ["P1", "P2"]}
    assert body["incidents"]["total"] == 3  # i1, i2, i3; the merged P2 is not counted
    assert body["incidents"]["by_priority"] == {"P1": 2, "P2": 1, "P3": 0, "P4": 0, "P5": 0,
                                                "none": 0}
    assert body["mtta_seconds"] == {"count": 3, "mean": 160.0, "p50": 120.0, "p90": 300.0}
    # 600, 1200: p50 = 1st (⌈1⌉), p90 = 2nd (⌈1.8⌉)
    assert body["mttr_seconds"] == {"count": 2, "mean": 900.0, "p50": 600.0, "p90": 1200.0}
    assert body["sla"]["resolution"] == {"met": 2, "breached": 0, "running": 1,
                                         "compliance": 1.0}
    assert body["reopen_rate"] == pytest.approx(2 / 3)
    assert body["alerts"]["total"] == 4
    assert body["alerts"]["suppressed_by_maintenance"] == 0

    both = await report(store, service="search", priorities=("P2",))
    assert both["incidents"]["total"] == 1  # i3
    assert both["mtta_seconds"] == {"count": 1, "mean": 300.0, "p50": 300.0, "p90": 300.0}


async def test_empty_scope_gives_nulls_not_errors(store: Store) -> None:
    await seed_world(store)
    nothing = {"count": 0, "mean": None, "p50": None, "p90": None}
    none_sla = {"met": 0, "breached": 0, "running": 0, "compliance": None}

    filtered = await report(store, service="checkout", priorities=("P5",))
    assert filtered["incidents"]["total"] == 0
    assert filtered["mtta_seconds"] == nothing
    assert filtered["sla"] == {"response": none_sla, "resolution": none_sla}
    assert filtered["reopen_rate"] is None
    assert filtered["alerts"] == {"total": 0, "per_incident": None,
                                  "suppressed_by_maintenance": 0, "noise_reduction": None}

    a_year_ago = await report(store, since=SINCE - timedelta(days=365),
                              until=SINCE - timedelta(days=358))
    assert a_year_ago["incidents"]["by_status"] == dict.fromkeys(
        ["triggered", "acknowledged", "on_hold", "resolved", "closed"], 0)
    assert a_year_ago["mttr_seconds"] == nothing
    assert a_year_ago["changes"] == {"total": 0, "with_incident": 0, "success_rate": None,
                                     "failed": 0}


async def test_range_boundaries(store: Store) -> None:
    await seed_world(store)
    # Two seconds around since: i1 (created at since) and the one a second before.
    body = await report(store, since=SINCE - S, until=SINCE + S)
    assert body["incidents"]["total"] == 2
    assert body["mtta_seconds"]["count"] == 2
    assert body["alerts"]["suppressed_by_maintenance"] == 2  # first seen at since, and before
    assert body["changes"]["total"] == 2  # at since, and the failed one just before
    assert body["changes"]["failed"] == 1
    body = await report(store, since=UNTIL, until=UNTIL + S)
    assert body["incidents"]["total"] == 1
    assert body["alerts"]["suppressed_by_maintenance"] == 1
    assert body["changes"] == {"total": 1, "with_incident": 0, "success_rate": 0.0,
                               "failed": 1}


async def test_id_lists_are_chunked(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same figures when the ids go out in many small chunks, an alert shared across two."""
    await seed_world(store)
    whole = await report(store)
    monkeypatch.setattr(report_store, "CHUNK", 1)
    assert await report(store) == whole


def test_nearest_rank_percentiles() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([float(v) for v in range(1, 11)], 90) == 9.0
    assert percentile([7.0], 90) == 7.0
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 7) == 7.0  # 0.07 * 100 is 7.000000000000001 in floats
    assert stats([4.0, 1.0, 3.0, 2.0]) == {"count": 4, "mean": 2.5, "p50": 2.0, "p90": 4.0}


def test_parameter_parsing() -> None:
    assert parse_time("since", "2026-11-20T01:30:00.5+01:30") == datetime(
        2026, 11, 20, 0, 0, 0, 500000, tzinfo=UTC)
    assert parse_time("since", "2026-11-20T01:00:00 01:00") == SINCE  # `+` decoded as a space
    assert parse_time("until", None) is None
    assert parse_priorities("P3, P1,P3") == ("P1", "P3")
    for raw in ("2026-11-20", "2026-11-20T00:00:00", "yesterday", "2026-13-01T00:00:00Z",
                "2026-11-20T00:00:60Z", "0001-01-01T00:00:00+01:00"):
        with pytest.raises(InvalidInput) as err:
            parse_time("until", raw)
        assert err.value.errors[0]["field"] == "until"


@pytest.fixture
async def client(store: Store, clock: FakeClock) -> AsyncIterator[Client]:
    app = web.Application(middlewares=[errors_middleware])
    app.add_routes(ReportRoutes(store=store, clock=clock).routes())
    async with TestClient(TestServer(app)) as c:
        yield c


@pytest.mark.parametrize(("query", "field"), [
    ({"since": "last week"}, "since"),
    ({"until": "2026-11-27"}, "until"),
    ({"until": "2026-11-27T00:00:00"}, "until"),  # no offset: which zone?
    ({"since": "2026-11-27T00:00:00Z", "until": "2026-11-27T00:00:00Z"}, "since"),
    ({"since": "2026-11-28T00:00:00Z", "until": "2026-11-27T00:00:00Z"}, "since"),
    ({"since": "2026-11-26T12:00:00Z"}, "since"),  # until defaults to now: the clock's 12:00
    ({"until": "0001-01-02T00:00:00Z"}, "until"),  # no 7 days before it
    ({"priority": "P6"}, "priority"),
    ({"priority": "P1,high"}, "priority"),
    ({"priority": "p1"}, "priority"),
])
async def test_bad_parameters_are_400_naming_the_field(
        client: Client, query: dict[str, str], field: str) -> None:
    resp = await client.get("/api/v1/reports/summary", params=query)
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["code"] == "invalid_input"
    assert [e["field"] for e in error["errors"]] == [field]


async def test_summary_over_http(client: Client, store: Store, clock: FakeClock) -> None:
    await seed_world(store)
    clock.current = UNTIL
    resp = await client.get("/api/v1/reports/summary")  # default: the 7 days up to now
    assert resp.status == 200
    body = await resp.json()
    assert (body["since"], body["until"]) == ("2026-11-20T00:00:00Z", "2026-11-27T00:00:00Z")
    assert body["incidents"]["total"] == 6
    assert body["changes"] == CHANGES

    resp = await client.get("/api/v1/reports/summary", params={
        "since": "2026-11-20T01:00:00+01:00", "until": "2026-11-27T00:00:00Z",
        "service": "checkout", "priority": "P2,P1"})
    assert resp.status == 200
    body = await resp.json()
    assert body["since"] == "2026-11-20T00:00:00Z"
    assert body["filters"] == {"service": "checkout", "priority": ["P1", "P2"]}
    assert body["incidents"]["total"] == 2  # i1, i2
    assert body["mtta_seconds"] == {"count": 2, "mean": 90.0, "p50": 60.0, "p90": 120.0}
