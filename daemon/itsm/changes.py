"""Change records: what was changed, when, on which CIs; their approval lifecycle; and
which incidents they may have caused.

A change is requested, approved (standard changes are pre-approved), carried
out and completed, or cancelled/rejected on the way. An approved or running
change with a planned window is a maintenance window (`daemon.itsm.maintenance`).
A PagerDuty change event is a standard change that is already completed.

Suspected changes: an incident lists the changes on its CIs or on what they
depend on that ran shortly before it opened (or since).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.clock import Clock, timestamp
from daemon.correlation.topology import Topology, TopologyHolder
from daemon.errors import InvalidInput, InvalidTransition, NotFound
from daemon.models import SYSTEM_ACTOR, ChangeRecord, TimelineEntry, TimelineKind
from daemon.store import Store
from daemon.store import changes as change_store
from daemon.store import incidents as incident_store

log = structlog.get_logger("incidentd.changes")


class ChangeType(enum.StrEnum):
    STANDARD = "standard"  # pre-approved, low risk, routine
    NORMAL = "normal"
    EMERGENCY = "emergency"


class ChangeState(enum.StrEnum):
    REQUESTED = "requested"
    APPROVED = "approved"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


class Outcome(enum.StrEnum):
    SUCCESSFUL = "successful"
    FAILED = "failed"
    BACKED_OUT = "backed_out"


NEXT_STATES: Mapping[ChangeState, frozenset[ChangeState]] = {
    ChangeState.REQUESTED: frozenset({ChangeState.APPROVED, ChangeState.REJECTED,
                                      ChangeState.CANCELLED}),
    ChangeState.APPROVED: frozenset({ChangeState.IN_PROGRESS, ChangeState.CANCELLED,
                                     ChangeState.COMPLETED}),
    ChangeState.IN_PROGRESS: frozenset({ChangeState.COMPLETED}),
    ChangeState.COMPLETED: frozenset(),
    ChangeState.CANCELLED: frozenset(),
    ChangeState.REJECTED: frozenset(),
}
FINAL_STATES = frozenset(s for s, nxt in NEXT_STATES.items() if not nxt)
# States in which a planned window holds alerts back.
WINDOW_STATES = (ChangeState.APPROVED, ChangeState.IN_PROGRESS)
# A change that was never approved, or called off, changed nothing: never a suspect.
SUSPECT_STATES = (ChangeState.APPROVED, ChangeState.IN_PROGRESS, ChangeState.COMPLETED)


def initial_state(change_type: ChangeType) -> ChangeState:
    """Standard changes are pre-approved; the others wait for approval."""
    return ChangeState.APPROVED if change_type is ChangeType.STANDARD else ChangeState.REQUESTED


def unknown_cis(topology: Topology, cis: Sequence[str]) -> list[dict[str, str]]:
    """Warnings (field path, reason) for CI ids the CMDB does not know: kept, but said."""
    return [{"field": f"cis[{n}]", "reason": f"no CI {ci!r} in the CMDB"}
            for n, ci in enumerate(cis) if ci not in topology]


def check_window(start: datetime | None, end: datetime | None) -> None:
    if end is not None and start is None:
        raise _bad("planned_start", "is required with planned_end")
    if start is not None and end is not None and end <= start:
        raise _bad("planned_end", "must be after planned_start")


def _bad(path: str, reason: str) -> InvalidInput:
    return InvalidInput(f"{path}: {reason}", [{"field": path, "reason": reason}])


def new_change(change: ChangeRecord, now: datetime, *, state: ChangeState | None = None
               ) -> ChangeRecord:
    """A change record as a person files it: in `state`, else the type's first state;
    happening at its planned start, now once it runs, or now when there is no plan."""
    check_window(change.planned_start, change.planned_end)
    state = state or initial_state(ChangeType(change.type))
    if state in (ChangeState.CANCELLED, ChangeState.REJECTED):
        raise _bad("state", f"a change cannot be filed {state.value}")
    outcome = change.outcome
    if state is ChangeState.COMPLETED:
        outcome = outcome or Outcome.SUCCESSFUL.value
    elif outcome is not None:
        raise _bad("outcome", "is only set when the change is completed")
    occurred = change.planned_start or now
    if state is ChangeState.IN_PROGRESS:
        occurred = now
    elif state is ChangeState.COMPLETED:
        occurred = min(occurred, now)
    return replace(change, state=state.value, outcome=outcome, occurred_at=occurred,
                   cis=tuple(dict.fromkeys(change.cis)))


async def create(conn: AsyncConnection, change: ChangeRecord, now: datetime, *,
                 state: ChangeState | None = None) -> tuple[int, ChangeRecord]:
    """File a change (see `new_change`) in the caller's transaction: its id and record."""
    change = new_change(change, now, state=state)
    change_id = await change_store.insert_change(conn, change, now)
    log.info("change filed", change_id=change_id, type=change.type, state=change.state,
             cis=list(change.cis))
    return change_id, change


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeEdit:
    """A PATCH: a state move and/or new values for the fields in `values`
    (`planned_start`, `planned_end`, `cis`, `approver`, `description`; None clears)."""

    state: ChangeState | None = None
    outcome: Outcome | None = None
    values: dict[str, Any] = field(default_factory=dict)


EDITABLE = frozenset({"planned_start", "planned_end", "cis", "approver", "description"})


async def edit(conn: AsyncConnection, change_id: int, change: ChangeEdit, now: datetime,
               *, actor: str = "api") -> None:
    """Apply a PATCH in the caller's transaction, or raise NotFound/InvalidTransition/
    InvalidInput and change nothing."""
    row = await change_store.get_change(conn, change_id)
    if row is None:
        raise NotFound(f"no change {change_id}")
    current = ChangeState(row.state)
    if current in FINAL_STATES:
        raise InvalidTransition(f"change {change_id} is {current.value}; a final change "
                                "cannot be edited")
    target = change.state if change.state is not None else current
    if target is not current and target not in NEXT_STATES[current]:
        allowed = ", ".join(sorted(NEXT_STATES[current])) or "nothing"
        raise InvalidTransition(f"change {change_id} cannot move from {current.value} to "
                                f"{target.value}; from {current.value} it can move to {allowed}")
    if change.outcome is not None and target is not ChangeState.COMPLETED:
        raise _bad("outcome", "is only set when the change is completed")
    values = _values(row, change, current, target, now)
    if not await change_store.update_change(conn, change_id, expect_state=current.value,
                                            values=values):
        raise InvalidTransition(f"change {change_id} was changed meanwhile; read it and retry")
    if target is not current:
        log.info("change moved", change_id=change_id, previous=current.value,
                 state=target.value, actor=actor)


def _values(row: Any, change: ChangeEdit, current: ChangeState, target: ChangeState,
            now: datetime) -> dict[str, Any]:
    unknown = set(change.values) - EDITABLE
    if unknown:
        raise _bad(sorted(unknown)[0], "cannot be changed")
    values: dict[str, Any] = {**change.values, "state": target.value, "updated_at": now}
    if "cis" in values:
        values["cis"] = list(dict.fromkeys(values["cis"] or ()))
    start = values.get("planned_start", row.planned_start)
    check_window(start, values.get("planned_end", row.planned_end))
    if target is ChangeState.IN_PROGRESS and current is not ChangeState.IN_PROGRESS:
        values["occurred_at"] = now  # the actual start replaces the planned one
    elif target in (ChangeState.REQUESTED, ChangeState.APPROVED) and "planned_start" in values:
        values["occurred_at"] = start or row.received_at  # not started: it follows the plan
    elif target is ChangeState.COMPLETED and current is not ChangeState.IN_PROGRESS:
        values["occurred_at"] = min(start or row.occurred_at, now)
    if target is ChangeState.COMPLETED:
        values["outcome"] = (change.outcome or Outcome.SUCCESSFUL).value
    return values


class ChangeRecorder:
    """Records change events (PagerDuty `/v2/change/enqueue`), each in its own commit."""

    def __init__(self, *, store: Store, clock: Clock,
                 topology: TopologyHolder | None = None) -> None:
        self._store = store
        self._clock = clock
        self._topology = topology

    async def record(self, change: ChangeRecord) -> None:
        change = self._bind(change)
        async with self._store.write() as conn:
            change_id = await change_store.insert_change(conn, change, self._clock.now())
        log.info("change recorded", change_id=change_id, integration=change.integration,
                 summary=change.summary[:200], cis=list(change.cis))

    def _bind(self, change: ChangeRecord) -> ChangeRecord:
        """The sender's `source` is the changed CI when it names one we know."""
        source = change.source
        if self._topology is not None and source is not None and source in self._topology.current:
            return replace(change, cis=(source,))
        return change


async def suspect(conn: AsyncConnection, topology: Topology, incident_ids: Iterable[int],
                  now: datetime, *, window_seconds: int, depth: int,
                  rows: Mapping[int, Any] | None = None) -> int:
    """Link each incident to the changes that may have caused it; returns new links made.

    A suspect touched one of the incident's CIs (root cause, bound alerts) or
    something they depend on within `depth` hops, was approved (or ran), and
    its time — from when it happened to its planned end — overlaps the
    `window_seconds` before the incident opened, up to now. `rows`: these incidents'
    rows, if the caller read them in this transaction.
    """
    # Cheap queries first: on most batches no change is recent enough to matter.
    opened = ({i: (r.created_at, r.root_cause_ci) for i, r in rows.items()}
              if rows is not None else await change_store.opened_at(conn, list(incident_ids)))
    if not opened:
        return 0
    window = timedelta(seconds=window_seconds)
    since = min(created for created, _ in opened.values()) - window
    candidates = await change_store.changes_around(
        conn, states=[s.value for s in SUSPECT_STATES], since=since, until=now)
    if not any(c.cis for c in candidates):
        return 0
    bound = await change_store.alert_cis(conn, list(opened))
    pairs: list[tuple[int, int]] = []
    for incident_id, (created, root) in opened.items():
        cis = bound.get(incident_id, set()) | ({root} if root else set())
        reach = set(cis)
        for ci in cis:
            reach |= topology.upstream(ci, depth)
        start = created - window
        for c in candidates:
            end = max(c.occurred_at, c.planned_end or c.occurred_at)
            if end >= start and not reach.isdisjoint(c.cis):
                pairs.append((c.id, incident_id))
    if not pairs:
        return 0
    known = await change_store.suspected_links(conn, list(opened))
    made = await change_store.link_incidents(conn, [p for p in pairs if p not in known], now)
    by_id = {c.id: c for c in candidates}
    await incident_store.add_timeline(conn, [
        (incident_id, TimelineEntry(
            at=now, actor=SYSTEM_ACTOR, kind=TimelineKind.CHANGE_SUSPECTED,
            detail={"change": change_id, "summary": by_id[change_id].summary,
                    "cis": list(by_id[change_id].cis)}))
        for change_id, incident_id in made
    ])
    return len(made)


async def suspects_of(conn: AsyncConnection, incident_ids: Sequence[int]
                      ) -> dict[int, list[dict[str, Any]]]:
    """Suspected changes per incident, latest first, as the incident JSON shows them."""
    out: dict[int, list[dict[str, Any]]] = {}
    for r in await change_store.suspects_of(conn, incident_ids):
        out.setdefault(r.incident_id, []).append({
            "id": r.id, "summary": r.summary, "type": r.type, "state": r.state,
            "cis": list(r.cis), "occurred_at": timestamp(r.occurred_at),
            "planned_start": timestamp(r.planned_start), "planned_end": timestamp(r.planned_end),
            "outcome": r.outcome,
        })
    return out

