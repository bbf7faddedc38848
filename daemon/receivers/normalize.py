"""What every receiver does after parsing: bound the request, then add integration defaults."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from daemon.errors import InvalidInput
from daemon.models import Alert, AlertEvent


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    max_alerts: int = 1000
    max_labels: int = 64
    max_label_name_length: int = 256
    max_label_value_length: int = 4096

    def check(self, alerts: Sequence[Alert], *, field_prefix: str = "alerts") -> None:
        """Raise `InvalidInput` naming the first field over a limit; nothing is stored then."""
        if len(alerts) > self.max_alerts:
            self._fail(field_prefix or "(body)", f"{len(alerts)} alerts in one request; at most "
                                     f"{self.max_alerts}")
        for i, alert in enumerate(alerts):
            where = f"{field_prefix}[{i}].labels" if field_prefix else "labels"
            if len(alert.labels) > self.max_labels:
                self._fail(where, f"{len(alert.labels)} labels; at most {self.max_labels}")
            for name, value in alert.labels.items():
                if len(name) > self.max_label_name_length:
                    self._fail(where, f"label name {name[:40]!r}… is longer than "
                                      f"{self.max_label_name_length}")
                if len(value) > self.max_label_value_length:
                    self._fail(f"{where}.{name}", f"value is longer than "
                                                  f"{self.max_label_value_length}")

    @staticmethod
    def _fail(where: str, reason: str) -> None:
        raise InvalidInput(f"{where}: {reason}", [{"field": where, "reason": reason}])


@dataclass(frozen=True, slots=True, kw_only=True)
class Defaults:
    """Labels and hints an integration adds; what the alert says itself wins."""

    labels: dict[str, str] = field(default_factory=dict)
    service: str | None = None
    ci: str | None = None

    def apply(self, events: Sequence[AlertEvent]) -> list[AlertEvent]:
        extra = dict(self.labels)
        if self.service:
            extra.setdefault("service", self.service)
        if not extra and not self.ci:
            return list(events)
        return [self._one(e, extra) if isinstance(e, Alert) else e for e in events]

    def _one(self, alert: Alert, extra: dict[str, str]) -> Alert:
        return replace(alert, labels={**extra, **alert.labels}, ci_id=alert.ci_id or self.ci)
