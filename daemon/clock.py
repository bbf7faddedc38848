"""The one source of time, injectable so SLA and window logic is testable without sleeping."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def timestamp(value: datetime | None) -> str | None:
    """RFC 3339 in UTC with a `Z`, as every API answer writes times."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None
