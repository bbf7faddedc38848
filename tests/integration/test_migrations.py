"""The migrations build the schema `daemon.store.tables` declares: tables, columns, indexes.

`tables.py` is what the code queries and what the planner is told about; the
migrations are what a database really gets. An index declared in one and
forgotten in the other (or the reverse) passes every functional test and only
shows up as a slow query in production, so compare them structurally here.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from daemon.store import Store
from daemon.store.tables import metadata
from tests.conftest import empty

# Differences that matter for what the code and the planner see. Type and default
# renderings differ between dialects and SQLAlchemy versions without meaning anything.
_STRUCTURAL = {"add_table", "remove_table", "add_column", "remove_column",
               "add_index", "remove_index"}


def _structural_diffs(sync_conn: sa.Connection) -> list[Any]:
    context = MigrationContext.configure(sync_conn, opts={"compare_type": False})
    diffs = compare_metadata(context, metadata)
    flat: list[Any] = []
    for diff in diffs:
        # Column-level changes come as lists of tuples; table/index changes as tuples.
        for item in diff if isinstance(diff, list) else [diff]:
            if item[0] in _STRUCTURAL and not _is_alembic_version(item):
                flat.append(item)
    return flat


def _is_alembic_version(item: Any) -> bool:
    table = item[1]
    name = getattr(table, "name", None) or getattr(getattr(table, "table", None), "name", None)
    return name == "alembic_version"


async def test_the_migrations_build_the_declared_tables_and_indexes(store: Store) -> None:
    async with store.read() as conn:
        diffs = await conn.run_sync(_structural_diffs)
    assert diffs == []


async def test_the_link_index_of_the_runbook_triggers_exists(store: Store) -> None:
    """Migration 0012: `linked_at` seeks (incident_id, added_at) instead of scanning."""
    async with store.read() as conn:
        indexes = await conn.run_sync(
            lambda c: {i["name"]: i["column_names"]
                       for i in sa.inspect(c).get_indexes("incident_alerts")})
    assert indexes.get("ix_incident_alerts_incident_id_added_at") == ["incident_id", "added_at"]


async def test_the_last_sighting_of_incidents_is_filled_in(database_url: str) -> None:
    """Migration 0014: an incident open before it gets `last_alert_at` from its bound
    alerts (the newest last_seen), so the correlator still sees it as active."""
    from alembic import command

    from daemon.store import migrate
    from daemon.store.tables import alerts, incident_alerts, incidents

    def downgrade_to(revision: str) -> Any:
        def run(sync_conn: sa.Connection) -> None:
            cfg = migrate.alembic_config()
            cfg.attributes["connection"] = sync_conn
            command.downgrade(cfg, revision)
        return run

    store = Store.open(database_url)
    try:
        # From head (the session's PostgreSQL database is there already) back to 0013.
        await migrate.upgrade(store)
        await empty(store)
        async with store.write() as conn:
            await conn.run_sync(downgrade_to("0013"))
        early, late = datetime(2026, 11, 1, 10, tzinfo=UTC), datetime(2026, 11, 1, 11, tzinfo=UTC)
        async with store.write() as conn:
            for incident_id in (1, 2):
                await conn.execute(sa.text(
                    "INSERT INTO incidents (id, title, status, severity, group_key, created_at,"
                    " priority_manual, impacted_cis, impacted_services) VALUES (:i, 't',"
                    " 'triggered', 'error', :g, :at, false, '[]', '[]')"),
                    {"i": incident_id, "g": f"g{incident_id}", "at": early})
            for alert_id, incident_id, ci, seen in ((1, 1, "db", early), (2, 1, "app", late),
                                                    (3, 1, None, late + timedelta(hours=1)),
                                                    (4, 2, None, late)):
                await conn.execute(sa.insert(alerts).values(
                    id=alert_id, source="s", integration="i", fingerprint=f"f{alert_id}",
                    status="firing", severity="error", summary="s", labels={},
                    annotations={}, starts_at=early, group_key="g", ci_id=ci,
                    first_seen=early, last_seen=seen))
                await conn.execute(sa.insert(incident_alerts).values(
                    incident_id=incident_id, alert_id=alert_id, role="symptom",
                    added_at=early))
        await migrate.upgrade(store)
        async with store.read() as conn:
            found = dict((await conn.execute(
                sa.select(incidents.c.id, incidents.c.last_alert_at))).all())
        # The newest bound sighting; the unbound alert's later one does not count.
        assert found == {1: late, 2: None}
    finally:
        await store.close()
