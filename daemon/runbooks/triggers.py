"""Where runs come from: alerts joining incidents, a person asking, and approvals.

`create_runs` is called from `FollowUp.after`, in the transaction that linked
the alerts, so a run exists exactly when its alert does. The guards that hold
when a run is made are decided here, in this order: the kill switch and the
circuit breaker (→ skipped), the rate limit per runbook per CI (→ skipped),
approval (→ pending_approval), else queued. Every run leaves an entry in its
incident's timeline, so the automation is audited where people look.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from daemon import metrics
from daemon.clock import timestamp
from daemon.config import RunbooksConfig
from daemon.correlation.topology import TopologyHolder
from daemon.errors import InvalidTransition, NotFound
from daemon.models import (
    OPEN_STATUSES,
    ConfigurationItem,
    TimelineEntry,
    TimelineKind,
    incident_key,
)
from daemon.runbooks.catalog import CatalogHolder, Runbook
from daemon.runbooks.matching import matches
from daemon.runbooks.templates import TemplateFailed, render
from daemon.store import incidents as incident_store
from daemon.store import runbooks as store
from daemon.store.runbooks import NewRun, RunbookState, RunView

if TYPE_CHECKING:
    from daemon.itsm.followup import FollowUp

log = structlog.get_logger(__name__)

ALERT = "alert"
MANUAL = "manual"
TRIGGER_ACTOR = "incidentd"


class Triggers:
    """Makes runs (with their guard decisions) and moves them through approval."""

    def __init__(self, *, catalog: CatalogHolder, config: RunbooksConfig,
                 topology: TopologyHolder) -> None:
        self._catalog = catalog
        self._config = config
        self._topology = topology
        # Set by the composition root once the FollowUp exists (it holds this object):
        # timeline entries written outside `FollowUp.after` (approve, deny, manual
        # runs, expiry) then reach the notification outbox too.
        self.followup: FollowUp | None = None

    def reconfigure(self, config: RunbooksConfig) -> None:
        """A configuration reload: runs made from now on follow `config` (dry run, approval
        time); the catalog itself is replaced in its holder."""
        self._config = config

    # -- making runs -----------------------------------------------------------

    async def create_runs(self, conn: AsyncConnection, incident_ids: Iterable[int],
                          now: datetime, *, rows: Mapping[int, Any] | None = None
                          ) -> list[int]:
        """Runs for the firing alerts linked to these incidents at `now`; their ids.
        `rows`: these incidents' rows, if the caller read them in this transaction."""
        runbooks = self._catalog.current.runbooks
        ids = sorted(set(incident_ids))
        if not runbooks or not ids:
            return []  # the hot path pays nothing while automation is unused
        links = await store.linked_at(conn, ids, now)
        if not links:
            return []
        incidents = rows if rows is not None else await store.incident_rows(conn, ids)
        # The guards are read at the first match: most batches match no runbook, and
        # nothing before the first run is created can change them.
        guards: Mapping[str, RunbookState] | None = None
        made: list[int] = []
        for incident_id, alert in links:
            incident = incidents[incident_id]
            ci = self._topology.current.cis.get(alert.ci_id) if alert.ci_id else None
            for runbook in runbooks.values():
                if not matches(runbook, labels=alert.labels, incident_status=incident.status,
                               priority=incident.priority,
                               impacted_services=list(incident.impacted_services),
                               ci=ci):
                    continue
                if guards is None:
                    guards = await store.states(conn)
                run_id = await self._create(
                    conn, runbook, context=render_context(alert, incident, ci),
                    incident_id=incident_id, alert_id=alert.id, ci_id=ci.id if ci else None,
                    trigger=ALERT, actor=TRIGGER_ACTOR, guards=guards, now=now)
                if run_id is not None:
                    made.append(run_id)
        return made

    async def run_manually(self, conn: AsyncConnection, runbook: str, incident_id: int, *,
                           actor: str, now: datetime) -> int:
        """A person runs `runbook` on an incident (no matching; every other guard holds)."""
        found = self._catalog.current.runbooks.get(runbook)
        if found is None:
            raise NotFound(f"no runbook {runbook}")
        incident = (await store.incident_rows(conn, [incident_id])).get(incident_id)
        if incident is None:
            raise NotFound(f"no incident {incident_key(incident_id)}")
        if incident.status not in {s.value for s in OPEN_STATUSES}:
            raise InvalidTransition(f"{incident_key(incident_id)} is {incident.status}; "
                                    "runbooks run only on open incidents")
        alert = await store.lead_alert(conn, incident_id)
        ci_id = incident.root_cause_ci or (alert.ci_id if alert is not None else None)
        ci = self._topology.current.cis.get(ci_id) if ci_id else None
        run_id = await self._create(
            conn, found, context=render_context(alert, incident, ci), incident_id=incident_id,
            alert_id=None, ci_id=ci.id if ci else ci_id, trigger=MANUAL, actor=actor,
            guards=await store.states(conn), now=now)
        assert run_id is not None  # manual runs have no alert: nothing to conflict with
        await self._after(conn, [incident_id], now)
        return run_id

    async def _create(self, conn: AsyncConnection, runbook: Runbook, *,
                      context: dict[str, Any], incident_id: int, alert_id: int | None,
                      ci_id: str | None, trigger: str, actor: str,
                      guards: Mapping[str, RunbookState], now: datetime) -> int | None:
        status, error, expires = await self._decide(conn, runbook, ci_id, guards, now)
        params: dict[str, Any] = {}
        if status != store.SKIPPED:
            try:
                params = render_params(runbook, context)
            except TemplateFailed as exc:
                status, error, expires = store.FAILED, f"parameter {exc}", None
        dry_run = runbook.dry_run or self._config.dry_run
        run_id = await store.insert_run(conn, NewRun(
            runbook=runbook.name, incident_id=incident_id, alert_id=alert_id, ci_id=ci_id,
            status=status, dry_run=dry_run, trigger=trigger, actor=actor, params=params,
            context=context, error=error, approval_expires_at=expires), now)
        if run_id is None:
            return None  # this alert already has its run of this runbook
        await incident_store.add_timeline(conn, [(incident_id, _entry(
            run_id, runbook.name, status, actor=actor, now=now, dry_run=dry_run, error=error,
            expires=expires, trigger=trigger))])
        if status in (store.SKIPPED, store.FAILED):
            metrics.RUNBOOK_RUNS.labels(runbook.name, status).inc()
        log.info("runbook run created", run=run_id, runbook=runbook.name,
                 incident=incident_key(incident_id), status=status, dry_run=dry_run,
                 reason=error)
        return run_id

    async def _decide(self, conn: AsyncConnection, runbook: Runbook, ci_id: str | None,
                      guards: Mapping[str, RunbookState], now: datetime
                      ) -> tuple[str, str | None, datetime | None]:
        """(status, why, approval expiry) of a new run of `runbook` on `ci_id`."""
        why = disabled_reason(guards, runbook.name)
        if why is not None:
            return store.SKIPPED, why, None
        limit = runbook.rate_limit
        if limit is not None:
            since = now - timedelta(seconds=limit.per_seconds)
            count = await store.count_recent(conn, runbook.name, ci_id, since)
            if count >= limit.max_runs:
                return store.SKIPPED, (f"rate limited: {count} runs in the last "
                                       f"{limit.per_seconds} s on {ci_id or 'no CI'} (at "
                                       f"most {limit.max_runs})"), None
        if runbook.approval == "required":
            ttl = timedelta(seconds=self._config.approval_ttl_seconds)
            return store.PENDING_APPROVAL, None, now + ttl
        return store.QUEUED, None, None

    # -- approval ----------------------------------------------------------------

    async def approve(self, conn: AsyncConnection, run_id: int, *, actor: str,
                      now: datetime) -> RunView:
        """pending_approval → queued, approved by `actor`."""
        run = await self._pending(conn, run_id, now)
        [moved] = await store.move(conn, [run.id], allowed_from=[store.PENDING_APPROVAL],
                                   to=store.QUEUED, now=now, approver=actor)
        await self._timeline(conn, moved, store.QUEUED, actor=actor, now=now,
                             approver=actor)
        log.info("runbook run approved", run=run.id, runbook=run.runbook, approver=actor)
        return moved

    async def deny(self, conn: AsyncConnection, run_id: int, *, actor: str,
                   now: datetime) -> RunView:
        """pending_approval → denied by `actor`; it never runs."""
        run = await self._pending(conn, run_id, now)
        [moved] = await store.move(conn, [run.id], allowed_from=[store.PENDING_APPROVAL],
                                   to=store.DENIED, now=now, approver=actor,
                                   error=f"denied by {actor}")
        await self._timeline(conn, moved, store.DENIED, actor=actor, now=now,
                             approver=actor, error=moved.error)
        metrics.RUNBOOK_RUNS.labels(run.runbook, store.DENIED).inc()
        log.info("runbook run denied", run=run.id, runbook=run.runbook, approver=actor)
        return moved

    async def _pending(self, conn: AsyncConnection, run_id: int, now: datetime) -> RunView:
        run = await store.get_run(conn, run_id, lock=True)
        if run is None:
            raise NotFound(f"no runbook run {run_id}")
        expired = (run.status == store.EXPIRED or (
            run.status == store.PENDING_APPROVAL and run.approval_expires_at is not None
            and run.approval_expires_at <= now))
        if expired:
            raise InvalidTransition(f"runbook run {run_id} expired: its approval was due by "
                                    f"{timestamp(run.approval_expires_at)}")
        if run.status != store.PENDING_APPROVAL:
            who = f" by {run.approver}" if run.approver else ""
            raise InvalidTransition(f"runbook run {run_id} is {run.status}{who}; only a run "
                                    "pending approval can be approved or denied")
        return run

    async def expire(self, conn: AsyncConnection, now: datetime) -> int:
        """Pending approvals past their time → expired (with a timeline entry each)."""
        expired = await store.expire_due(conn, now)
        for run in expired:
            await self._timeline(conn, run, store.EXPIRED, actor=TRIGGER_ACTOR, now=now,
                                 error=run.error)
            metrics.RUNBOOK_RUNS.labels(run.runbook, store.EXPIRED).inc()
            log.info("runbook approval expired", run=run.id, runbook=run.runbook)
        await self._after(conn, [r.incident_id for r in expired if r.incident_id], now)
        return len(expired)

    async def _timeline(self, conn: AsyncConnection, run: RunView, status: str, *, actor: str,
                        now: datetime, approver: str | None = None,
                        error: str | None = None) -> None:
        if run.incident_id is None:
            return
        entry = _entry(run.id, run.runbook, status, actor=actor, now=now, dry_run=run.dry_run,
                       error=error, expires=None, trigger=run.trigger)
        if approver is not None:
            entry.detail["approver"] = approver
        await incident_store.add_timeline(conn, [(run.incident_id, entry)])
        if status != store.EXPIRED:  # expire() calls the follow-up once for all of them
            await self._after(conn, [run.incident_id], now)

    async def _after(self, conn: AsyncConnection, incident_ids: list[int],
                     now: datetime) -> None:
        if self.followup is not None and incident_ids:
            await self.followup.after(conn, incident_ids, now)


# -- helpers ---------------------------------------------------------------------


def disabled_reason(guards: Mapping[str, RunbookState], runbook: str) -> str | None:
    """Why `runbook` may not run now (kill switch, open breaker), or None."""
    switch = guards.get(store.KILL_SWITCH)
    if switch is not None and switch.disabled:
        return f"all runbooks are disabled (kill switch): {switch.reason or 'no reason given'}"
    own = guards.get(runbook)
    if own is not None and own.disabled:
        return f"runbook {runbook} is disabled: {own.reason or 'no reason given'}"
    return None


_KINDS = {
    store.QUEUED: TimelineKind.RUNBOOK_STARTED,
    store.PENDING_APPROVAL: TimelineKind.RUNBOOK_PENDING_APPROVAL,
    store.SUCCEEDED: TimelineKind.RUNBOOK_SUCCEEDED,
}


def _entry(run_id: int, runbook: str, status: str, *, actor: str, now: datetime,
           dry_run: bool, error: str | None, expires: datetime | None,
           trigger: str) -> TimelineEntry:
    """The timeline entry of a run reaching `status` (skipped, denied … are `failed`)."""
    detail: dict[str, Any] = {"run": run_id, "runbook": runbook, "status": status,
                              "dry_run": dry_run, "trigger": trigger}
    if error is not None:
        detail["error"] = error
    if expires is not None:
        detail["expires_at"] = timestamp(expires)
    return TimelineEntry(at=now, actor=actor, kind=_KINDS.get(status, TimelineKind.RUNBOOK_FAILED),
                         detail=detail)


def render_params(runbook: Runbook, context: Mapping[str, Any]) -> dict[str, str]:
    return {name: render(template, context, path=f"{runbook.name}.params.{name}")
            for name, template in runbook.params.items()}


def render_context(alert: Any | None, incident: Any, ci: ConfigurationItem | None
                   ) -> dict[str, Any]:
    """What templates see of the alert, incident and CI (JSON, stored with the run)."""
    return {
        "alert": None if alert is None else {
            "id": alert.id, "labels": dict(alert.labels),
            "annotations": dict(alert.annotations), "fingerprint": alert.fingerprint,
            "summary": alert.summary, "severity": alert.severity, "source": alert.source,
            "status": alert.status, "starts_at": timestamp(alert.starts_at),
        },
        "incident": {
            "id": incident.id, "key": incident_key(incident.id), "title": incident.title,
            "status": incident.status, "priority": incident.priority,
            "severity": incident.severity, "root_cause_ci": incident.root_cause_ci,
            "impacted_services": list(incident.impacted_services),
        },
        "ci": None if ci is None else {
            "id": ci.id, "name": ci.name, "type": ci.type, "service": ci.service,
            "owner_group": ci.owner_group, "criticality": ci.criticality,
            "environment": ci.environment, "attributes": dict(ci.attributes),
        },
    }
