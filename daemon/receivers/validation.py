"""Turning pydantic validation errors into client-facing field paths."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from pydantic import AfterValidator, ValidationError

from daemon.errors import InvalidInput


def field_path(loc: tuple[int | str, ...]) -> str:
    """`("alerts", 0, "labels")` → `alerts[0].labels`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(body)"


def invalid_input(exc: ValidationError, what: str) -> InvalidInput:
    errors = []
    for err in exc.errors(include_url=False):
        if err["type"] == "json_invalid":
            reason = err.get("ctx", {}).get("error", "invalid JSON")
            errors.append({"field": "(body)", "reason": f"invalid JSON: {reason}"})
            continue
        reason = err["msg"].removeprefix("Value error, ")
        errors.append({"field": field_path(err["loc"]), "reason": reason})
    first = errors[0] if errors else {"field": "(body)", "reason": "invalid"}
    return InvalidInput(f"invalid {what}: {first['field']}: {first['reason']}", errors)


def _utc(value: datetime) -> datetime:
    """Aware UTC. A time without an offset is taken as UTC, as most senders mean it."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("timestamp is out of range once converted to UTC") from None


Timestamp = Annotated[datetime, AfterValidator(_utc)]


def _storable(value: Any) -> Any:
    """JSON the store can keep: integers must fit in 64 bits."""
    try:
        orjson.dumps(value)
    except TypeError as exc:
        raise ValueError(f"cannot be stored: {exc}") from None
    return value


JsonValue = Annotated[Any, AfterValidator(_storable)]

# A NUL can reach a JSON string only as the escape \u0000 (with an even run of
# backslashes before it); PostgreSQL text cannot hold it.
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000", re.IGNORECASE)


def reject_nul(body: bytes) -> None:
    if b"\\u0000" in body.lower() and _NUL_ESCAPE.search(body):
        raise InvalidInput("NUL characters (\\u0000) are not accepted in any value",
                           [{"field": "(body)", "reason": "contains \\u0000"}])
