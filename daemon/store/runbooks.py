"""Repository functions for runbook runs (`runbook_runs`) and their guards (`runbook_state`).

Runs move pending_approval → queued → running → succeeded | failed (or denied,
expired, interrupted, skipped). Every move is a guarded UPDATE (`WHERE status
IN …`), so two replicas, or a person and a timer, never both move one run.
The partial unique index on `ci_id WHERE status = 'running'` is the per-CI
lock: setting a second run on the same CI running fails with an IntegrityError.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.clock import timestamp
from daemon.models import AlertStatus
from daemon.store.in_lists import padded
from daemon.store.tables import alerts, incident_alerts, incidents, runbook_runs, runbook_state

# The row of `runbook_state` that is the global kill switch.
KILL_SWITCH = "*"

PENDING_APPROVAL = "pending_approval"
QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
DENIED = "denied"
EXPIRED = "expired"
INTERRUPTED = "interrupted"
SKIPPED = "skipped"
STATUSES = (PENDING_APPROVAL, QUEUED, RUNNING, SUCCEEDED, FAILED, DENIED, EXPIRED,
            INTERRUPTED, SKIPPED)
FINAL = (SUCCEEDED, FAILED, DENIED, EXPIRED, INTERRUPTED, SKIPPED)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunView:
    """One run as stored (every column)."""

    id: int
    runbook: str
    incident_id: int | None
    alert_id: int | None
    ci_id: str | None
    status: str
    dry_run: bool
    trigger: str
    actor: str
    approver: str | None
    params: dict[str, Any]
    context: dict[str, Any]
    steps: list[dict[str, Any]]
    error: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    approval_expires_at: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class NewRun:
    runbook: str
    incident_id: int | None
    alert_id: int | None
    ci_id: str | None
    status: str
    dry_run: bool
    trigger: str  # alert | manual
    actor: str
    params: dict[str, Any]
    context: dict[str, Any]
    error: str | None = None
    approval_expires_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunbookState:
    runbook: str
    consecutive_failures: int
    disabled: bool
    reason: str | None
    updated_at: datetime


def _view(r: Any) -> RunView:
    return RunView(
        id=r.id, runbook=r.runbook, incident_id=r.incident_id, alert_id=r.alert_id,
        ci_id=r.ci_id, status=r.status, dry_run=bool(r.dry_run), trigger=r.trigger,
        actor=r.actor, approver=r.approver, params=dict(r.params or {}),
        context=dict(r.context or {}), steps=list(r.steps or []), error=r.error,
        created_at=r.created_at, updated_at=r.updated_at, started_at=r.started_at,
        finished_at=r.finished_at, approval_expires_at=r.approval_expires_at,
    )


def _state(r: Any) -> RunbookState:
    return RunbookState(runbook=r.runbook, consecutive_failures=r.consecutive_failures,
                        disabled=bool(r.disabled), reason=r.reason, updated_at=r.updated_at)


def _insert(conn: AsyncConnection, table: sa.Table) -> Any:
    return (postgresql.insert(table) if conn.dialect.name == "postgresql"
            else sqlite.insert(table))


# -- runs ----------------------------------------------------------------------


async def insert_run(conn: AsyncConnection, new: NewRun, now: datetime) -> int | None:
    """Insert a run; None when this runbook already has a run for this incident and alert
    (ingest may see the same alert twice)."""
    stmt = _insert(conn, runbook_runs).on_conflict_do_nothing(
        index_elements=[runbook_runs.c.runbook, runbook_runs.c.incident_id,
                        runbook_runs.c.alert_id])
    finished = now if new.status in FINAL else None
    values: dict[str, Any] = {
        "runbook": new.runbook, "incident_id": new.incident_id, "alert_id": new.alert_id,
        "ci_id": new.ci_id, "status": new.status, "dry_run": new.dry_run,
        "trigger": new.trigger, "actor": new.actor, "params": new.params,
        "context": new.context, "steps": [], "error": new.error, "created_at": now,
        "updated_at": now, "finished_at": finished,
        "approval_expires_at": new.approval_expires_at,
    }
    row = (await conn.execute(stmt.values(values).returning(runbook_runs.c.id))).first()
    return None if row is None else int(row.id)


async def count_recent(conn: AsyncConnection, runbook: str, ci_id: str | None,
                       since: datetime) -> int:
    """Runs of `runbook` on `ci_id` (None: runs on no CI) created since `since`, not
    counting skipped ones: the rate limit counts attempts, not refusals."""
    on_ci = (runbook_runs.c.ci_id.is_(None) if ci_id is None
             else runbook_runs.c.ci_id == ci_id)
    count = await conn.scalar(
        sa.select(sa.func.count()).select_from(runbook_runs)
        .where(runbook_runs.c.runbook == runbook, on_ci,
               runbook_runs.c.created_at >= since, runbook_runs.c.status != SKIPPED))
    return int(count or 0)


async def get_run(conn: AsyncConnection, run_id: int, *, lock: bool = False) -> RunView | None:
    query = sa.select(runbook_runs).where(runbook_runs.c.id == run_id)
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    return _view(row) if row else None


async def list_runs(conn: AsyncConnection, *, status: Sequence[str] | None,
                    incident_id: int | None, runbook: str | None, limit: int,
                    before_id: int | None) -> list[RunView]:
    """Newest first, keyset-paginated on id."""
    query = sa.select(runbook_runs).order_by(runbook_runs.c.id.desc()).limit(limit)
    if status:
        query = query.where(runbook_runs.c.status.in_(list(status)))
    if incident_id is not None:
        query = query.where(runbook_runs.c.incident_id == incident_id)
    if runbook is not None:
        query = query.where(runbook_runs.c.runbook == runbook)
    if before_id is not None:
        query = query.where(runbook_runs.c.id < before_id)
    return [_view(r) for r in await conn.execute(query)]


async def queued(conn: AsyncConnection, *, limit: int) -> list[RunView]:
    """Queued runs, oldest first. On PostgreSQL they stay locked until the caller's
    transaction ends and rows another replica holds are skipped, so no run is claimed
    twice; SQLite has one writer, which is as good."""
    query = (sa.select(runbook_runs).where(runbook_runs.c.status == QUEUED)
             .order_by(runbook_runs.c.id).limit(limit))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return [_view(r) for r in await conn.execute(query)]


async def any_queued(conn: AsyncConnection) -> bool:
    found = await conn.scalar(
        sa.select(runbook_runs.c.id).where(runbook_runs.c.status == QUEUED).limit(1))
    return found is not None


async def running(conn: AsyncConnection) -> list[RunView]:
    query = (sa.select(runbook_runs).where(runbook_runs.c.status == RUNNING)
             .order_by(runbook_runs.c.id))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return [_view(r) for r in await conn.execute(query)]


async def move(conn: AsyncConnection, run_ids: Sequence[int], *, allowed_from: Sequence[str],
               to: str, now: datetime, **values: Any) -> list[RunView]:
    """Move runs whose status is in `allowed_from` to `to`; returns those moved."""
    if not run_ids:
        return []
    if to in FINAL:
        values.setdefault("finished_at", now)
    result = await conn.execute(
        sa.update(runbook_runs)
        .where(runbook_runs.c.id.in_(padded(run_ids)),
               runbook_runs.c.status.in_(list(allowed_from)))
        .values(status=to, updated_at=now, **values)
        .returning(*runbook_runs.c)
    )
    return sorted((_view(r) for r in result), key=lambda v: v.id)


async def expire_due(conn: AsyncConnection, now: datetime) -> list[RunView]:
    """Pending approvals whose time ran out → expired; returns them."""
    result = await conn.execute(
        sa.update(runbook_runs)
        .where(runbook_runs.c.status == PENDING_APPROVAL,
               runbook_runs.c.approval_expires_at <= now)
        .values(status=EXPIRED, updated_at=now, finished_at=now,
                error="approval expired: nobody approved or denied it in time")
        .returning(*runbook_runs.c)
    )
    return sorted((_view(r) for r in result), key=lambda v: v.id)


async def set_steps(conn: AsyncConnection, run_id: int, steps: list[dict[str, Any]],
                    now: datetime) -> None:
    """Write a running run's step records (the whole list: the executor owns it now)."""
    await conn.execute(
        sa.update(runbook_runs)
        .where(runbook_runs.c.id == run_id, runbook_runs.c.status == RUNNING)
        .values(steps=steps, updated_at=now))


# -- guards ------------------------------------------------------------------


async def states(conn: AsyncConnection) -> dict[str, RunbookState]:
    result = await conn.execute(sa.select(runbook_state).order_by(runbook_state.c.runbook))
    return {r.runbook: _state(r) for r in result}


async def set_disabled(conn: AsyncConnection, runbook: str, *, disabled: bool,
                       reason: str | None, now: datetime) -> None:
    """Disable or enable a runbook (`*`: all of them). Enabling closes the breaker."""
    values: dict[str, Any] = {"disabled": disabled, "reason": reason, "updated_at": now}
    if not disabled:
        values["consecutive_failures"] = 0
    stmt = _insert(conn, runbook_state).values({"consecutive_failures": 0, **values,
                                                "runbook": runbook})
    await conn.execute(stmt.on_conflict_do_update(index_elements=[runbook_state.c.runbook],
                                                  set_=values))


async def record_outcome(conn: AsyncConnection, runbook: str, *, failed: bool, threshold: int,
                         reason: str, now: datetime) -> RunbookState:
    """Count a real (not dry) run's outcome: a success resets the failures; the
    `threshold`-th failure in a row opens the breaker (disables the runbook)."""
    table = runbook_state
    if failed:
        count = table.c.consecutive_failures + 1
        update: dict[str, Any] = {
            "consecutive_failures": count,
            "disabled": sa.or_(table.c.disabled, count >= threshold),
            "reason": sa.case((sa.and_(count >= threshold, sa.not_(table.c.disabled)),
                               reason), else_=table.c.reason),
            "updated_at": now,
        }
        first = {"consecutive_failures": 1, "disabled": threshold <= 1,
                 "reason": reason if threshold <= 1 else None}
    else:
        update = {"consecutive_failures": 0, "updated_at": now}
        first = {"consecutive_failures": 0, "disabled": False, "reason": None}
    stmt = _insert(conn, table).values(runbook=runbook, updated_at=now, **first)
    stmt = stmt.on_conflict_do_update(index_elements=[table.c.runbook], set_=update)
    row = (await conn.execute(stmt.returning(*table.c))).one()
    return _state(row)


# -- the API -----------------------------------------------------------------


def run_json(run: RunView) -> dict[str, Any]:
    """A run as the API shows it."""
    return {
        "id": run.id, "runbook": run.runbook, "incident_id": run.incident_id,
        "alert_id": run.alert_id, "ci": run.ci_id, "status": run.status,
        "dry_run": run.dry_run, "trigger": run.trigger, "actor": run.actor,
        "approver": run.approver, "params": run.params, "steps": run.steps,
        "error": run.error, "created_at": timestamp(run.created_at),
        "updated_at": timestamp(run.updated_at), "started_at": timestamp(run.started_at),
        "finished_at": timestamp(run.finished_at),
        "approval_expires_at": timestamp(run.approval_expires_at),
    }


# -- what runs are made from ---------------------------------------------------


async def linked_at(conn: AsyncConnection, incident_ids: Sequence[int], now: datetime
                    ) -> list[tuple[int, Any]]:
    """(incident id, alert row) of the firing alerts linked to these incidents at `now`."""
    if not incident_ids:
        return []
    # Found through ix_incident_alerts_incident_id_added_at: the links of this instant
    # (a batch's worth), whatever the size of the incidents. Firing is tested here, not
    # in SQL: with `alerts.status` in the WHERE, SQLite's planner (no statistics) drove
    # from all firing alerts into the links instead (~20 ms with 5,000 open alerts).
    result = await conn.execute(
        sa.select(incident_alerts.c.incident_id.label("link_incident_id"), alerts)
        .join(alerts, alerts.c.id == incident_alerts.c.alert_id)
        .where(incident_alerts.c.incident_id.in_(padded(incident_ids)),
               incident_alerts.c.added_at == now)
        .order_by(incident_alerts.c.incident_id, alerts.c.id))
    firing = AlertStatus.FIRING.value
    return [(r.link_incident_id, r) for r in result if r.status == firing]


async def incident_rows(conn: AsyncConnection, incident_ids: Sequence[int]) -> dict[int, Any]:
    if not incident_ids:
        return {}
    result = await conn.execute(
        sa.select(incidents).where(incidents.c.id.in_(padded(incident_ids))))
    return {r.id: r for r in result}


async def lead_alert(conn: AsyncConnection, incident_id: int) -> Any | None:
    """The alert a manual run renders from: the newest firing one, else the newest."""
    firing = sa.case((alerts.c.status == AlertStatus.FIRING.value, 0), else_=1)
    return (await conn.execute(
        sa.select(alerts).join(incident_alerts, incident_alerts.c.alert_id == alerts.c.id)
        .where(incident_alerts.c.incident_id == incident_id)
        .order_by(firing, alerts.c.id.desc()).limit(1))).first()


async def still_firing(conn: AsyncConnection, *, incident_id: int | None,
                       alert_id: int | None) -> int:
    """How many of the alerts a run waits for still fire: its triggering alert, or
    (a manual run) every alert of its incident."""
    query = sa.select(sa.func.count()).select_from(alerts).where(
        alerts.c.status == AlertStatus.FIRING.value)
    if alert_id is not None:
        query = query.where(alerts.c.id == alert_id)
    else:
        members = sa.select(incident_alerts.c.alert_id).where(
            incident_alerts.c.incident_id == incident_id)
        query = query.where(alerts.c.id.in_(members))
    return int(await conn.scalar(query) or 0)


async def running_fixes(conn: AsyncConnection, incident_ids: Sequence[int]) -> dict[int, str]:
    """Incident → the runbook of a real (not dry) run in progress on it."""
    if not incident_ids:
        return {}
    result = await conn.execute(
        sa.select(runbook_runs.c.incident_id, runbook_runs.c.runbook)
        .where(runbook_runs.c.incident_id.in_(padded(incident_ids)),
               runbook_runs.c.status == "running", runbook_runs.c.dry_run.is_(False))
        .order_by(runbook_runs.c.id))
    return {r.incident_id: r.runbook for r in result}


async def stale_running(conn: AsyncConnection, *, silent_since: datetime, owner: str
                        ) -> list[RunView]:
    """Runs `running` in another process that has not sent a heartbeat since then
    (or never did: runs from before heartbeats)."""
    heartbeat = runbook_runs.c.heartbeat_at
    result = await conn.execute(
        sa.select(runbook_runs)
        .where(runbook_runs.c.status == RUNNING,
               sa.or_(runbook_runs.c.owner.is_(None), runbook_runs.c.owner != owner),
               sa.or_(heartbeat.is_(None), heartbeat < silent_since))
        .order_by(runbook_runs.c.id))
    return [_view(r) for r in result]


async def heartbeat(conn: AsyncConnection, *, owner: str, now: datetime) -> None:
    await conn.execute(
        sa.update(runbook_runs)
        .where(runbook_runs.c.owner == owner, runbook_runs.c.status == RUNNING)
        .values(heartbeat_at=now))
