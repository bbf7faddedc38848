"""Problem records: the common cause behind recurring incidents (ITIL problem management).

Incidents with the same root-cause CI and alert name that recur `recurrences`
times within the window open a problem linking them all; later ones link to
it. A problem marked a known error carries a workaround, which goes into the
timeline of every incident linked to it that is still being worked on.

Everything runs in the caller's transaction; metrics are counted by the
caller once it has committed (`record_metrics`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from daemon import metrics
from daemon.config import ProblemsConfig
from daemon.errors import InvalidInput, InvalidTransition, NotFound
from daemon.models import SYSTEM_ACTOR, TimelineEntry, TimelineKind, incident_key
from daemon.store import incidents as incident_store
from daemon.store import problems as store
from daemon.store.problems import Key, NewProblem, Problem

log = structlog.get_logger("incidentd.problems")

OPEN = "open"
KNOWN_ERROR = "known_error"
RESOLVED = "resolved"
CLOSED = "closed"
STATUSES = (OPEN, KNOWN_ERROR, RESOLVED, CLOSED)

# Where a problem may go from each status; closed is final.
MOVES: dict[str, tuple[str, ...]] = {
    OPEN: (KNOWN_ERROR, RESOLVED, CLOSED),
    KNOWN_ERROR: (RESOLVED, CLOSED, OPEN),
    RESOLVED: (CLOSED, OPEN),
    CLOSED: (),
}


def problem_key(problem_id: int) -> str:
    """The short, human key of a problem: `PRB-000042`."""
    return f"PRB-{problem_id:06d}"


@dataclass(frozen=True, slots=True)
class ProblemLinked:
    problem_id: int
    incident_id: int
    opened: bool  # True when this linking opened the problem


@dataclass(frozen=True, slots=True, kw_only=True)
class NewManualProblem:
    """A problem opened by a person, with the incidents they link to it (in request order)."""

    title: str
    description: str | None = None
    root_cause_ci: str | None = None
    alert_name: str | None = None
    workaround: str | None = None
    known_error: bool = False
    incident_ids: tuple[int, ...] = ()
    actor: str = "api"


@dataclass(frozen=True, slots=True, kw_only=True)
class ProblemPatch:
    """Fields to change; None means unchanged, and `cleared` names fields set to null."""

    title: str | None = None
    status: str | None = None
    description: str | None = None
    workaround: str | None = None
    cleared: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True)
class _Target:
    """The problem an incident gets linked to, as its timeline entries need it."""

    id: int
    title: str
    workaround: str | None  # set only for a known error

    @classmethod
    def of(cls, p: Problem) -> _Target:
        return cls(p.id, p.title, p.workaround if p.status == KNOWN_ERROR else None)


class Problems:
    """Opens problems from recurring incidents, links incidents to them, and manages them."""

    def __init__(self, config: ProblemsConfig) -> None:
        self._recurrences = config.recurrences
        self._window = timedelta(seconds=config.window_seconds)

    async def link(self, conn: AsyncConnection, incident_ids: Iterable[int], now: datetime,
                   *, rows: Mapping[int, Any] | None = None) -> list[ProblemLinked]:
        """Link these incidents to the active problem of their (root-cause CI, alert name),
        or open one when they are its `recurrences`-th within the window. Idempotent.
        `rows`: these incidents' rows, if the caller read them in this transaction."""
        candidates = (await store.unlinked_candidates_of(conn, rows.values())
                      if rows is not None else await store.unlinked_candidates(conn, incident_ids))
        if not candidates:
            return []
        by_key: dict[Key, list[int]] = defaultdict(list)
        for c in candidates:
            by_key[c.key].append(c.id)
        await store.lock_keys(conn, by_key)
        active = await store.active_by_key(conn, by_key)
        links = [(_Target.of(active[k]), i, False) for k, ids in by_key.items() if k in active
                 for i in ids]
        links += await self._open_recurring(
            conn, [k for k in by_key if k not in active], now)
        await _write_links(conn, [(t, i) for t, i, _ in links], actor=SYSTEM_ACTOR, now=now)
        return [ProblemLinked(t.id, i, opened) for t, i, opened in links]

    async def _open_recurring(self, conn: AsyncConnection, keys: Sequence[Key], now: datetime
                              ) -> list[tuple[_Target, int, bool]]:
        """Open a problem for each key that recurred often enough; link all its incidents."""
        counted = await store.recurrences(conn, keys, since=now - self._window, until=now)
        due = {k: ids for k, ids in counted.items() if len(ids) >= self._recurrences}
        specs = [NewProblem(title=f"Recurring: {name} on {ci}", status=OPEN, root_cause_ci=ci,
                            alert_name=name, description=None, workaround=None,
                            created_by=SYSTEM_ACTOR)
                 for ci, name in due]
        ids = await store.insert_problems(conn, specs, now)
        return [(_Target(pid, spec.title, None), i, True)
                for pid, spec, incs in zip(ids, specs, due.values(), strict=True) for i in incs]

    async def views(self, conn: AsyncConnection, incident_ids: Sequence[int]
                    ) -> dict[int, list[dict[str, Any]]]:
        """For the incident JSON: the problems each incident is linked to."""
        linked = await store.of_incidents(conn, incident_ids)
        return {i: [problem_view(p) for p in linked.get(i, [])] for i in incident_ids}

    async def create(self, conn: AsyncConnection, new: NewManualProblem, now: datetime) -> int:
        """Open a problem by hand, linking the incidents named; returns its id."""
        if new.known_error and not new.workaround:
            raise _needs_workaround()
        found = await store.existing_incidents(conn, new.incident_ids)
        for index, incident_id in enumerate(new.incident_ids):
            if incident_id not in found:
                reason = f"no incident {incident_key(incident_id)}"
                raise InvalidInput(f"incidents[{index}]: {reason}",
                                   [{"field": f"incidents[{index}]", "reason": reason}])
        spec = NewProblem(title=new.title, status=KNOWN_ERROR if new.known_error else OPEN,
                          root_cause_ci=new.root_cause_ci, alert_name=new.alert_name,
                          description=new.description, workaround=new.workaround,
                          created_by=new.actor)
        [problem_id] = await store.insert_problems(conn, [spec], now)
        target = _Target(problem_id, new.title, new.workaround if new.known_error else None)
        await _write_links(conn, [(target, i) for i in dict.fromkeys(new.incident_ids)],
                           actor=new.actor, now=now)
        return problem_id

    async def update(self, conn: AsyncConnection, problem_id: int, patch: ProblemPatch, *,
                     actor: str, note: str | None, now: datetime) -> None:
        """Edit a problem and move its status; a new or changed known-error workaround
        reaches the timeline of its linked incidents that are still open."""
        before = await store.get_problem(conn, problem_id)
        if before is None:
            raise NotFound(f"no problem {problem_key(problem_id)}")
        status = patch.status or before.status
        if status != before.status and status not in MOVES[before.status]:
            raise InvalidTransition(_refusal(before, status))
        workaround = _after(patch.workaround, "workaround", patch.cleared, before.workaround)
        if status == KNOWN_ERROR and not workaround:
            raise _needs_workaround()
        values = _values(patch, before, status=status, now=now)
        if not await store.update_problem(conn, problem_id, expected_status=before.status,
                                          values=values):
            raise InvalidTransition(f"{problem_key(problem_id)} changed meanwhile; try again")
        if status == KNOWN_ERROR and (before.status != KNOWN_ERROR
                                      or workaround != before.workaround):
            assert workaround is not None
            await _announce_workaround(conn, problem_id, workaround, actor=actor, note=note,
                                       now=now)
        log.info("problem updated", problem=problem_key(problem_id), actor=actor,
                 status_from=before.status, status_to=status, fields=sorted(values), note=note)


def problem_view(p: Problem) -> dict[str, Any]:
    """A problem as an incident's JSON shows it."""
    return {"id": p.id, "key": problem_key(p.id), "title": p.title, "status": p.status,
            "known_error": p.status == KNOWN_ERROR, "workaround": p.workaround}


def record_metrics(linked: Iterable[ProblemLinked]) -> None:
    """Count problems opened by recurrence. Call only after the commit."""
    opened: dict[int, list[int]] = {}
    for link in linked:
        if link.opened:
            opened.setdefault(link.problem_id, []).append(link.incident_id)
    for problem_id, incident_ids in opened.items():
        metrics.PROBLEMS_OPENED.labels("recurrence").inc()
        log.info("problem opened from recurring incidents", problem=problem_key(problem_id),
                 incidents=[incident_key(i) for i in incident_ids])


async def _write_links(conn: AsyncConnection, links: Sequence[tuple[_Target, int]], *,
                       actor: str, now: datetime) -> None:
    """Link incidents to problems, each with its timeline entry, and the workaround
    at once where the problem is a known error."""
    await store.link(conn, [(t.id, i) for t, i in links], now)
    entries: list[tuple[int, TimelineEntry]] = []
    for target, incident_id in links:
        key = problem_key(target.id)
        entries.append((incident_id, TimelineEntry(
            at=now, actor=actor, kind=TimelineKind.PROBLEM_LINKED,
            detail={"problem": key, "title": target.title})))
        if target.workaround:
            entries.append((incident_id, _workaround_entry(key, target.workaround, actor, now)))
    await incident_store.add_timeline(conn, entries)


async def _announce_workaround(conn: AsyncConnection, problem_id: int, workaround: str, *,
                               actor: str, note: str | None, now: datetime) -> None:
    incident_ids = await store.open_linked_incidents(conn, problem_id)
    entry = _workaround_entry(problem_key(problem_id), workaround, actor, now, note=note)
    await incident_store.add_timeline(conn, [(i, entry) for i in incident_ids])


def _workaround_entry(key: str, workaround: str, actor: str, now: datetime, *,
                      note: str | None = None) -> TimelineEntry:
    detail = {"problem": key, "workaround": workaround} | ({"note": note} if note else {})
    return TimelineEntry(at=now, actor=actor, kind=TimelineKind.WORKAROUND, detail=detail)


def _after(given: str | None, name: str, cleared: frozenset[str], current: str | None
           ) -> str | None:
    """A nullable field's value once the patch applies."""
    if given is not None:
        return given
    return None if name in cleared else current


def _values(patch: ProblemPatch, before: Problem, *, status: str, now: datetime
            ) -> dict[str, Any]:
    values: dict[str, Any] = {"updated_at": now}
    if patch.title is not None:
        values["title"] = patch.title
    for name in ("description", "workaround"):
        given = getattr(patch, name)
        if given is not None or name in patch.cleared:
            values[name] = given
    if status != before.status:
        values["status"] = status
        # Resolved when it moves to resolved; reopening forgets it. A problem closed
        # without a fix keeps no resolution time.
        if status == RESOLVED:
            values["resolved_at"] = now
        elif status in (OPEN, KNOWN_ERROR):
            values["resolved_at"] = None
    return values


def _refusal(before: Problem, status: str) -> str:
    key = problem_key(before.id)
    allowed = MOVES[before.status]
    if not allowed:
        return f"{key} is {before.status}, which is final; it cannot become {status}"
    return f"{key} is {before.status}; it can become only {' or '.join(allowed)}, not {status}"


def _needs_workaround() -> InvalidInput:
    reason = "a known error needs a workaround"
    return InvalidInput(f"workaround: {reason}", [{"field": "workaround", "reason": reason}])
