"""The summary report: exact figures over the incidents created in a time range.

`GET /api/v1/reports/summary?since=&until=&service=&priority=` counts from the
store itself (no sampling, no Prometheus). Definitions:

- **Scope**: incidents *created* in `[since, until)` (since included, until
  excluded), leaving out incidents merged into another (`merged_into` set).
  `priority` (one or a comma list of P1..P5) keeps incidents of those
  priorities; `service` keeps incidents whose `impacted_services` contain that
  business service id. Default range: the 7 days up to now.
- **incidents**: `total`, and counts `by_status` and `by_priority` (every
  status and priority is listed, `none` for incidents without a priority).
- **mtta_seconds**: `acknowledged_at - created_at` over the incidents that
  have `acknowledged_at`; **mttr_seconds**: `resolved_at - created_at` over
  those that have `resolved_at`. Each gives `count`, `mean`, `p50` and `p90`;
  percentiles are nearest-rank on the sorted values (the p-th percentile of n
  values is the ⌈p·n/100⌉-th smallest: p50 of [1, 2, 3, 4] is 2, p90 of ten
  values the 9th). With `count` 0, mean and percentiles are null.
- **sla**: per clock (`response`, `resolution`), the SLA clocks of those
  incidents: `met`, `breached` (whether still running or stopped), `running`
  (running, not yet breached); cancelled clocks are left out;
  `compliance = met / (met + breached)`, null when both are 0.
- **reopen_rate**: incidents with at least one `reopened` timeline entry,
  divided by `total`; null when there are no incidents.
- **alerts**: `total` = distinct alerts linked to those incidents;
  `per_incident` = total / incidents (null without incidents);
  `suppressed_by_maintenance` = alerts first seen in the range that fired
  under a change's maintenance window and joined no incident;
  `noise_reduction = 1 - incidents / (total + suppressed_by_maintenance)`,
  null when that sum is 0. Suppressed alerts opened no incident, so they have
  no priority and no impacted services: when a `service` or `priority` filter
  is given they match none and count 0.
- **changes**: changes that occurred (`occurred_at`) in the range, except
  those `requested`, `rejected` or `cancelled`: `total`; `with_incident` =
  those suspected of causing an incident; `failed` = outcome `failed` or
  `backed_out`; `success_rate` = the share with neither a suspected incident
  nor a failed outcome, null when `total` is 0. Changes are records of their
  own, not incidents: the `service`/`priority` filters do not narrow them.
- **automation**: `resolved_by_automation` = incidents in scope with
  `resolved_at` whose latest `resolved` timeline entry was written by a
  runbook (actor `runbook:<name>`); `share_of_resolutions` = that divided by
  the incidents in scope with `resolved_at` (the `mttr_seconds` count), null
  when none; `runs` = the runbook runs on the incidents in scope by status
  (every status listed, zeros included).

Ratios are plain floats, not rounded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.clock import timestamp
from daemon.models import IncidentStatus, Priority
from daemon.store import reports as report_store
from daemon.store.reports import ChangeCounts, ReportIncident
from daemon.store.runbooks import STATUSES as RUN_STATUSES

SLA_CLOCKS = ("response", "resolution")
_PERCENTILES = (50, 90)


@dataclass(frozen=True)
class SummaryQuery:
    """What the report covers: created in [since, until), optionally one service and priorities
    (an empty tuple means every priority)."""

    since: datetime
    until: datetime
    service: str | None
    priorities: tuple[str, ...]


async def summary(conn: AsyncConnection, query: SummaryQuery) -> dict[str, Any]:
    """The summary report as its JSON document (see the module docstring for definitions)."""
    found = await report_store.incidents_created(
        conn, since=query.since, until=query.until, priorities=query.priorities)
    scoped = [i for i in found if query.service is None or query.service in i.impacted_services]
    ids = [i.id for i in scoped]
    filtered = query.service is not None or bool(query.priorities)
    clocks = await report_store.clock_states(conn, ids)
    reopened = await report_store.reopened_count(conn, ids)
    linked = await report_store.linked_alert_count(conn, ids)
    suppressed = 0 if filtered else await report_store.suppressed_alert_count(
        conn, since=query.since, until=query.until)
    changes = await report_store.change_counts(conn, since=query.since, until=query.until)
    resolved_ids = [i.id for i in scoped if i.resolved_at is not None]
    automated = await report_store.resolved_by_automation(conn, resolved_ids)
    runs = await report_store.run_outcomes(conn, ids)
    return {
        "since": timestamp(query.since),
        "until": timestamp(query.until),
        "filters": {"service": query.service, "priority": list(query.priorities) or None},
        "incidents": _incident_counts(scoped),
        "mtta_seconds": stats(_seconds((i.created_at, i.acknowledged_at) for i in scoped)),
        "mttr_seconds": stats(_seconds((i.created_at, i.resolved_at) for i in scoped)),
        "sla": _sla(clocks),
        "reopen_rate": ratio(reopened, len(scoped)),
        "alerts": _alerts(incidents=len(scoped), linked=linked, suppressed=suppressed),
        "changes": _changes(changes),
        "automation": _automation(automated=automated, resolved=len(resolved_ids), runs=runs),
    }


def percentile(ordered: Sequence[float], p: int) -> float:
    """Nearest rank: the ⌈p·n/100⌉-th smallest of n sorted values (integer maths, no rounding
    surprises: in floats 0.07 * 100 is just above 7, and would take the 8th of 100)."""
    rank = max(1, -(-p * len(ordered) // 100))
    return ordered[rank - 1]


def stats(values: Iterable[float]) -> dict[str, Any]:
    ordered = sorted(values)
    if not ordered:
        return {"count": 0, "mean": None, "p50": None, "p90": None}
    return {
        "count": len(ordered),
        "mean": sum(ordered) / len(ordered),
        **{f"p{p}": percentile(ordered, p) for p in _PERCENTILES},
    }


def ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _seconds(pairs: Iterable[tuple[datetime, datetime | None]]) -> list[float]:
    return [(end - start).total_seconds() for start, end in pairs if end is not None]


def _incident_counts(scoped: Sequence[ReportIncident]) -> dict[str, Any]:
    by_status = Counter(i.status for i in scoped)
    by_priority = Counter(i.priority or "none" for i in scoped)
    statuses = [s.value for s in IncidentStatus]
    priorities = [p.value for p in Priority]
    return {
        "total": len(scoped),
        # Every known key, zeros included, so dashboards need no "missing means 0" rule;
        # a value outside the enums (from a newer daemon) is still counted, not dropped.
        "by_status": {s: by_status[s] for s in [*statuses, *sorted(set(by_status) - {*statuses})]},
        "by_priority": {p: by_priority[p] for p in [
            *priorities, *sorted(set(by_priority) - {*priorities, "none"}), "none"]},
    }


def _sla(clocks: Counter[tuple[str, str]]) -> dict[str, Any]:
    names = [*SLA_CLOCKS, *sorted({name for name, _ in clocks} - set(SLA_CLOCKS))]
    out: dict[str, Any] = {}
    for name in names:
        met, breached = clocks[(name, "met")], clocks[(name, "breached")]
        out[name] = {"met": met, "breached": breached, "running": clocks[(name, "running")],
                     "compliance": ratio(met, met + breached)}
    return out


def _alerts(*, incidents: int, linked: int, suppressed: int) -> dict[str, Any]:
    seen = linked + suppressed
    return {
        "total": linked,
        "per_incident": ratio(linked, incidents),
        "suppressed_by_maintenance": suppressed,
        "noise_reduction": 1 - incidents / seen if seen else None,
    }


def _automation(*, automated: int, resolved: int, runs: Counter[str]) -> dict[str, Any]:
    return {
        "resolved_by_automation": automated,
        "share_of_resolutions": ratio(automated, resolved),
        "runs": {s: runs[s] for s in [*RUN_STATUSES, *sorted(set(runs) - set(RUN_STATUSES))]},
    }


def _changes(c: ChangeCounts) -> dict[str, Any]:
    return {
        "total": c.total,
        "with_incident": c.with_incident,
        "success_rate": ratio(c.total - c.unsuccessful, c.total),
        "failed": c.failed,
    }

