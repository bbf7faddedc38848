"""Grafana unified alerting webhook contact point (payload version "1").

The body is Alertmanager's webhook shape plus Grafana's fields: `orgId`,
`title`, `state`, `message`, and per alert `values`, `valueString` and the
silence, dashboard, panel and image URLs, which we keep as links.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import Field, ValidationError

from daemon.models import AlertEvent, Link, Severity
from daemon.receivers.alertmanager import WebhookAlert, WebhookMessage, convert
from daemon.receivers.normalize import Limits
from daemon.receivers.validation import invalid_input

SOURCE = "grafana"
# Grafana's code signs with the first name, its documentation says the second.
SIGNATURE_HEADERS = ("X-Grafana-Alerting-Signature", "X-Grafana-Alert-Signature")

_LINKS = (
    ("dashboardURL", "Dashboard"),
    ("panelURL", "Panel"),
    ("silenceURL", "Silence"),
    ("imageURL", "Image"),
)


class GrafanaAlert(WebhookAlert):
    values: dict[str, float | None] | None = None
    valueString: str = ""
    silenceURL: str = ""
    dashboardURL: str = ""
    panelURL: str = ""
    imageURL: str = ""


class GrafanaMessage(WebhookMessage):
    version: str = "1"
    alerts: list[GrafanaAlert]  # type: ignore[assignment]
    orgId: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    title: str = ""
    state: str = ""
    message: str = Field(default="", repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class GrafanaParser:
    integration: str
    default_severity: Severity
    limits: Limits
    source: ClassVar[str] = SOURCE

    def parse(self, body: bytes) -> list[AlertEvent]:
        try:
            message = GrafanaMessage.model_validate_json(body)
        except ValidationError as exc:
            raise invalid_input(exc, "Grafana webhook") from None
        alerts = [
            convert(
                a, source=SOURCE, integration=self.integration,
                default_severity=self.default_severity, group_key=message.groupKey,
                links=_links(a), details=_details(a, message),
            )
            for a in message.alerts
        ]
        self.limits.check(alerts)
        return list(alerts)


def _links(a: GrafanaAlert) -> tuple[Link, ...]:
    return tuple(Link(href=getattr(a, f), text=t) for f, t in _LINKS if getattr(a, f))


def _details(a: GrafanaAlert, message: GrafanaMessage) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if a.values:
        details["values"] = a.values
    if a.valueString:
        details["value_string"] = a.valueString
    if message.orgId is not None:
        details["org_id"] = message.orgId
    return details
