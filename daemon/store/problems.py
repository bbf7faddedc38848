"""Repository functions for problem records and their links to incidents."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from hashlib import blake2b
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.models import OPEN_STATUSES
from daemon.store.in_lists import padded
from daemon.store.tables import incidents, problem_incidents, problems

# What recurring incidents share: (root-cause CI, alert name).
Key = tuple[str, str]

ACTIVE = ("open", "known_error")


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    id: int
    title: str
    status: str
    root_cause_ci: str | None
    alert_name: str | None
    description: str | None
    workaround: str | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    resolved_at: datetime | None
    incident_count: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class NewProblem:
    title: str
    status: str
    root_cause_ci: str | None
    alert_name: str | None
    description: str | None
    workaround: str | None
    created_by: str


@dataclass(frozen=True, slots=True)
class Candidate:
    """An incident that may recur a known failure: its id and key."""

    id: int
    key: Key


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkedIncident:
    id: int
    title: str
    status: str
    created_at: datetime
    linked_at: datetime


def _problem(row: Any, count: int = 0) -> Problem:
    return Problem(
        id=row.id, title=row.title, status=row.status, root_cause_ci=row.root_cause_ci,
        alert_name=row.alert_name, description=row.description, workaround=row.workaround,
        created_by=row.created_by, created_at=row.created_at, updated_at=row.updated_at,
        resolved_at=row.resolved_at, incident_count=count,
    )


def _linked() -> sa.Exists:
    return sa.exists().where(problem_incidents.c.incident_id == incidents.c.id)


async def unlinked_candidates(conn: AsyncConnection, incident_ids: Iterable[int]
                              ) -> list[Candidate]:
    """Of these incidents, those with a root-cause CI and alert name, not merged and
    linked to no problem yet."""
    ids = sorted(set(incident_ids))
    if not ids:
        return []
    result = await conn.execute(
        sa.select(incidents.c.id, incidents.c.root_cause_ci, incidents.c.alert_name)
        .where(incidents.c.id.in_(padded(ids)), incidents.c.merged_into.is_(None),
               incidents.c.root_cause_ci.is_not(None), incidents.c.alert_name.is_not(None),
               ~_linked())
        .order_by(incidents.c.id)
    )
    return [Candidate(r.id, (r.root_cause_ci, r.alert_name)) for r in result]


async def unlinked_candidates_of(conn: AsyncConnection, rows: Iterable[Any]
                                 ) -> list[Candidate]:
    """`unlinked_candidates` of incident rows already read: only the rows that could be
    candidates are checked for links, and none at all when none could."""
    maybe = sorted((r.id, (r.root_cause_ci, r.alert_name)) for r in rows
                   if r.merged_into is None and r.root_cause_ci is not None
                   and r.alert_name is not None)
    if not maybe:
        return []
    result = await conn.execute(
        sa.select(problem_incidents.c.incident_id).distinct()
        .where(problem_incidents.c.incident_id.in_(padded([i for i, _ in maybe]))))
    linked = {r.incident_id for r in result}
    return [Candidate(i, key) for i, key in maybe if i not in linked]


async def lock_keys(conn: AsyncConnection, keys: Iterable[Key]) -> None:
    """On PostgreSQL, hold a transaction lock per key so two replicas ingesting the same
    recurrence at once do not both open a problem (the second waits, then sees the
    first one's). SQLite has a single writer already."""
    if conn.dialect.name != "postgresql":
        return
    ids = sorted({_lock_id(key) for key in keys})  # one order everywhere: no deadlock
    if ids:
        await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), [{"k": k} for k in ids])


def _lock_id(key: Key) -> int:
    digest = blake2b("\x00".join(("problem", *key)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def recurrences(conn: AsyncConnection, keys: Iterable[Key], *, since: datetime,
                      until: datetime) -> dict[Key, list[int]]:
    """Unmerged incidents linked to no problem, created in [since, until], per key.

    Incidents already linked to a problem (even a resolved one) were dealt with
    there, so they do not count towards a new one.
    """
    wanted = set(keys)
    if not wanted:
        return {}
    # IN on each column, then the exact pairs in Python: row-value IN is not
    # portable across every SQLite build.
    result = await conn.execute(
        sa.select(incidents.c.id, incidents.c.root_cause_ci, incidents.c.alert_name)
        .where(incidents.c.root_cause_ci.in_(padded(sorted({ci for ci, _ in wanted}))),
               incidents.c.alert_name.in_(padded(sorted({name for _, name in wanted}))),
               incidents.c.merged_into.is_(None),
               incidents.c.created_at >= since, incidents.c.created_at <= until,
               ~_linked())
        .order_by(incidents.c.id)
    )
    out: dict[Key, list[int]] = {}
    for r in result:
        key = (r.root_cause_ci, r.alert_name)
        if key in wanted:
            out.setdefault(key, []).append(r.id)
    return out


async def active_by_key(conn: AsyncConnection, keys: Iterable[Key]) -> dict[Key, Problem]:
    """The active (open or known-error) problem of each key that has one; the oldest
    when several do (a second one can only be made by hand)."""
    wanted = set(keys)
    if not wanted:
        return {}
    result = await conn.execute(
        sa.select(problems)
        .where(problems.c.status.in_(ACTIVE),
               problems.c.root_cause_ci.in_(padded(sorted({ci for ci, _ in wanted}))),
               problems.c.alert_name.in_(padded(sorted({name for _, name in wanted}))))
        .order_by(problems.c.id.desc())
    )
    out: dict[Key, Problem] = {}
    for r in result:  # newest first, so the oldest is written last and wins
        key = (r.root_cause_ci, r.alert_name)
        if key in wanted:
            out[key] = _problem(r)
    return out


async def insert_problems(conn: AsyncConnection, new: Sequence[NewProblem], now: datetime
                          ) -> list[int]:
    """Insert problems; returns their ids in the order given."""
    if not new:
        return []
    stmt = sa.insert(problems).returning(problems.c.id, sort_by_parameter_order=True)
    rows = [
        {"title": n.title, "status": n.status, "root_cause_ci": n.root_cause_ci,
         "alert_name": n.alert_name, "description": n.description, "workaround": n.workaround,
         "created_by": n.created_by, "created_at": now, "updated_at": now}
        for n in new
    ]
    return [r.id for r in await conn.execute(stmt, rows)]


async def link(conn: AsyncConnection, pairs: Sequence[tuple[int, int]], now: datetime) -> None:
    """Link (problem_id, incident_id) pairs."""
    if pairs:
        await conn.execute(
            sa.insert(problem_incidents),
            [{"problem_id": p, "incident_id": i, "linked_at": now} for p, i in pairs],
        )


async def of_incidents(conn: AsyncConnection, incident_ids: Sequence[int]
                       ) -> dict[int, list[Problem]]:
    """The problems each incident is linked to, oldest link first."""
    if not incident_ids:
        return {}
    result = await conn.execute(
        sa.select(problems, problem_incidents.c.incident_id)
        .join(problem_incidents, problem_incidents.c.problem_id == problems.c.id)
        .where(problem_incidents.c.incident_id.in_(padded(set(incident_ids))))
        .order_by(problem_incidents.c.linked_at, problems.c.id)
    )
    out: dict[int, list[Problem]] = {}
    for r in result:
        out.setdefault(r.incident_id, []).append(_problem(r))
    return out


def _counted() -> sa.Select[Any]:
    count = (
        sa.select(sa.func.count())
        .where(problem_incidents.c.problem_id == problems.c.id)
        .scalar_subquery()
    )
    return sa.select(problems, count.label("incident_count"))


async def list_problems(conn: AsyncConnection, *, statuses: Sequence[str] | None, limit: int,
                        before_id: int | None) -> list[Problem]:
    """Newest first, keyset-paginated on id, each with its count of linked incidents."""
    query = _counted().order_by(problems.c.id.desc()).limit(limit)
    if statuses:
        query = query.where(problems.c.status.in_(list(statuses)))
    if before_id is not None:
        query = query.where(problems.c.id < before_id)
    return [_problem(r, r.incident_count) for r in await conn.execute(query)]


async def get_problem(conn: AsyncConnection, problem_id: int) -> Problem | None:
    row = (await conn.execute(_counted().where(problems.c.id == problem_id))).first()
    return _problem(row, row.incident_count) if row else None


async def linked_incidents(conn: AsyncConnection, problem_id: int) -> list[LinkedIncident]:
    result = await conn.execute(
        sa.select(incidents.c.id, incidents.c.title, incidents.c.status, incidents.c.created_at,
                  problem_incidents.c.linked_at)
        .join(problem_incidents, problem_incidents.c.incident_id == incidents.c.id)
        .where(problem_incidents.c.problem_id == problem_id)
        .order_by(incidents.c.id)
    )
    return [LinkedIncident(id=r.id, title=r.title, status=r.status, created_at=r.created_at,
                           linked_at=r.linked_at) for r in result]


async def open_linked_incidents(conn: AsyncConnection, problem_id: int) -> list[int]:
    """Linked incidents still being worked on (triggered, acknowledged or on hold)."""
    result = await conn.execute(
        sa.select(incidents.c.id)
        .join(problem_incidents, problem_incidents.c.incident_id == incidents.c.id)
        .where(problem_incidents.c.problem_id == problem_id,
               incidents.c.status.in_([s.value for s in OPEN_STATUSES]))
        .order_by(incidents.c.id)
    )
    return [r.id for r in result]


async def existing_incidents(conn: AsyncConnection, incident_ids: Iterable[int]) -> set[int]:
    ids = list(set(incident_ids))
    if not ids:
        return set()
    result = await conn.execute(sa.select(incidents.c.id).where(incidents.c.id.in_(padded(ids))))
    return {r.id for r in result}


async def update_problem(conn: AsyncConnection, problem_id: int, *, expected_status: str,
                         values: dict[str, Any]) -> bool:
    """Update a problem still in `expected_status`; False if it changed meanwhile."""
    result = await conn.execute(
        sa.update(problems)
        .where(problems.c.id == problem_id, problems.c.status == expected_status)
        .values(**values)
        .returning(problems.c.id)
    )
    return result.first() is not None

