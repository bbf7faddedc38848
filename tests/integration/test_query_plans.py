"""The ingest's reads seek through indexes on SQLite, whose planner has no statistics
to go by, and on a PostgreSQL never analysed (autovacuum off, or a burst before it
ran): a plan that scans a table passes every functional test and shows only as a
batch that grows slower with every alert ever stored. These look at the plans."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.models import Alert
from daemon.store import Store, migrate
from daemon.store import alerts as alert_store
from daemon.store import incidents as incident_store
from daemon.store.link_memory import LinkMemory
from tests.integration.test_correlation_scenarios import alert

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)


async def sent_by(store: Store, call: Callable[[AsyncConnection], Awaitable[Any]], *,
                  selects_only: bool = False) -> list[tuple[str, Any]]:
    """The statements `call` sends in a write transaction, with their parameters."""
    sent: list[tuple[str, Any]] = []

    def keep(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if not selects_only or statement.lstrip().upper().startswith("SELECT"):
            sent.append((statement, parameters))

    engine = store.writer_engine.sync_engine
    sa.event.listen(engine, "before_cursor_execute", keep)
    try:
        async with store.write() as conn:
            await call(conn)
    finally:
        sa.event.remove(engine, "before_cursor_execute", keep)
    return sent


async def plans_of(store: Store, call: Callable[[AsyncConnection], Awaitable[Any]]
                   ) -> list[str]:
    """The query plan of every SELECT `call` sends, as SQLite describes it."""
    details = []
    async with store.read() as conn:
        for statement, parameters in await sent_by(store, call, selects_only=True):
            rows = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
            details.extend(str(row[-1]) for row in rows)
    return details


def scans(details: list[str]) -> list[str]:
    """Full scans of a table (a SCAN of a few constant rows or of an index is fine)."""
    return [d for d in details if d.startswith("SCAN ") and "CONSTANT ROWS" not in d
            and "COVERING INDEX" not in d]


async def sqlite_store(tmp_path: Path) -> Store:
    store = Store.open(f"sqlite+aiosqlite:///{tmp_path}/plans.db")
    await migrate.upgrade(store)
    return store


def some(n: int) -> list[Alert]:
    return [alert(f"fp-{i}", f"app-{i % 7}" if i % 3 else None) for i in range(n)]


async def test_the_identity_reads_seek_their_alerts(tmp_path: Path) -> None:
    store = await sqlite_store(tmp_path)
    try:
        async with store.write() as conn:
            stored = await alert_store.upsert_firing(conn, some(30), NOW)
        new = list(zip(some(3), [s.id for s in stored[:3]], strict=True))
        keys = [(a.source, a.fingerprint) for a in some(5)]
        details = await plans_of(store, lambda conn: alert_store.earlier_firings(
            conn, new, since=NOW - timedelta(hours=1)))
        details += await plans_of(store, lambda conn: alert_store.resolve_firing(
            conn, [alert(f"fp-{i}", None, status="resolved") for i in range(3)], NOW))
        details += await plans_of(store, lambda conn: alert_store.firing_incident_ids(
            conn, keys))
        assert details
        assert scans(details) == []
        assert not any("ix_alerts_status_id" in d for d in details), details
    finally:
        await store.close()


async def test_the_correlator_reads_only_the_open_incidents(tmp_path: Path) -> None:
    store = await sqlite_store(tmp_path)
    try:
        details = await plans_of(store, lambda conn: incident_store.open_incident_cis(
            conn, since=NOW, links=LinkMemory()))
        assert any("ix_incidents_last_alert_at" in d for d in details), details
        assert not any("alerts" in d.split(" USING")[0] for d in details), details
    finally:
        await store.close()


async def _analysed_never(pg_store: Store) -> None:
    """100,000 alerts in 2,000 incidents on a database never analysed (autovacuum off)."""
    async with pg_store.write() as conn:
        await conn.exec_driver_sql(
            "INSERT INTO alerts (source, integration, fingerprint, status, severity, summary,"
            " labels, annotations, starts_at, group_key, first_seen, last_seen, ci_id)"
            " SELECT 'alertmanager', 'am', 'fp-' || n, 'firing', 'error', 's', '{}', '{}',"
            " $1, 'g', $1, $1, 'ci-' || (n % 5000) FROM generate_series(1, 100000) AS n",
            (NOW,))
        await conn.exec_driver_sql(
            "INSERT INTO incidents (title, status, severity, group_key, created_at,"
            " priority_manual) SELECT 't', 'triggered', 'error', 'g' || n, $1, false"
            " FROM generate_series(1, 2000) AS n", (NOW,))
        await conn.exec_driver_sql(
            "INSERT INTO incident_alerts (incident_id, alert_id, role, added_at)"
            " SELECT 1 + (n % 2000), n, 'symptom', $1 FROM generate_series(1, 100000) AS n",
            (NOW,))


async def pg_plans_of(store: Store, call: Callable[[AsyncConnection], Awaitable[Any]]
                      ) -> list[str]:
    """`EXPLAIN` of every statement `call` sends (PostgreSQL)."""
    sent = await sent_by(store, call)
    async with store.read() as conn:
        return ["\n".join(r[0] for r in await conn.exec_driver_sql(
            "EXPLAIN " + statement, parameters)) for statement, parameters in sent]


async def test_link_summaries_look_up_each_linked_alert_on_postgresql(pg_store: Store) -> None:
    # As a plain join, the planner of a database never analysed hashed every alert
    # (25 ms at 100,000 alerts, for a few incidents).
    from daemon.store.link_memory import read_summaries

    await _analysed_never(pg_store)
    [plan] = await pg_plans_of(pg_store, lambda conn: read_summaries(conn, [5, 17, 300]))
    assert "Seq Scan on alerts" not in plan, plan
    assert "Index Scan using pk_alerts on alerts" in plan, plan


async def test_alerts_seen_finds_their_incidents_from_the_alerts_on_postgresql(
        pg_store: Store) -> None:
    # `id IN (subquery)` probed the links of every incident, one by one (11 ms at 2,000).
    await _analysed_never(pg_store)
    [plan] = await pg_plans_of(
        pg_store, lambda conn: incident_store.alerts_seen(conn, [5, 77, 9000], NOW))
    assert "Index Scan using pk_incident_alerts" not in plan, plan
    assert "ix_incident_alerts_alert_id" in plan, plan


async def test_roles_of_an_incident_whose_root_moved_seek_its_alerts_on_postgresql(
        pg_store: Store) -> None:
    # Joined plainly, the planner hashed every alert (17 ms at 100,000 alerts).
    await _analysed_never(pg_store)
    plans = await pg_plans_of(
        pg_store, lambda conn: incident_store.set_roles(conn, [5, 17], settled=[17],
                                                        added_at=NOW))
    assert len(plans) == 2
    for plan in plans:
        assert "Seq Scan on alerts" not in plan, plan
