"""Prometheus Alertmanager webhook (`webhook_configs`, payload version 4)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from daemon.correlation.fingerprint import label_fingerprint
from daemon.errors import InvalidInput
from daemon.models import Alert, AlertEvent, AlertStatus, Link, Severity
from daemon.receivers.normalize import Limits
from daemon.receivers.validation import Timestamp, invalid_input

log = structlog.get_logger("incidentd.receivers")

SOURCE = "alertmanager"
# Alertmanager's "not set" time, sent as endsAt while an alert fires.
_ZERO_YEAR = 1


class _Payload(BaseModel):
    # Newer Alertmanagers may add fields; ignoring them keeps us compatible.
    model_config = ConfigDict(extra="ignore")


class WebhookAlert(_Payload):
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: Timestamp
    endsAt: Timestamp | None = None
    generatorURL: str = ""
    fingerprint: str = Field(default="", max_length=255)


class WebhookMessage(_Payload):
    version: str
    groupKey: str = ""
    truncatedAlerts: int = Field(default=0, ge=0)
    status: Literal["firing", "resolved"]
    receiver: str = ""
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    alerts: list[WebhookAlert]


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertmanagerParser:
    integration: str
    default_severity: Severity
    limits: Limits
    source: ClassVar[str] = SOURCE

    def parse(self, body: bytes) -> list[AlertEvent]:
        try:
            message = WebhookMessage.model_validate_json(body)
        except ValidationError as exc:
            raise invalid_input(exc, "Alertmanager webhook") from None
        if message.version != "4":
            raise InvalidInput(
                f"unsupported Alertmanager webhook version {message.version!r}; expected \"4\"",
                [{"field": "version", "reason": "expected \"4\""}],
            )
        if message.truncatedAlerts:
            # Alertmanager's `max_alerts` cut these; they never reach us, so say so loudly.
            log.warning(
                "Alertmanager truncated alerts from a notification; raise max_alerts",
                integration=self.integration, truncated=message.truncatedAlerts,
                group_key=message.groupKey,
            )
        alerts = [
            convert(a, source=SOURCE, integration=self.integration,
                    default_severity=self.default_severity, group_key=message.groupKey)
            for a in message.alerts
        ]
        self.limits.check(alerts)
        return list(alerts)


def convert(
    a: WebhookAlert,
    *,
    source: str,
    integration: str,
    default_severity: Severity,
    group_key: str,
    links: tuple[Link, ...] = (),
    details: dict[str, Any] | None = None,
) -> Alert:
    """One alert of an Alertmanager-shaped webhook (Alertmanager's or Grafana's)."""
    fingerprint = a.fingerprint or label_fingerprint(a.labels)
    return Alert(
        source=source,
        integration=integration,
        fingerprint=fingerprint,
        status=AlertStatus(a.status),
        severity=Severity.parse(a.labels.get("severity"), default_severity),
        summary=_summary(a),
        labels=a.labels,
        annotations=a.annotations,
        starts_at=a.startsAt,
        ends_at=None if a.endsAt is None or a.endsAt.year == _ZERO_YEAR else a.endsAt,
        generator_url=a.generatorURL or None,
        # Without a group key each alert is its own group.
        group_key=group_key or f"{source}:{fingerprint}",
        links=links,
        details=details or {},
    )


def _summary(a: WebhookAlert) -> str:
    for key in ("summary", "title", "description", "message"):
        if a.annotations.get(key):
            return a.annotations[key]
    return a.labels.get("alertname", "alert")
