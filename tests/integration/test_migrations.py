"""The migrations build the schema `daemon.store.tables` declares: tables, columns, indexes.

`tables.py` is what the code queries and what the planner is told about; the
migrations are what a database really gets. An index declared in one and
forgotten in the other (or the reverse) passes every functional test and only
shows up as a slow query in production, so compare them structurally here.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from daemon.store import Store
from daemon.store.tables import metadata

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
