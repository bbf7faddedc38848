"""Field mapping shared by the connectors: templates, the event in one line, ADF.

Templates come from the configuration (defaults that work, overridable per
connector) and render in the one sandbox of `daemon.templating`: incident text
is data, never code.

The render context is `{"incident": {...}, "event": {...}, "ci": {...} | None,
"note": "<the event in one line>"}`; the incident is the snapshot the outbox event
carries (its JSON as notifications show it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from daemon import templating
from daemon.itsm.connectors.base import ConnectorError

MAX_RENDERED_CHARS = 32 * 1024  # a field of a ticket, not a document


def render(template: str, context: Mapping[str, Any], *, path: str) -> str:
    """One template to one string; a template that cannot render is a dead letter
    (`ConnectorError`, not retryable): the configuration must change, not the timing."""
    try:
        text = templating.render(template, context, path=path)
    except templating.TemplateFailed as exc:
        raise ConnectorError(str(exc), retryable=False) from None
    return text[:MAX_RENDERED_CHARS]


def render_json(value: Any, context: Mapping[str, Any], *, path: str) -> Any:
    """Every string inside a JSON value rendered (keys stay as written)."""
    try:
        return templating.render_json(value, context, path=path)
    except templating.TemplateFailed as exc:
        raise ConnectorError(str(exc), retryable=False) from None


# -- the event in one line ----------------------------------------------------------


def describe(event: Mapping[str, Any]) -> str:
    """What happened, for a work note or a comment: `<what> by <actor>[: <why>]`."""
    kind = str(event.get("event_type", "event"))
    actor = str(event.get("actor") or "incidentd")
    detail: Mapping[str, Any] = event.get("detail") or {}
    incident: Mapping[str, Any] = event.get("incident") or {}
    said = _SAYINGS.get(kind)
    text = said(incident, detail) if said else kind
    why = detail.get("note") or detail.get("reason")
    line = f"{text} (by {actor})"
    return f"{line}: {why}" if why else line


def _opened(incident: Mapping[str, Any], detail: Mapping[str, Any]) -> str:
    return (f"Incident {incident.get('key')} opened: {incident.get('title')} "
            f"[{incident.get('priority') or 'no priority'}] {incident.get('url') or ''}").strip()


def _escalated(incident: Mapping[str, Any], detail: Mapping[str, Any]) -> str:
    targets = ", ".join(str(t) for t in detail.get("targets") or []) or "nobody"
    return f"Escalated to level {detail.get('level')}: {targets}"


def _priority(incident: Mapping[str, Any], detail: Mapping[str, Any]) -> str:
    return f"Priority changed from {detail.get('from') or 'none'} to {detail.get('to')}"


def _sla(word: str) -> Any:
    def say(incident: Mapping[str, Any], detail: Mapping[str, Any]) -> str:
        clock = detail.get("clock") or "SLA"
        return f"SLA {clock} target {word} (policy {detail.get('policy') or 'default'})"
    return say


def _runbook(word: str) -> Any:
    def say(incident: Mapping[str, Any], detail: Mapping[str, Any]) -> str:
        name = detail.get("runbook") or "a runbook"
        message = detail.get("message")
        return f"Runbook {name} {word}" + (f": {message}" if message else "")
    return say


_SAYINGS: dict[str, Any] = {
    "incident.triggered": _opened,
    "incident.acknowledged": lambda i, d: "Acknowledged in incidentd",
    "incident.resolved": lambda i, d: "Resolved in incidentd",
    "incident.reopened": lambda i, d: "Reopened in incidentd",
    "incident.escalated": _escalated,
    "incident.priority_updated": _priority,
    "incident.sla_warning": _sla("nearly due"),
    "incident.sla_breached": _sla("breached"),
    "runbook.pending_approval": _runbook("waits for approval"),
    "runbook.started": _runbook("started"),
    "runbook.succeeded": _runbook("succeeded"),
    "runbook.failed": _runbook("failed"),
    "runbook.notify": _runbook("says"),
}


# -- Atlassian Document Format -----------------------------------------------------------


def adf(text: str) -> dict[str, Any]:
    """Plain text as an ADF document: a paragraph per blank-line block, hard breaks
    for single newlines (Jira Cloud REST v3 takes rich text only in ADF)."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", text.strip()):
        content: list[dict[str, Any]] = []
        for i, line in enumerate(block.split("\n")):
            if i:
                content.append({"type": "hardBreak"})
            if line:
                content.append({"type": "text", "text": line})
        paragraphs.append({"type": "paragraph", "content": content})
    return {"type": "doc", "version": 1, "content": paragraphs or [
        {"type": "paragraph", "content": []}]}


def adf_text(value: Any) -> str:
    """The plain text of an ADF node (or a string, as webhooks on some sites send)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(adf_text(v) for v in value)
    if not isinstance(value, dict):
        return ""
    kind = value.get("type")
    if kind == "text":
        return str(value.get("text") or "")
    if kind == "hardBreak":
        return "\n"
    inner = adf_text(value.get("content") or [])
    return inner + "\n" if kind == "paragraph" else inner
