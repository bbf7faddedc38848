"""The dedup upsert (SQLite: the batch as one JSON array; PostgreSQL: one array per
column, unnested) stores and updates the same values on both, and sends one text
whatever the batch's size (prepared once)."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from daemon.models import Alert, AlertStatus, Link, Severity
from daemon.store import Store
from daemon.store.alerts import earlier_firings, upsert_firing
from daemon.store.tables import alerts

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def full(fp: str, *, summary: str = "disk full", ends_at: datetime | None = None) -> Alert:
    return Alert(
        source="alertmanager", integration="am-prod", fingerprint=fp,
        status=AlertStatus.FIRING, severity=Severity.CRITICAL, summary=summary,
        labels={"alertname": "DiskFull", "instance": "db-1:9100", "note": "ünïcode \"q\""},
        annotations={"description": "95 % used"},
        # Not UTC: stored as the same instant.
        starts_at=datetime(2026, 11, 27, 13, 0, tzinfo=timezone(timedelta(hours=1))),
        ends_at=ends_at, generator_url=None, group_key="am:{}:{alertname=\"DiskFull\"}",
        ci_id="db-1", links=(Link(href="https://grafana/d/1", text="Dashboard"),),
        details={"values": {"B": 95.2}, "tags": ["a", "b"]},
    )


async def stored(store: Store) -> list[dict[str, object]]:
    async with store.read() as conn:
        rows = (await conn.execute(sa.select(alerts).order_by(alerts.c.id))).mappings().all()
    return [dict(r) for r in rows]


async def test_what_is_stored_and_what_a_repeat_changes(store: Store) -> None:
    async with store.write() as conn:
        first = await upsert_firing(conn, [full("a"), full("b")], NOW)
    assert [(u.fingerprint, u.occurrences) for u in first] == [("a", 1), ("b", 1)]
    [a, _] = await stored(store)
    assert a["labels"] == full("a").labels and a["details"] == full("a").details
    assert a["links"] == [{"href": "https://grafana/d/1", "text": "Dashboard"}]
    assert a["starts_at"] == datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    assert (a["ends_at"], a["generator_url"], a["ci_id"]) == (None, None, "db-1")
    assert (a["status"], a["severity"], a["occurrences"]) == ("firing", "critical", 1)
    assert a["first_seen"] == a["last_seen"] == NOW

    later = NOW + timedelta(seconds=30)
    ends = NOW + timedelta(hours=1)
    async with store.write() as conn:
        again = await upsert_firing(conn, [full("a", summary="disk fuller", ends_at=ends),
                                           full("c")], later)
    assert sorted((u.fingerprint, u.occurrences) for u in again) == [("a", 2), ("c", 1)]
    rows = {r["fingerprint"]: r for r in await stored(store)}
    assert len(rows) == 3
    assert (rows["a"]["summary"], rows["a"]["ends_at"]) == ("disk fuller", ends)
    assert (rows["a"]["first_seen"], rows["a"]["last_seen"]) == (NOW, later)
    assert rows["b"]["occurrences"] == 1


async def test_a_naive_time_is_refused(store: Store) -> None:
    naive = dataclasses.replace(full("n"), starts_at=datetime(2026, 1, 1))
    with pytest.raises(Exception, match="naive datetime"):
        async with store.write() as conn:
            await upsert_firing(conn, [naive], NOW)


async def test_any_batch_size_is_one_statement_text(store: Store) -> None:
    texts: set[str] = set()

    def keep(conn: object, cursor: object, statement: str, *args: object) -> None:
        texts.add(statement)

    engine = store.writer_engine.sync_engine
    sa.event.listen(engine, "before_cursor_execute", keep)
    try:
        for size in (1, 3, 250, 801):
            async with store.write() as conn:
                done = await upsert_firing(
                    conn, [full(f"{size}-{i}") for i in range(size)], NOW)
            assert len(done) == size
    finally:
        sa.event.remove(engine, "before_cursor_execute", keep)
    upserts = [t for t in texts if t.lstrip().startswith("INSERT INTO alerts")]
    assert len(upserts) == 1, upserts


async def test_earlier_firings_seeks_each_identity_on_a_table_never_analysed(
    pg_store: Store
) -> None:
    # A PostgreSQL with autovacuum off never analyses: the read must not depend on
    # statistics. With `fingerprint IN (…)` it was read by source and time only, every
    # alert of the window filtered (27 ms a batch at 80,000 alerts).
    from sqlalchemy.dialects import postgresql

    from daemon.store.alerts import _PG_EARLIER

    async with pg_store.write() as conn:
        await conn.exec_driver_sql(
            "INSERT INTO alerts (source, integration, fingerprint, status, severity, summary,"
            " labels, annotations, starts_at, group_key, first_seen, last_seen)"
            " SELECT 'alertmanager', 'am', 'old-' || n, 'resolved', 'error', 's', '{}', '{}',"
            " $1, 'g', $1, $1 FROM generate_series(1, 80000) AS n", (NOW,))
    sql = str(_PG_EARLIER.compile(dialect=postgresql.asyncpg.dialect()))
    keys = [f"old-{i}" for i in range(1, 80000, 1600)]
    async with pg_store.read() as conn:
        plan = "\n".join(r[0] for r in await conn.exec_driver_sql(
            "EXPLAIN " + sql, (["alertmanager"] * len(keys), keys,
                               NOW - timedelta(hours=1), [1, 2])))
        found = await earlier_firings(conn, [(full(k), 10**6) for k in keys],
                                      since=NOW - timedelta(hours=1))
    assert re.search(r"Index Cond: .*fingerprint\)::text = ", plan), plan
    assert len(found.by_identity) == len(keys)
