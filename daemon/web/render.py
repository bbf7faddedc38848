"""Rendering console pages: the template environment, its filters, and `render`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from daemon.api.session import SESSION_KEY, ConsoleSession
from daemon.clock import Clock

TEMPLATES = Path(__file__).parent / "templates"
_CLOCK_KEY = web.AppKey("console_clock", Clock)
_NEVER = datetime.max.replace(tzinfo=UTC)


def setup_templates(app: web.Application, clock: Clock) -> None:
    env = aiohttp_jinja2.setup(
        app, loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters.update(ago=ago, dt=dt, duration=duration)
    env.globals.update(next_due=next_due)
    app[_CLOCK_KEY] = clock


def render(request: web.Request, template: str, context: dict[str, Any], *,
           status: int = 200) -> web.Response:
    """A page with what every page needs: the session, whether it may change things,
    its CSRF token, the `actor` its forms send (who the timeline says did it), and
    `now` (which `ago` counts from)."""
    session: ConsoleSession | None = request.get(SESSION_KEY)
    full = {
        "session": session,
        "can_change": bool(session and session.can_change),
        "csrf_token": session.csrf_token if session else "",
        "actor": session.actor if session else "",
        "nav": "",
        "now": request.app[_CLOCK_KEY].now().astimezone(UTC),
        **context,
    }
    response = aiohttp_jinja2.render_template(template, request, full, status=status)
    response.headers["Cache-Control"] = "no-store"
    return response


# -- filters -------------------------------------------------------------------------


def _as_datetime(value: datetime | str | None) -> datetime | None:
    """Pages hand over the API's JSON (RFC 3339 strings) or datetimes alike."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def dt(value: datetime | str | None) -> str:
    """`2026-11-27 04:31 UTC`."""
    at = _as_datetime(value)
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if at else ""


@jinja2.pass_context
def ago(context: jinja2.runtime.Context, value: datetime | str | None) -> str:
    """`5 min ago`, counted from the page's `now`."""
    at = _as_datetime(value)
    if at is None:
        return ""
    now = context.get("now") or datetime.now(UTC)
    seconds = (now - at).total_seconds()
    if seconds < 0:
        return "in " + duration(-seconds)
    if seconds < 60:
        return "just now"
    return duration(seconds) + " ago"


def duration(seconds: float | int | None) -> str:
    """`45 s`, `12 min`, `1 h 04 min`, `3 d 2 h`."""
    if seconds is None:
        return ""
    total = round(float(seconds))
    if total < 60:
        return f"{total} s"
    minutes, hours, days = total // 60, total // 3600, total // 86400
    if total < 3600:
        return f"{minutes} min"
    if total < 86400:
        return f"{hours} h {minutes % 60:02d} min"
    return f"{days} d {hours % 24} h"


def next_due(clocks: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """The SLA clock to watch: the running one due soonest (a breached one still counts,
    overdue); a paused one only when nothing runs. None when no clock runs."""
    live = [c for c in clocks or [] if c.get("stopped_at") is None
            and c.get("state") in ("running", "breached")]
    ticking = [c for c in live if not c.get("paused") and c.get("due_at")]
    if ticking:
        return min(ticking, key=lambda c: _as_datetime(c["due_at"]) or _NEVER)
    return live[0] if live else None
