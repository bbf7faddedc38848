"""Turning pydantic validation errors into client-facing field paths."""

from __future__ import annotations

from pydantic import ValidationError

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
