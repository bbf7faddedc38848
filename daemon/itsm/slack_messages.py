"""Outbound Slack messages: one notification envelope as a Block Kit message.

The message has a header (key and title), a section saying what happened with
fields Priority, Status, Root cause, Impacted services and SLA due, and, while
the incident is open, an `actions` block whose buttons have `action_id`
`acknowledge` and `resolve` and the incident id (as a string) as `value`: the
Slack interactivity handler reads those. A link button (`open_incident`) opens
the incident. A runbook run waiting for approval (`runbook.pending_approval`)
adds Approve / Deny buttons first, `action_id` `approve_run` and `deny_run` with
the run id (as a string) as `value`. `text` is the plain fallback Slack shows in
notifications.

Texts are clipped to Slack's limits (header 150, section text 3000, field 2000,
button text 75 characters), so an overlong title never makes Slack refuse the
message, and text from alerts is escaped for mrkdwn.
"""

from __future__ import annotations

from typing import Any

ACKNOWLEDGE = "acknowledge"
RESOLVE = "resolve"
OPEN = "open_incident"
APPROVE_RUN = "approve_run"
DENY_RUN = "deny_run"

_OPEN_STATUSES = ("triggered", "acknowledged", "on_hold")

_HEADLINES = {
    "incident.triggered": "Triggered",
    "incident.acknowledged": "Acknowledged by {actor}",
    "incident.escalated": "Escalated to level {level}",
    "incident.resolved": "Resolved by {actor}",
    "incident.reopened": "Reopened",
    "incident.priority_updated": "Priority changed by {actor}",
    "incident.sla_warning": "SLA warning: {clock} due {due}",
    "incident.sla_breached": "SLA breached: {clock} was due {due}",
    "runbook.pending_approval": "Runbook {runbook} waits for approval (run {run})",
    "runbook.started": "Runbook {runbook} started (run {run})",
    "runbook.succeeded": "Runbook {runbook} succeeded (run {run})",
    "runbook.failed": "Runbook {runbook} {outcome} (run {run})",
    "runbook.notify": "Runbook {runbook}: {message}",
}
PENDING_APPROVAL = "runbook.pending_approval"


def message(envelope: dict[str, Any]) -> dict[str, Any]:
    """The Block Kit message for one envelope (`{"event": {...}}`)."""
    event = envelope["event"]
    incident = event["incident"]
    headline = _headline(event)
    blocks: list[dict[str, Any]] = [
        {"type": "header",
         "text": {"type": "plain_text", "text": _clip(f"{incident['key']} {incident['title']}",
                                                       150), "emoji": True}},
        {"type": "section",
         "text": {"type": "mrkdwn", "text": _clip(f"*{_escape(headline)}*", 3000)},
         "fields": _fields(incident)},
        {"type": "actions", "block_id": f"incident:{incident['id']}",
         "elements": _run_buttons(event) + _buttons(incident)},
    ]
    fallback = (f"{incident['key']} {headline}: {incident['title']} "
                f"({incident.get('priority') or 'no priority'})")
    return {"text": _clip(fallback, 3000), "blocks": blocks}


def _headline(event: dict[str, Any]) -> str:
    template = _HEADLINES.get(event["event_type"], str(event["event_type"]))
    detail = event.get("detail") or {}
    return template.format(actor=event.get("actor") or "someone",
                           level=detail.get("level", "?"),
                           clock=detail.get("clock", "?"),
                           due=detail.get("due_at") or "?",
                           runbook=detail.get("runbook") or "?",
                           run=detail.get("run", "?"),
                           outcome=detail.get("status") or "failed",
                           message=detail.get("message") or "")


def _run_buttons(event: dict[str, Any]) -> list[dict[str, Any]]:
    """Approve / Deny for a run waiting for approval; the value is the run id."""
    run = (event.get("detail") or {}).get("run")
    if event["event_type"] != PENDING_APPROVAL or not isinstance(run, int):
        return []
    value = str(run)
    return [
        {"type": "button", "action_id": APPROVE_RUN, "value": value, "style": "primary",
         "text": {"type": "plain_text", "text": "Approve run"}},
        {"type": "button", "action_id": DENY_RUN, "value": value, "style": "danger",
         "text": {"type": "plain_text", "text": "Deny run"},
         "confirm": {
             "title": {"type": "plain_text", "text": "Deny?"},
             "text": {"type": "plain_text", "text": _clip(
                 f"Deny run {value} of {(event.get('detail') or {}).get('runbook', '?')}?",
                 300)},
             "confirm": {"type": "plain_text", "text": "Deny"},
             "deny": {"type": "plain_text", "text": "Cancel"}}},
    ]


def _fields(incident: dict[str, Any]) -> list[dict[str, Any]]:
    services = incident.get("impacted_services") or []
    return [
        _field("Priority", incident.get("priority") or "none"),
        _field("Status", incident["status"]),
        _field("Root cause", incident.get("root_cause_ci") or "unknown"),
        _field("Impacted services", ", ".join(services) if services else "none"),
        _field("SLA due", _sla_due(incident.get("sla") or [])),
    ]


def _field(name: str, value: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": _clip(f"*{name}*\n{_escape(value)}", 2000)}


def _sla_due(clocks: list[dict[str, Any]]) -> str:
    shown = [f"{c['clock']} {c['due_at']}" + (f" ({c['state']})" if c.get("state") != "running"
                                                else "")
             for c in clocks if c.get("due_at")]
    return "\n".join(shown) if shown else "none"


def _buttons(incident: dict[str, Any]) -> list[dict[str, Any]]:
    buttons: list[dict[str, Any]] = []
    value = str(incident["id"])
    if incident["status"] == "triggered":
        buttons.append({"type": "button", "action_id": ACKNOWLEDGE, "value": value,
                        "style": "primary",
                        "text": {"type": "plain_text", "text": "Acknowledge"}})
    if incident["status"] in _OPEN_STATUSES:
        buttons.append({"type": "button", "action_id": RESOLVE, "value": value,
                        "text": {"type": "plain_text", "text": "Resolve"},
                        "confirm": {
                            "title": {"type": "plain_text", "text": "Resolve?"},
                            "text": {"type": "plain_text",
                                     "text": _clip(f"Resolve {incident['key']}?", 300)},
                            "confirm": {"type": "plain_text", "text": "Resolve"},
                            "deny": {"type": "plain_text", "text": "Cancel"}}})
    buttons.append({"type": "button", "action_id": OPEN, "url": incident["url"],
                    "text": {"type": "plain_text", "text": "Open incident"}})
    return buttons


def _escape(text: str) -> str:
    """mrkdwn treats `<`, `>` and `&` as markup; alert text must not inject links."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
