"""incidentd's own alert format, for scripts and systems with no native one.

`POST /api/v1/alerts` takes one alert object or a list of them. The schema
is `GenericAlert` (published as JSON Schema in `config/schemas/` and in the
OpenAPI document). Identity: `fingerprint` when given, else a hash of the
labels, else of the summary.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from daemon.clock import Clock
from daemon.correlation.fingerprint import label_fingerprint
from daemon.errors import InvalidInput
from daemon.models import Alert, AlertEvent, AlertStatus, Link, Severity
from daemon.receivers.normalize import Limits
from daemon.receivers.validation import JsonValue, Timestamp, invalid_input

SOURCE = "generic"


class GenericLink(BaseModel):
    model_config = ConfigDict(extra="forbid")
    href: str = Field(min_length=1, max_length=4096)
    text: str = Field(default="", max_length=1024)


class GenericAlert(BaseModel):
    """One alert. A firing alert needs a `summary`; a resolve needs only its identity."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{
            "summary": "Disk on db-1 is 95% full", "severity": "critical",
            "labels": {"alertname": "DiskFull", "instance": "db-1"},
            "links": [{"href": "https://grafana.example/d/disk", "text": "Dashboard"}],
        }]},
    )

    summary: str | None = Field(default=None, min_length=1, max_length=1024)
    status: Literal["firing", "resolved"] = "firing"
    severity: Literal["critical", "error", "warning", "info"] | None = Field(
        default=None, description="Defaults to the integration's default_severity.")
    fingerprint: str | None = Field(
        default=None, min_length=1, max_length=255,
        description="Stable identity; repeats update the open alert. "
                    "Default: a hash of the labels, else of the summary.")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: Timestamp | None = Field(default=None, description="RFC 3339; default: now.")
    ends_at: Timestamp | None = None
    generator_url: str | None = Field(default=None, max_length=4096)
    group: str | None = Field(
        default=None, max_length=1024,
        description="Alerts of one group open one incident. Default: the alert alone.")
    ci: str | None = Field(default=None, max_length=255, description="CI id this alert is about.")
    links: list[GenericLink] = Field(default_factory=list, max_length=50)
    details: dict[str, JsonValue] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _identifiable(self) -> GenericAlert:
        if self.status == "firing" and not self.summary:
            raise ValueError("a firing alert needs a summary")
        if self.status == "resolved" and not (self.fingerprint or self.labels or self.summary):
            raise ValueError("a resolve needs the fingerprint, labels or summary it fired with")
        return self


class GenericBody(RootModel[GenericAlert | list[GenericAlert]]):
    """The request body: one alert, or a list (for the published schema)."""


_ONE = TypeAdapter(GenericAlert)
_MANY = TypeAdapter(list[GenericAlert])


class GenericParser:
    source = SOURCE

    def __init__(self, *, integration: str, default_severity: Severity, limits: Limits,
                 clock: Clock) -> None:
        self.integration = integration
        self.default_severity = default_severity
        self.limits = limits
        self.clock = clock

    def parse(self, body: bytes) -> list[AlertEvent]:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"invalid JSON: {exc}",
                               [{"field": "(body)", "reason": f"invalid JSON: {exc}"}]) from None
        many = isinstance(data, list)
        try:
            # Validated as one or as many, not as a union, so errors name plain paths.
            items = _MANY.validate_python(data) if many else [_ONE.validate_python(data)]
        except ValidationError as exc:
            raise invalid_input(exc, "alert") from None
        now = self.clock.now()
        alerts = [self._alert(a, now) for a in items]
        self.limits.check(alerts, field_prefix="alerts" if many else "")
        return list(alerts)

    def _alert(self, a: GenericAlert, now: datetime) -> Alert:
        fingerprint = a.fingerprint or label_fingerprint(a.labels or {"summary": a.summary or ""})
        resolved = a.status == "resolved"
        return Alert(
            source=SOURCE,
            integration=self.integration,
            fingerprint=fingerprint,
            status=AlertStatus(a.status),
            severity=Severity(a.severity) if a.severity else self.default_severity,
            summary=a.summary or a.labels.get("alertname", ""),
            labels=a.labels,
            annotations={**({"summary": a.summary} if a.summary else {}), **a.annotations},
            starts_at=a.starts_at or now,
            ends_at=a.ends_at or (now if resolved else None),
            generator_url=a.generator_url,
            group_key=f"{SOURCE}:{self.integration}:{a.group or fingerprint}",
            ci_id=a.ci,
            links=tuple(Link(href=link.href, text=link.text) for link in a.links),
            details=a.details,
        )
