"""Incident and alert JSON, as documented in the README (a user-facing contract)."""

from __future__ import annotations

from typing import Any

from daemon.clock import timestamp
from daemon.models import Incident, IncidentAlert, TimelineEntry, incident_key


def alert_json(a: IncidentAlert) -> dict[str, Any]:
    return {
        "id": a.id,
        "fingerprint": a.fingerprint,
        "source": a.source,
        "status": a.status.value,
        "severity": a.severity.value,
        "summary": a.summary,
        "labels": a.labels,
        "annotations": a.annotations,
        "starts_at": timestamp(a.starts_at),
        "ends_at": timestamp(a.ends_at),
        "occurrences": a.occurrences,
        "last_seen": timestamp(a.last_seen),
        "ci": a.ci,
        "role": a.role,
        "flapping": a.flapping,
        "links": [{"href": link.href, "text": link.text} for link in a.links],
        "details": a.details,
    }


def timeline_json(e: TimelineEntry) -> dict[str, Any]:
    return {"at": timestamp(e.at), "actor": e.actor, "kind": e.kind.value, "detail": e.detail}


def incident_json(i: Incident, *, detail: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": i.id,
        "key": i.key,
        "title": i.title,
        "status": i.status.value,
        "severity": i.severity.value,
        "created_at": timestamp(i.created_at),
        "acknowledged_at": timestamp(i.acknowledged_at),
        "resolved_at": timestamp(i.resolved_at),
        "group_key": i.group_key,
        "priority": i.priority.value if i.priority else None,
        "impact": i.impact,
        "urgency": i.urgency,
        "priority_manual": i.priority_manual,
        "closed_at": timestamp(i.closed_at),
        "root_cause_ci": i.root_cause_ci,
        "impacted_cis": list(i.impacted_cis),
        "impacted_services": list(i.impacted_services),
        "merged_into": incident_key(i.merged_into) if i.merged_into else None,
        "alert_name": i.alert_name,
        "alerts": [alert_json(a) for a in i.alerts],
    }
    if detail:
        out["timeline"] = [timeline_json(e) for e in i.timeline]
    return out
