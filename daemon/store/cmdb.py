"""Repository functions for the CMDB: CIs and their dependency edges.

Set-based: a whole import is a handful of executemany statements, never a
statement per CI in Python. None of these commit; the `Cmdb` flow owns the
transaction. Statements that take many ids bind them one per row
(executemany) rather than in one IN list, which SQLite and asyncpg cap at
about 32,000 parameters.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.models import ConfigurationItem
from daemon.store.tables import ci_edges, cis

_CI_ID: sa.BindParameter[str] = sa.bindparam("ci_id", type_=sa.String())
_COLUMNS = ("name", "type", "service", "owner_group", "criticality", "environment",
            "attributes", "updated_at")
# What a ConfigurationItem holds; `updated_at` is for people and queries, not the graph.
_CI = sa.select(cis.c.id, *(cis.c[name] for name in _COLUMNS[:-1]))


async def all_cis(conn: AsyncConnection) -> list[ConfigurationItem]:
    """The whole CMDB, ordered by id."""
    edges = await _edges(conn, sa.select(ci_edges.c.ci_id, ci_edges.c.depends_on))
    rows = await conn.execute(_CI.order_by(cis.c.id))
    return [_ci(r, edges.get(r.id, ())) for r in rows]


async def get_ci(conn: AsyncConnection, ci_id: str) -> ConfigurationItem | None:
    row = (await conn.execute(_CI.where(cis.c.id == ci_id))).first()
    if row is None:
        return None
    edges = await _edges(conn, sa.select(ci_edges.c.ci_id, ci_edges.c.depends_on)
                         .where(ci_edges.c.ci_id == ci_id))
    return _ci(row, edges.get(ci_id, ()))


async def list_cis(conn: AsyncConnection, *, type: str | None = None,
                   service: str | None = None, limit: int, after_id: str | None = None,
                   text: str | None = None) -> list[ConfigurationItem]:
    """CIs in id order, keyset-paginated: those after `after_id`, at most `limit`.
    `text` keeps those whose id, name, type or service contains it, ignoring case."""
    query = _CI.order_by(cis.c.id).limit(limit)
    if text:
        needle = text.lower()
        query = query.where(sa.or_(*(sa.func.lower(column).contains(needle, autoescape=True)
                                     for column in (cis.c.id, cis.c.name, cis.c.type,
                                                    cis.c.service))))
    if type is not None:
        query = query.where(cis.c.type == type)
    if service is not None:
        query = query.where(cis.c.service == service)
    if after_id is not None:
        query = query.where(cis.c.id > after_id)
    rows = list(await conn.execute(query))
    if not rows:
        return []
    # A page is at most a few hundred ids, well inside any parameter limit.
    edges = await _edges(conn, sa.select(ci_edges.c.ci_id, ci_edges.c.depends_on)
                         .where(ci_edges.c.ci_id.in_([r.id for r in rows])))
    return [_ci(r, edges.get(r.id, ())) for r in rows]


async def dependents_of(conn: AsyncConnection, ci_id: str) -> list[str]:
    """Ids of the CIs that depend on `ci_id`, sorted."""
    result = await conn.execute(
        sa.select(ci_edges.c.ci_id).where(ci_edges.c.depends_on == ci_id)
        .order_by(ci_edges.c.ci_id))
    return list(result.scalars())


async def upsert(conn: AsyncConnection, items: Sequence[ConfigurationItem], now: datetime
                 ) -> None:
    """Insert or replace `items` and their edges (an item's old edges are dropped)."""
    if not items:
        return
    insert = postgresql.insert(cis) if conn.dialect.name == "postgresql" else sqlite.insert(cis)
    stmt = insert.on_conflict_do_update(
        index_elements=[cis.c.id],
        set_={name: insert.excluded[name] for name in _COLUMNS},
    )
    await conn.execute(stmt, [_row(ci, now) for ci in items])
    await conn.execute(sa.delete(ci_edges).where(ci_edges.c.ci_id == _CI_ID),
                       [{"ci_id": ci.id} for ci in items])
    await _insert_edges(conn, items)


async def replace_all(conn: AsyncConnection, items: Sequence[ConfigurationItem], now: datetime
                      ) -> None:
    """Make `items` the whole CMDB."""
    await conn.execute(sa.delete(ci_edges))
    await conn.execute(sa.delete(cis))
    if items:
        await conn.execute(sa.insert(cis), [_row(ci, now) for ci in items])
        await _insert_edges(conn, items)


async def delete(conn: AsyncConnection, ci_ids: Iterable[str]) -> None:
    """Delete CIs and their own edges. Edges *to* them are the caller's to have removed."""
    params = [{"ci_id": ci_id} for ci_id in ci_ids]
    if not params:
        return
    await conn.execute(sa.delete(ci_edges).where(ci_edges.c.ci_id == _CI_ID), params)
    await conn.execute(sa.delete(cis).where(cis.c.id == _CI_ID), params)


async def _insert_edges(conn: AsyncConnection, items: Sequence[ConfigurationItem]) -> None:
    edges = [{"ci_id": ci.id, "depends_on": target} for ci in items for target in ci.depends_on]
    if edges:
        await conn.execute(sa.insert(ci_edges), edges)


async def _edges(conn: AsyncConnection, query: sa.Select[Any]) -> dict[str, tuple[str, ...]]:
    out: dict[str, list[str]] = {}
    for ci_id, target in await conn.execute(query):
        out.setdefault(ci_id, []).append(target)
    return {k: tuple(sorted(v)) for k, v in out.items()}


def _row(ci: ConfigurationItem, now: datetime) -> dict[str, Any]:
    return {
        "id": ci.id,
        "name": ci.name,
        "type": ci.type,
        "service": ci.service,
        "owner_group": ci.owner_group,
        "criticality": ci.criticality,
        "environment": ci.environment,
        "attributes": ci.attributes,
        "updated_at": now,
    }


def _ci(row: Any, depends_on: tuple[str, ...]) -> ConfigurationItem:
    return ConfigurationItem(
        id=row.id, name=row.name, type=row.type, service=row.service,
        owner_group=row.owner_group, criticality=row.criticality,
        environment=row.environment, attributes=row.attributes, depends_on=depends_on,
    )
