"""PagerDuty Events API v2: alert events (`/v2/enqueue`) and change events (`/v2/change/enqueue`).

Any tool that can page PagerDuty can send here unchanged: Alertmanager's
`pagerduty_configs` with `url`, Grafana, Zabbix, Datadog, scripts.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from daemon.clock import Clock
from daemon.errors import InvalidInput
from daemon.models import (
    Acknowledgement,
    Alert,
    AlertEvent,
    AlertStatus,
    ChangeRecord,
    Link,
    Severity,
)
from daemon.receivers.validation import JsonValue, Timestamp

SOURCE = "pagerduty"
# PagerDuty's own limit on an event body.
MAX_BODY_BYTES = 512 * 1024


class _Model(BaseModel):
    # PagerDuty ignores fields it does not know; so do we.
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class PDLink(_Model):
    href: str = Field(min_length=1, max_length=4096)
    text: str = Field(default="", max_length=1024)


class PDImage(_Model):
    src: str = Field(min_length=1, max_length=4096)
    href: str | None = Field(default=None, max_length=4096)
    alt: str | None = Field(default=None, max_length=1024)


class PDPayload(_Model):
    summary: str = Field(min_length=1, max_length=1024)
    source: str = Field(min_length=1, max_length=255)
    severity: Literal["critical", "error", "warning", "info"]
    timestamp: Timestamp | None = None
    component: str | None = Field(default=None, max_length=255)
    group: str | None = Field(default=None, max_length=255)
    class_: str | None = Field(default=None, alias="class", max_length=255)
    custom_details: JsonValue = None


class PDEvent(_Model):
    routing_key: str = Field(min_length=1, max_length=255)
    event_action: Literal["trigger", "acknowledge", "resolve"]
    dedup_key: str | None = Field(default=None, min_length=1, max_length=255)
    payload: PDPayload | None = None
    links: list[PDLink] = Field(default_factory=list)
    images: list[PDImage] = Field(default_factory=list)
    client: str | None = Field(default=None, max_length=1024)
    client_url: str | None = Field(default=None, max_length=4096)

    @model_validator(mode="before")
    @classmethod
    def _lenient_payload(cls, data: Any) -> Any:
        # Acknowledge and resolve events need no payload, and PagerDuty does
        # not reject them for a malformed one; neither do we.
        if (isinstance(data, dict) and data.get("event_action") in ("acknowledge", "resolve")
                and data.get("payload") is not None):
            try:
                PDPayload.model_validate(data["payload"])
            except ValidationError:
                return {**data, "payload": None}
        return data

    @model_validator(mode="after")
    def _action_needs(self) -> PDEvent:
        if self.event_action != "trigger" and not self.dedup_key:
            raise ValueError(f"dedup_key is required for {self.event_action} events")
        if self.event_action == "trigger" and self.payload is None:
            raise ValueError("payload is required for trigger events")
        return self


class PDChangePayload(_Model):
    summary: str = Field(min_length=1, max_length=1024)
    source: str | None = Field(default=None, max_length=255)
    timestamp: Timestamp | None = None
    custom_details: JsonValue = None


class PDChangeEvent(_Model):
    routing_key: str = Field(min_length=1, max_length=255)
    payload: PDChangePayload
    links: list[PDLink] = Field(default_factory=list)
    images: list[PDImage] = Field(default_factory=list)


_BLANK = {"missing", "string_too_short"}


def pd_errors(exc: ValidationError) -> list[str]:
    """Error strings in PagerDuty's words: `'payload.source' is missing or blank`."""
    out = []
    for err in exc.errors(include_url=False):
        path = ".".join(str(p) for p in err["loc"])
        reason = err["msg"].removeprefix("Value error, ")
        if not path:
            out.append(reason)
        elif err["type"] in _BLANK:
            out.append(f"'{path}' is missing or blank")
        else:
            out.append(f"'{path}' is invalid ({reason})")
    return out


class UnrecognizedEvent(InvalidInput):
    """The body is not a JSON object at all (PagerDuty answers this one differently)."""


def _invalid(exc: ValidationError) -> InvalidInput:
    if any(e["type"] in ("json_invalid", "model_type") and not e["loc"] for e in exc.errors()):
        return UnrecognizedEvent("Event object format is unrecognized",
                                 [{"field": "", "reason": "JSON parse error"}])
    return InvalidInput("Event object is invalid",
                        [{"field": e.split("'")[1] if e.startswith("'") else "", "reason": e}
                         for e in pd_errors(exc)])


def parse_event(body: bytes) -> PDEvent:
    try:
        return PDEvent.model_validate_json(body)
    except ValidationError as exc:
        raise _invalid(exc) from None


def parse_change(body: bytes) -> PDChangeEvent:
    try:
        return PDChangeEvent.model_validate_json(body)
    except ValidationError as exc:
        raise _invalid(exc) from None


def new_dedup_key() -> str:
    return uuid.uuid4().hex


def to_event(event: PDEvent, *, integration: str, dedup_key: str, clock: Clock) -> AlertEvent:
    """The event as our domain value; `dedup_key` is the alert's fingerprint."""
    if event.event_action == "acknowledge":
        return Acknowledgement(source=SOURCE, integration=integration, fingerprint=dedup_key)
    payload = event.payload
    now = clock.now()
    resolved = event.event_action == "resolve"
    labels = {}
    details: dict[str, Any] = {}
    if payload is not None:
        labels = {k: v for k, v in (("source", payload.source), ("component", payload.component),
                                    ("group", payload.group), ("class", payload.class_)) if v}
        if payload.custom_details is not None:
            details["custom_details"] = payload.custom_details
    if event.images:
        details["images"] = [i.model_dump(exclude_none=True) for i in event.images]
    if event.client:
        details["client"] = event.client
    links = [Link(href=link.href, text=link.text) for link in event.links]
    if event.client_url:
        links.append(Link(href=event.client_url, text=event.client or "client"))
    summary = payload.summary if payload else ""
    return Alert(
        source=SOURCE,
        integration=integration,
        fingerprint=dedup_key,
        status=AlertStatus.RESOLVED if resolved else AlertStatus.FIRING,
        severity=Severity(payload.severity) if payload else Severity.ERROR,
        summary=summary,
        labels=labels,
        annotations={"summary": summary} if summary else {},
        starts_at=(payload.timestamp if payload and payload.timestamp else now),
        ends_at=now if resolved else None,
        generator_url=event.client_url,
        # PagerDuty opens an incident per alert unless told to group.
        group_key=f"{SOURCE}:{integration}:{dedup_key}",
        links=tuple(links),
        details=details,
    )


def to_change(event: PDChangeEvent, *, integration: str, clock: Clock) -> ChangeRecord:
    """A change event is a standard change that already happened.

    Its CIs here are those named in `custom_details.ci`/`cis`; the recorder
    prefers `payload.source` when that names a known CI (it has the graph).
    """
    p = event.payload
    details: dict[str, Any] = {}
    if p.custom_details is not None:
        details["custom_details"] = p.custom_details
    if event.images:
        details["images"] = [i.model_dump(exclude_none=True) for i in event.images]
    return ChangeRecord(
        integration=integration,
        summary=p.summary,
        source=p.source,
        occurred_at=p.timestamp or clock.now(),
        details=details,
        links=tuple(Link(href=link.href, text=link.text) for link in event.links),
        type="standard",
        state="completed",
        cis=_change_cis(p.custom_details),
    )


_MAX_CHANGE_CIS = 100


def _change_cis(custom: Any) -> tuple[str, ...]:
    """`custom_details.ci` (one id) or `custom_details.cis` (a list); anything else: none."""
    if not isinstance(custom, dict):
        return ()
    given = custom.get("cis", custom.get("ci"))
    values = [given] if isinstance(given, str) else given if isinstance(given, list) else []
    # Free-form details: keep only plausible ids, once each, in the order given.
    ids = (v.strip() for v in values if isinstance(v, str))
    return tuple(dict.fromkeys(i for i in ids if 0 < len(i) <= 255))[:_MAX_CHANGE_CIS]
