"""Query and path parameters, validated with field-named errors."""

from __future__ import annotations

import re

from daemon.errors import InvalidInput, NotFound

_KEY = re.compile(r"^INC-(\d+)$", re.IGNORECASE)
MAX_LIMIT = 500


def bad(field: str, reason: str) -> InvalidInput:
    return InvalidInput(f"{field}: {reason}", [{"field": field, "reason": reason}])


def limit(raw: str | None, default: int = 50) -> int:
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise bad("limit", f"must be a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


def cursor(raw: str | None) -> int | None:
    """Cursors are the id to continue below; opaque to clients."""
    if raw is None or raw == "":
        return None
    if not raw.isdigit():
        raise bad("cursor", "not a cursor this API returned")
    return int(raw)


def incident_id(raw: str) -> int:
    """Accept the numeric id or the key (`INC-000123`)."""
    if raw.isdigit():
        return int(raw)
    match = _KEY.match(raw)
    if match:
        return int(match.group(1))
    raise NotFound(f"no incident {raw!r}")
