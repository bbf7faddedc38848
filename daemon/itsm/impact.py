"""Root cause and business impact of incidents, from their alerts and the CMDB graph.

The root cause is the most upstream CI with a firing alert (`root_cause`). The
impacted CIs are those that depend on it, transitively; the impacted services are
the business services among them and those they belong to.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.correlation.topology import Topology
from daemon.itsm.priority import PriorityMatrix
from daemon.itsm.root_cause import RootCauses
from daemon.models import SYSTEM_ACTOR, Severity, TimelineEntry, TimelineKind
from daemon.store import incidents as store
from daemon.store.link_memory import LinkMemory

# Bounds the impact list of a root cause deep in a huge graph (a core switch).
MAX_IMPACTED = 10_000


def impact(topology: Topology, root: str | None) -> tuple[list[str], list[str]]:
    if root is None or root not in topology:
        return [], []
    impacted = topology.downstream(root, limit=MAX_IMPACTED)
    services = topology.services_of(impacted | {root})
    return sorted(impacted), sorted(services)


@dataclass(frozen=True, slots=True)
class SeverityRaised:
    incident_id: int
    before: Severity
    after: Severity


async def refresh(conn: AsyncConnection, topology: Topology, incident_ids: Iterable[int],
                  now: datetime, *, priorities: PriorityMatrix, links: LinkMemory,
                  root_causes: RootCauses | None = None,
                  merged_into: Collection[int] = ()) -> list[SeverityRaised]:
    """Recompute root cause, impact, alert roles, severity (it only ever rises) and
    priority (unless set by hand) of incidents whose alerts changed: alerts linked at
    `now`, or moved in from other incidents (`merged_into`: those that took them).

    What the incidents' alerts add up to comes from `links` (kept between batches, or
    one row per (incident, CI) when not kept); of the alerts themselves only the labels
    the priority rules look at are read. `root_causes` keeps the counts behind each
    incident's root cause from one call to the next (none: counted afresh)."""
    ids = sorted(set(incident_ids))
    if not ids:
        return []
    if root_causes is None:
        root_causes = RootCauses()
    summaries = await links.summaries(conn, ids)
    labels = await store.label_values(conn, ids, priorities.label_names)
    before = await store.assessed(conn, ids)
    rows, entries, raised = [], [], []
    roots: dict[int, str | None] = {}
    for incident_id, summary in summaries.items():
        root = root_causes.of_links(topology, incident_id, summary)
        impacted, services = impact(topology, root)
        stored = before[incident_id]
        previous, severity = stored.root_cause_ci, stored.severity
        worst = severity if summary.worst is None else summary.worst
        if worst.rank < severity.rank:
            raised.append(SeverityRaised(incident_id, severity, worst))
            entries.append((incident_id, TimelineEntry(
                at=now, actor=SYSTEM_ACTOR, kind=TimelineKind.SEVERITY_RAISED,
                detail={"from": severity.value, "to": worst.value})))
            severity = worst
        assessment = priorities.assess(topology=topology, root=root, services=services,
                                       severity=severity, labels=labels.get(incident_id, ()))
        row = {"incident_id": incident_id, "root": root, "cis": impacted,
               "services": services, "sev": severity.value, "prio": assessment.priority.value,
               "imp": assessment.impact, "urg": assessment.urgency}
        if stored.priority_manual:
            row |= {"prio": stored.priority.value if stored.priority else None,
                    "imp": stored.impact, "urg": stored.urgency}
        elif stored.priority is not None and stored.priority is not assessment.priority:
            entries.append((incident_id, TimelineEntry(
                at=now, actor=SYSTEM_ACTOR, kind=TimelineKind.PRIORITY_CHANGED,
                detail={"from": stored.priority.value, "to": assessment.priority.value})))
        rows.append(row)
        roots[incident_id] = root
        if root != previous and previous is not None:
            entries.append((incident_id, TimelineEntry(
                at=now, actor=SYSTEM_ACTOR, kind=TimelineKind.ROOT_CAUSE_CHANGED,
                detail={"from": previous, "to": root})))
    await store.set_impact(conn, rows)
    # An incident whose root stayed and that took in no other's links needs roles only
    # for the alerts just linked (and a root-cause link, were there a stray one).
    settled = {i for i, root in roots.items()
               if root == before[i].root_cause_ci and i not in merged_into}
    await store.set_roles(conn, list(roots), settled=settled, added_at=now)
    await store.add_timeline(conn, entries)
    return raised

