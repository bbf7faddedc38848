"""`GET /api/v1/reports/summary`: MTTA/MTTR, SLA compliance, reopen and noise figures.

Definitions are in `daemon.itsm.reports`; this module only reads parameters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from daemon.api import params
from daemon.api.responses import json_response
from daemon.clock import Clock
from daemon.itsm import reports
from daemon.models import Priority
from daemon.store import Store

DEFAULT_RANGE = timedelta(days=7)

# RFC 3339 date-time. The offset sign may arrive as a space: an unencoded `+` in a
# query string decodes to one, and rejecting `...T12:00:00 01:00` would only puzzle.
_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2}(?:\.\d+)?)([Zz]|[+\- ]\d{2}:\d{2})$")
_EXAMPLE = "e.g. 2026-11-26T12:00:00Z"


class ReportRoutes:
    def __init__(self, *, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/api/v1/reports/summary", self.summary)]

    async def summary(self, request: web.Request) -> web.Response:
        query = summary_query(request.query, now=self._clock.now())
        return json_response(await read_summary(self._store, query))


async def read_summary(store: Store, query: reports.SummaryQuery) -> dict[str, Any]:
    """The summary report's document, its figures read in one snapshot."""
    async with store.read() as conn:
        if conn.dialect.name == "postgresql":
            # One snapshot for all the report's statements, so its figures agree
            # with each other while incidents keep arriving.
            conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        return await reports.summary(conn, query)


def summary_query(q: Mapping[str, str], *, now: datetime) -> reports.SummaryQuery:
    """Validate `since`, `until`, `service`, `priority`; each error names its field."""
    until = parse_time("until", q.get("until")) or now
    since = parse_time("since", q.get("since"))
    if since is None:
        try:
            since = until - DEFAULT_RANGE
        except OverflowError:
            raise params.bad("until", "too early to report the 7 days before it") from None
    if since >= until:
        raise params.bad("since", "must be before until")
    return reports.SummaryQuery(since=since, until=until, service=q.get("service") or None,
                                priorities=parse_priorities(q.get("priority")))


def parse_time(field: str, raw: str | None) -> datetime | None:
    if raw is None or raw == "":
        return None
    match = _RFC3339.match(raw)
    if match is None:
        raise params.bad(field, f"not an RFC 3339 timestamp ({_EXAMPLE})")
    date, time, offset = match.groups()
    offset = "+00:00" if offset in ("Z", "z") else offset.replace(" ", "+")
    try:
        return datetime.fromisoformat(f"{date}T{time}{offset}").astimezone(UTC)
    except (ValueError, OverflowError) as err:
        raise params.bad(field, f"not a valid time: {err}") from None


def parse_priorities(raw: str | None) -> tuple[str, ...]:
    """`P1` or `P1,P2`; returned in priority order, each once. Empty: every priority."""
    if not raw:
        return ()
    known = [p.value for p in Priority]
    asked = {part.strip() for part in raw.split(",")}
    unknown = sorted(asked - set(known))
    if unknown:
        raise params.bad("priority", f"unknown priority {unknown[0]!r}; use {', '.join(known)}"
                                     " or a comma list of them")
    return tuple(p for p in known if p in asked)
