"""`/ui/incidents/{id}`: one incident, and `/ui/incidents/{id}/live`, the part that
refreshes when the incident changes (Server-Sent Events tell the page when).

A face over the API: the incident is `GET /api/v1/incidents/{id}`'s own document
(`incident_json` with the API's `itsm_parts`), runbook runs are the runs list query,
the drawing walks the in-memory topology. `view` turns those into what the
templates show — plain words for states, one readable line per timeline entry —
and has no I/O, so it is tested directly. Every button posts to the JSON API
(`console.js`), which validates, enforces read-only sessions and records who did it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from daemon.api import params
from daemon.api.incidents import itsm_parts
from daemon.api.serialize import incident_json
from daemon.correlation.topology import Topology
from daemon.errors import NotFound
from daemon.itsm.incidents import MOVES
from daemon.models import IncidentStatus, Priority
from daemon.store import incidents as incident_store
from daemon.store import runbooks as run_store
from daemon.store.runbooks import RunView, run_json
from daemon.web import drawing
from daemon.web.deps import ConsoleDeps
from daemon.web.render import dt, duration, render

RUNS_SHOWN = 20  # the newest runs of the incident; older ones via the API
FINGERPRINT_CHARS = 12

# The incident's route takes the id or the key, like the API, and nothing else:
# `/ui/incidents/rows` (the list's live part) must not be taken for an id.
_ID = r"{id:(?:INC-)?\d+}"


def routes(deps: ConsoleDeps) -> list[web.RouteDef]:
    page = IncidentPage(deps)
    return [web.get(f"/ui/incidents/{_ID}", page.page),
            web.get(f"/ui/incidents/{_ID}/live", page.live)]


class IncidentPage:
    def __init__(self, deps: ConsoleDeps) -> None:
        self._deps = deps

    async def page(self, request: web.Request) -> web.Response:
        raw = request.match_info["id"]
        context = await self._load(raw)
        if context is None:
            return render(request, "incident.html",
                          {"nav": "incidents", "missing": raw, "i": None}, status=404)
        return render(request, "incident.html", {"nav": "incidents", **context})

    async def live(self, request: web.Request) -> web.Response:
        raw = request.match_info["id"]
        context = await self._load(raw)
        if context is None:
            raise NotFound(f"no incident {raw}")
        return render(request, "incident_live.html", {"nav": "incidents", **context})

    async def _load(self, raw: str) -> dict[str, Any] | None:
        try:
            incident_id = params.incident_id(raw)
        except NotFound:
            return None
        deps = self._deps
        now = deps.clock.now()
        async with deps.store.read() as conn:
            incident = await incident_store.get_incident(conn, incident_id)
            if incident is None:
                return None
            itsm: dict[str, Any] = {}
            if deps.followup is not None:  # None only in tests that build pages without it
                itsm = (await itsm_parts(conn, deps.followup, [incident_id], now))[incident_id]
            runs = await run_store.list_runs(conn, status=None, incident_id=incident_id,
                                             runbook=None, limit=RUNS_SHOWN + 1,
                                             before_id=None)
        return view(incident_json(incident, detail=True) | itsm, runs,
                    deps.topology.current)


# -- the view model (no I/O) ---------------------------------------------------------


def view(doc: dict[str, Any], runs: Sequence[RunView], topology: Topology) -> dict[str, Any]:
    """What incident.html shows, from the API's incident document and the runs."""
    status = IncidentStatus(doc["status"])
    root = doc.get("root_cause_ci")
    firing = {a["ci"] for a in doc["alerts"] if a["ci"] and a["status"] == "firing"}
    picture = (drawing.neighbourhood(topology, root, alerting=firing) if root else None)
    return {
        "i": doc,
        "status": status.value,
        "assignee_group": _assignee_group(doc, topology),
        "escalation": doc.get("escalation"),
        "sla": [_clock(c) for c in doc.get("sla", [])],
        "root": _ci(root, topology) if root else None,
        "impacted_cis": [_ci(c, topology) for c in doc["impacted_cis"]],
        "impacted_services": [_ci(c, topology) for c in doc["impacted_services"]],
        "topology_svg": drawing.svg(picture) if picture else None,
        "topology_more": picture.more_text if picture else "",
        "alerts": [_alert(a) for a in doc["alerts"]],
        # Newest first: what just happened is what a responder looks for.
        "timeline": [_entry(e) for e in reversed(doc.get("timeline", []))],
        "changes": doc.get("suspected_changes", []),
        "problems": doc.get("problems", []),
        "runs": [_run(r) for r in runs[:RUNS_SHOWN]],
        "more_runs": len(runs) > RUNS_SHOWN,
        "actions": _actions(status),
        "priorities": [p.value for p in Priority],
    }


def _actions(status: IncidentStatus) -> dict[str, bool]:
    """The buttons that make sense now, by the API's own transition rules."""
    return {
        "acknowledge": status in MOVES["acknowledge"].allowed_from,
        "resolve": status in MOVES["resolve"].allowed_from,
        # escalation.py: only a triggered or acknowledged incident is escalated.
        "escalate": status in (IncidentStatus.TRIGGERED, IncidentStatus.ACKNOWLEDGED),
        # The API takes a priority in any status; a closed incident is history.
        "set_priority": status is not IncidentStatus.CLOSED,
    }


def _assignee_group(doc: dict[str, Any], topology: Topology) -> str | None:
    """The root cause CI's owner group: where the ITSM connectors assign the ticket."""
    root = doc.get("root_cause_ci")
    ci = topology.cis.get(root) if root else None
    return ci.owner_group if ci else None


def _ci(ci_id: str, topology: Topology) -> dict[str, Any]:
    ci = topology.cis.get(ci_id)
    return {"id": ci_id, "name": ci.name if ci else ci_id, "type": ci.type if ci else None,
            "known": ci is not None}


_CLOCK_NAMES = {"response": "Response", "resolution": "Resolution"}


def _clock(c: dict[str, Any]) -> dict[str, Any]:
    """An SLA clock with its state in words (the page never says it by colour only)."""
    running = c.get("stopped_at") is None and c["state"] in ("running", "breached")
    if running and c.get("paused"):
        words, ticking = "paused (incident on hold)", False
    elif running:
        words = "breached, still running" if c["state"] == "breached" else "running"
        ticking = bool(c.get("due_at"))
    else:
        words, ticking = {"met": "met", "breached": "breached",
                          "cancelled": "cancelled"}.get(c["state"], c["state"]), False
    return c | {"name": _CLOCK_NAMES.get(c["clock"], c["clock"]), "words": words,
                "ticking": ticking, "breached": c["state"] == "breached"}


_ROLES = {"root_cause": "root cause", "symptom": "symptom", "unbound": "unbound (no CI)"}


def _alert(a: dict[str, Any]) -> dict[str, Any]:
    labels = a.get("labels") or {}
    return a | {"short": a["fingerprint"][:FINGERPRINT_CHARS],
                "name": labels.get("alertname") or "", "role_words": _ROLES.get(a["role"],
                                                                             a["role"])}


def _run(run: RunView) -> dict[str, Any]:
    doc = run_json(run)
    steps = [s | {"output_text": _text(s.get("output"))} for s in doc["steps"]]
    return doc | {"steps": steps, "waiting": run.status == run_store.PENDING_APPROVAL,
                  "status_words": run.status.replace("_", " ")}


def _text(value: Any) -> str:
    """A step's output as text: strings as they are, anything else as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, sort_keys=True, default=str)


# -- the timeline in words -----------------------------------------------------------


def _entry(e: dict[str, Any]) -> dict[str, Any]:
    detail = e.get("detail")
    d = detail if isinstance(detail, dict) else {}
    words = _SAY.get(e["kind"])
    text = None
    if words is not None and isinstance(detail, dict):
        try:
            text = words(d)
        except (KeyError, TypeError, ValueError):
            text = None  # a detail of an unexpected shape: show it raw below
    extra = [f"note: {d['note']}"] if d.get("note") and e["kind"] != "note" else []
    if d.get("origin"):
        extra.append(f"via {d['origin']}")
    return {"at": e["at"], "actor": e["actor"], "kind": e["kind"],
            "text": "; ".join([text or e["kind"].replace("_", " "), *extra]),
            "raw": None if text is not None else json.dumps(detail, indent=2, sort_keys=True,
                                                            default=str)}


def _from_to(what: str, d: dict[str, Any]) -> str:
    return f"{what} changed from {d.get('from') or 'none'} to {d.get('to') or 'none'}"


def _run_line(verb: str | None) -> Any:
    """`verb` None: the run's own final status (failed, denied, expired, skipped …)."""
    def say(d: dict[str, Any]) -> str:
        dry = " (dry run)" if d.get("dry_run") else ""
        how = verb or str(d.get("status") or "ended").replace("_", " ")
        line = f"Runbook {d['runbook']} run #{d['run']}{dry} {how}"
        if d.get("expires_at"):
            line += f" until {dt(d['expires_at'])}"
        return line + (f": {d['error']}" if d.get("error") else "")
    return say


def _sla_line(breached: bool) -> Any:
    def say(d: dict[str, Any]) -> str:
        clock = _CLOCK_NAMES.get(d["clock"], d["clock"])
        head = (f"{clock} SLA breached" if breached else
                f"{clock} SLA warning: {round(float(d['fraction']) * 100)} % of the time used")
        due = f", due {dt(d['due_at'])}" if d.get("due_at") else ""
        return f"{head} (target {duration(d['target_seconds'])}{due})"
    return say


def _escalated(d: dict[str, Any]) -> str:
    targets = ", ".join(str(t) for t in d.get("targets") or []) or "nobody"
    reason = f" ({d['reason']})" if d.get("reason") else ""
    return f"Escalated to level {d['level']} of {d['policy']}{reason}: notified {targets}"


def _opened(d: dict[str, Any]) -> str:
    count = len(d.get("alerts") or [])
    return f"Opened from {d['source']} with {count} alert{'s' if count != 1 else ''}"


def _attached(d: dict[str, Any]) -> str:
    on = f" on {d['ci']}" if d.get("ci") else ""
    flap = " (flapping)" if d.get("flapping") else ""
    return f"Alert {d['fingerprint'][:FINGERPRINT_CHARS]} attached{on}{flap}: {d['summary']}"


def _merged(d: dict[str, Any]) -> str:
    return f"Merged into {d['into']}" if d.get("into") else f"Merged in {d['from']}"


_SAY: dict[str, Any] = {
    "opened": _opened,
    "alert_attached": _attached,
    "alert_resolved": lambda d: f"Alert {d['fingerprint'][:FINGERPRINT_CHARS]} resolved",
    "acknowledged": lambda d: "Acknowledged",
    "resolved": lambda d: "Resolved" + (f": {d['reason']}" if d.get("reason") else ""),
    "merged": _merged,
    "root_cause_changed": lambda d: _from_to("Root cause", d),
    "severity_raised": lambda d: f"Severity raised from {d['from']} to {d['to']}",
    "priority_changed": lambda d: _from_to("Priority", d) + (
        f": {d['reason']}" if d.get("reason") else ""),
    "held": lambda d: "Put on hold",
    "resumed": lambda d: "Resumed",
    "reopened": lambda d: "Reopened" + (f": {d['reason']}" if d.get("reason") else ""),
    "closed": lambda d: "Closed" + (f": {d['reason']}" if d.get("reason") else ""),
    "sla_warning": _sla_line(breached=False),
    "sla_breached": _sla_line(breached=True),
    "escalated": _escalated,
    "problem_linked": lambda d: f"Linked to problem {d['problem']}: {d['title']}",
    "workaround": lambda d: f"Known-error workaround ({d['problem']}): {d['workaround']}",
    "change_suspected": lambda d: f"Change #{d['change']} suspected: {d['summary']}",
    "runbook_pending_approval": _run_line("waits for approval"),
    "runbook_started": _run_line("queued"),
    "runbook_succeeded": _run_line("succeeded"),
    "runbook_failed": _run_line(None),
    "runbook_notify": lambda d: f"Runbook {d['runbook']} says: {d['message']}",
    "note": lambda d: f"Note: {d['note']}",
}

