"""Query and path parameters and JSON bodies, validated with field-named errors."""

from __future__ import annotations

import re
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from daemon.errors import InvalidInput, NotFound
from daemon.receivers.endpoint import read_body
from daemon.receivers.validation import invalid_input, reject_nul

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


def incident_filter(raw: str | None) -> int | None:
    """An optional `incident` query parameter: id or key; absent or empty is None."""
    if not raw:
        return None
    if raw.isdigit():
        return int(raw)
    match = _KEY.match(raw)
    if match is None:
        raise bad("incident", "must be an incident id or key (INC-000123)")
    return int(match.group(1))


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
