"""Query and path parameters and JSON bodies, validated with field-named errors."""

from __future__ import annotations

import re
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from daemon.errors import InvalidInput, NotFound
from daemon.receivers.body import read_body
from daemon.receivers.validation import invalid_input, reject_nul

_KEY = re.compile(r"^INC-([0-9]+)$", re.IGNORECASE)
MAX_LIMIT = 500
# Ids are 64-bit in the store; a larger number names nothing (and would overflow a bind).
MAX_ID = 2**63 - 1


def number(raw: str) -> int | None:
    """`raw` as a whole number the store can hold, or None. ASCII digits only: `str.isdigit`
    also takes `²` and `٣`, which are no ids."""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19:
        return None
    value = int(raw)
    return value if value <= MAX_ID else None


def bad(field: str, reason: str) -> InvalidInput:
    return InvalidInput(f"{field}: {reason}", [{"field": field, "reason": reason}])


def limit(raw: str | None, default: int = 50) -> int:
    if raw is None:
        return default
    value = number(raw)
    if value is None or not 1 <= value <= MAX_LIMIT:
        raise bad("limit", f"must be a whole number from 1 to {MAX_LIMIT}")
    return value


def cursor(raw: str | None) -> int | None:
    """Cursors are the id to continue below; opaque to clients."""
    if raw is None or raw == "":
        return None
    value = number(raw)
    if value is None:
        raise bad("cursor", "not a cursor this API returned")
    return value


def incident_id(raw: str) -> int:
    """Accept the numeric id or the key (`INC-000123`)."""
    match = _KEY.match(raw)
    value = number(match.group(1) if match else raw)
    if value is None:
        raise NotFound(f"no incident {raw!r}")
    return value


def incident_filter(raw: str | None) -> int | None:
    """An optional `incident` query parameter: id or key; absent or empty is None."""
    if not raw:
        return None
    match = _KEY.match(raw)
    value = number(match.group(1) if match else raw)
    if value is None:
        raise bad("incident", "must be an incident id or key (INC-000123)")
    return value


_B = TypeVar("_B", bound=BaseModel)


async def json_body(request: web.Request, model: type[_B], *, limit: int,
                    required: bool = True) -> _B:
    """The request body validated by `model`; 400 naming the field, 413 past `limit`.
    Not `required`: an empty body is the model's defaults."""
    raw = await read_body(request, limit)
    reject_nul(raw)
    try:
        if not raw.strip() and not required:
            return model()
        return model.model_validate_json(raw or b"null")
    except ValidationError as exc:
        raise invalid_input(exc, "request body") from None
