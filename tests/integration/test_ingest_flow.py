"""The pipeline against a real store, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from daemon.errors import InvalidTransition, NotFound, Overloaded
from daemon.ingest import IngestWriter
from daemon.itsm import incidents
from daemon.models import Alert, AlertStatus, Incident, IncidentStatus, Severity, TimelineKind
from daemon.store import Store, gauges, migrate
from daemon.store import alerts as alert_store
from daemon.store import incidents as incident_store
from tests.conftest import FakeClock, make_pipeline


def alert(fp: str, *, status: str = "firing", group: str = "g1",
          severity: Severity = Severity.ERROR, summary: str | None = None) -> Alert:
    return Alert(
        source="alertmanager", integration="alertmanager", fingerprint=fp,
        status=AlertStatus(status), severity=severity, summary=summary or f"{fp} is down",
        labels={"alertname": fp}, annotations={"summary": summary or f"{fp} is down"},
        starts_at=datetime(2026, 11, 26, 11, 0, tzinfo=UTC), ends_at=None,
        generator_url=None, group_key=group,
    )


async def ingest(store: Store, clock: FakeClock, *batch: Alert) -> None:
    async with store.write() as conn:
        await make_pipeline(clock).process(conn, batch)


async def all_incidents(store: Store) -> list[Incident]:
    async with store.read() as conn:
        items = await incident_store.list_incidents(conn, statuses=None, limit=100, before_id=None)
    return list(reversed(items))


async def detail(store: Store, incident_id: int) -> Incident:
    async with store.read() as conn:
        found = await incident_store.get_incident(conn, incident_id)
    assert found is not None
    return found


async def test_schema_is_at_head(store: Store) -> None:
    assert await migrate.is_current(store)


async def test_new_alert_opens_one_incident_and_repeats_only_count(
    store: Store, clock: FakeClock
) -> None:
    await ingest(store, clock, alert("a", severity=Severity.CRITICAL))
    clock.advance(30)
    await ingest(store, clock, alert("a"))
    await ingest(store, clock, replace(alert("a"), annotations={"summary": "still down"}))
    [inc] = await all_incidents(store)
    assert (inc.key, inc.status, inc.severity) == ("INC-000001", IncidentStatus.TRIGGERED,
                                                   Severity.CRITICAL)
    assert inc.title == "a is down"
    [member] = inc.alerts
    assert (member.occurrences, member.role) == (3, "unbound")
    assert member.annotations == {"summary": "still down"}
    assert member.last_seen == clock.now()


async def test_group_members_join_and_incident_resolves_when_all_clear(
    store: Store, clock: FakeClock
) -> None:
    await ingest(store, clock, alert("a"), alert("b"))
    await ingest(store, clock, alert("c"))
    [inc] = await all_incidents(store)
    assert [(a.fingerprint, a.role) for a in inc.alerts] == [
        ("a", "unbound"), ("b", "unbound"), ("c", "unbound")]
    await ingest(store, clock, alert("a", status="resolved"), alert("b", status="resolved"))
    assert (await detail(store, inc.id)).status is IncidentStatus.TRIGGERED
    clock.advance(60)
    await ingest(store, clock, alert("c", status="resolved"))
    done = await detail(store, inc.id)
    assert done.status is IncidentStatus.RESOLVED
    assert done.resolved_at == clock.now()
    kinds = [e.kind for e in done.timeline]
    assert kinds == [TimelineKind.OPENED, TimelineKind.ALERT_ATTACHED, TimelineKind.ALERT_RESOLVED,
                     TimelineKind.ALERT_RESOLVED, TimelineKind.ALERT_RESOLVED,
                     TimelineKind.RESOLVED]
    assert done.timeline[-1].detail == {"reason": "all alerts resolved"}


async def test_separate_groups_open_separate_incidents(store: Store, clock: FakeClock) -> None:
    await ingest(store, clock, alert("a", group="g1"), alert("b", group="g2"))
    assert [len(i.alerts) for i in await all_incidents(store)] == [1, 1]


async def test_fire_and_resolve_in_one_batch_opens_and_resolves(
    store: Store, clock: FakeClock
) -> None:
    await ingest(store, clock, alert("a"), alert("a", status="resolved"), alert("a"))
    [inc] = await all_incidents(store)  # opened, resolved, reopened
    assert inc.status is IncidentStatus.TRIGGERED and len(inc.alerts) == 2


async def test_resolve_for_unknown_alert_is_harmless(store: Store, clock: FakeClock) -> None:
    await ingest(store, clock, alert("ghost", status="resolved"))
    await ingest(store, clock, alert("ghost", status="resolved"))
    assert await all_incidents(store) == []


async def test_alert_firing_again_within_the_window_reopens_after_it_opens_anew(
    store: Store, clock: FakeClock
) -> None:
    await ingest(store, clock, alert("a"))
    await ingest(store, clock, alert("a", status="resolved"))
    clock.advance(3599)
    await ingest(store, clock, alert("a"))  # within the reopen window (1 h)
    [inc] = await all_incidents(store)
    assert (inc.status, inc.resolved_at, len(inc.alerts)) == (IncidentStatus.TRIGGERED, None, 2)
    assert detail_kinds(await detail(store, inc.id))[-2:] == [TimelineKind.REOPENED,
                                                              TimelineKind.ALERT_ATTACHED]
    await ingest(store, clock, alert("a", status="resolved"))
    clock.advance(3601)
    await ingest(store, clock, alert("a"))  # after the window: a new incident
    first, second = await all_incidents(store)
    assert (first.status, second.status) == (IncidentStatus.RESOLVED, IncidentStatus.TRIGGERED)


def detail_kinds(incident: Incident) -> list[TimelineKind]:
    return [e.kind for e in incident.timeline]


async def test_acknowledge_then_resolve_by_hand_with_timeline(
    store: Store, clock: FakeClock
) -> None:
    await ingest(store, clock, alert("a"))
    [inc] = await all_incidents(store)
    clock.advance(120)
    async with store.write() as conn:
        t = await incidents.move(conn, inc.id, "acknowledge", actor="alice", note="on it",
                                 now=clock.now())
    assert (t.previous, t.incident.status) == (IncidentStatus.TRIGGERED,
                                               IncidentStatus.ACKNOWLEDGED)
    async with store.write() as conn:  # a second one moves nothing and names the first
        again = await incidents.move(conn, inc.id, "acknowledge", actor="bob", note=None,
                                     now=clock.now())
    assert again.already is not None and again.already.actor == "alice"
    assert again.already.at == t.incident.acknowledged_at
    clock.advance(60)
    async with store.write() as conn:
        await incidents.move(conn, inc.id, "resolve", actor="alice", note=None, now=clock.now())
    done = await detail(store, inc.id)
    assert done.status is IncidentStatus.RESOLVED
    assert [a.status for a in done.alerts] == [AlertStatus.RESOLVED]
    assert [(e.kind, e.actor) for e in done.timeline[1:]] == [
        (TimelineKind.ACKNOWLEDGED, "alice"), (TimelineKind.RESOLVED, "alice")]
    assert done.timeline[1].detail == {"note": "on it"}
    with pytest.raises(InvalidTransition, match="resolved only from triggered or acknowledged"):
        async with store.write() as conn:
            await incidents.move(conn, inc.id, "resolve", actor="bob", note=None, now=clock.now())
    # the alert fires again after a manual resolve: not a silent duplicate but a
    # reopening (within the window) with the new alert attached
    await ingest(store, clock, alert("a"))
    [inc] = await all_incidents(store)
    assert inc.status is IncidentStatus.TRIGGERED and len(inc.alerts) == 2


async def test_unknown_incident_is_not_found(store: Store, clock: FakeClock) -> None:
    with pytest.raises(NotFound):
        async with store.write() as conn:
            await incidents.move(conn, 999, "acknowledge", actor="x", note=None, now=clock.now())


async def test_listing_pages_and_filters(store: Store, clock: FakeClock) -> None:
    await ingest(store, clock, *(alert(f"a{i}", group=f"g{i}") for i in range(5)))
    async with store.write() as conn:
        await incidents.move(conn, 2, "acknowledge", actor="x", note=None, now=clock.now())
    async with store.read() as conn:
        page1 = await incident_store.list_incidents(conn, statuses=None, limit=3, before_id=None)
        page2 = await incident_store.list_incidents(conn, statuses=None, limit=3,
                                                    before_id=page1[-1].id)
        acked = await incident_store.list_incidents(
            conn, statuses=[IncidentStatus.ACKNOWLEDGED], limit=10, before_id=None)
        open_now = await gauges.open_incidents(conn)
        alerts_page = await alert_store.list_alerts(conn, status=AlertStatus.FIRING, limit=10,
                                                    before_id=None)
    assert [i.id for i in page1] == [5, 4, 3]
    assert [i.id for i in page2] == [2, 1]
    assert [i.id for i in acked] == [2]
    assert sorted(open_now) == [(1, "P3", "triggered"), (2, "P3", "acknowledged"),
                                (3, "P3", "triggered"), (4, "P3", "triggered"),
                                (5, "P3", "triggered")]
    assert len(alerts_page) == 5


async def test_writer_commits_concurrent_requests_in_shared_batches(
    store: Store, clock: FakeClock
) -> None:
    import asyncio

    writer = IngestWriter(store=store, pipeline=make_pipeline(clock), max_queued_alerts=10_000,
                          max_batch_alerts=500, retry_after_seconds=3)
    writer.start()
    await asyncio.gather(*(writer.submit([alert(f"x{i}", group=f"g{i % 7}")])
                           for i in range(200)))
    await writer.stop()
    incs = await all_incidents(store)
    assert len(incs) == 7
    assert sum(len(i.alerts) for i in incs) == 200


async def test_writer_refuses_beyond_its_bound_and_while_closing(
    store: Store, clock: FakeClock
) -> None:
    import asyncio

    writer = IngestWriter(store=store, pipeline=make_pipeline(clock), max_queued_alerts=3,
                          max_batch_alerts=10, retry_after_seconds=7)
    first = asyncio.create_task(writer.submit([alert("a"), alert("b")]))
    await asyncio.sleep(0)
    with pytest.raises(Overloaded) as err:
        await writer.submit([alert("c"), alert("d")], overload_status=429)
    assert (err.value.status, err.value.retry_after) == (429, 7)
    await writer.run_until_idle()  # burst mode: commit what is queued, return
    await first
    await writer.stop()
    with pytest.raises(Overloaded):
        await writer.submit([alert("e")])
    assert len((await all_incidents(store))[0].alerts) == 2


async def test_a_request_that_breaks_its_batch_fails_alone(
    store: Store, clock: FakeClock
) -> None:
    import asyncio

    writer = IngestWriter(store=store, pipeline=make_pipeline(clock), max_queued_alerts=100,
                          max_batch_alerts=100, retry_after_seconds=1)
    # A value no receiver lets through any more: the store refuses naive times.
    broken = replace(alert("bad"), starts_at=datetime(2026, 1, 1))
    submits = [writer.submit([alert("a")]), writer.submit([broken]), writer.submit([alert("b")])]
    tasks = [asyncio.create_task(s) for s in submits]
    await asyncio.sleep(0)
    writer.start()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    await writer.stop()
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], Exception)
    assert sorted(a.fingerprint for i in await all_incidents(store) for a in i.alerts) == ["a", "b"]


def _commits() -> float:
    from daemon.metrics import REGISTRY

    return REGISTRY.get_sample_value("incidentd_ingest_batch_alerts_count") or 0.0


async def test_senders_answered_together_are_committed_together(
    store: Store, clock: FakeClock
) -> None:
    """Closed-loop senders come back at slightly different moments; the writer waits
    briefly for them instead of splitting them over two batches, each with its cost."""
    import asyncio

    writer = IngestWriter(store=store, pipeline=make_pipeline(clock), max_queued_alerts=100,
                          max_batch_alerts=100, retry_after_seconds=1)

    async def sender(n: int) -> None:
        for round_ in range(6):
            await writer.submit([alert(f"s{n}-{round_}", group=f"g{n}")])
            for _ in range(n):  # the network: each back a few turns of the loop later
                await asyncio.sleep(0)

    writer.start()
    before = _commits()
    await asyncio.gather(*(sender(n) for n in range(8)))
    await writer.stop()
    # Round one may be split (nothing was known of the senders yet); after that, one
    # commit a round.
    assert _commits() - before <= 6 + 1
    assert sum(len(i.alerts) for i in await all_incidents(store)) == 48


async def test_a_lone_sender_is_not_kept_waiting(
    store: Store, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    import daemon.ingest

    # A wait would hang the test.
    monkeypatch.setattr(daemon.ingest, "GATHER_SECONDS", 600.0)
    monkeypatch.setattr(daemon.ingest, "GATHER_PAUSE_SECONDS", 600.0)
    writer = IngestWriter(store=store, pipeline=make_pipeline(clock), max_queued_alerts=100,
                          max_batch_alerts=100, retry_after_seconds=1)
    writer.start()

    async def alone() -> None:
        for round_ in range(3):
            await writer.submit([alert(f"lone-{round_}")])

    await asyncio.wait_for(alone(), timeout=30)
    await writer.stop()


async def test_senders_that_stop_coming_are_not_waited_for(
    store: Store, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight senders, then only one goes on (or independent senders arriving at random):
    a pause in arrivals ends the wait, however long the writer would wait for all."""
    import asyncio

    import daemon.ingest

    monkeypatch.setattr(daemon.ingest, "GATHER_SECONDS", 600.0)  # only a pause ends it
    writer = IngestWriter(store=store, pipeline=make_pipeline(clock), max_queued_alerts=100,
                          max_batch_alerts=100, retry_after_seconds=1)
    writer.start()
    await asyncio.gather(*(writer.submit([alert(f"first-{n}", group=f"g{n}")])
                           for n in range(8)))

    async def one_goes_on() -> None:
        for round_ in range(3):
            await writer.submit([alert(f"on-{round_}")])

    await asyncio.wait_for(one_goes_on(), timeout=30)
    await writer.stop()
