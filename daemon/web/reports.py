"""`/ui/reports?days=30`: the summary report's figures, with SVG charts.

The numbers are `GET /api/v1/reports/summary`'s document for the last `days`
days (7, 30 or 90), read by the same function; the charts are drawn on the
server by `daemon.web.charts`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiohttp import web

from daemon.api.reports import read_summary
from daemon.itsm.reports import SummaryQuery
from daemon.web import charts
from daemon.web.deps import ConsoleDeps
from daemon.web.render import render

PERIODS = (7, 30, 90)
DEFAULT_DAYS = 30


def routes(deps: ConsoleDeps) -> list[web.RouteDef]:
    pages = ReportPages(deps)
    return [web.get("/ui/reports", pages.reports)]


class ReportPages:
    def __init__(self, deps: ConsoleDeps) -> None:
        self._deps = deps

    async def reports(self, request: web.Request) -> web.Response:
        raw = request.query.get("days", "")
        days = int(raw) if raw in {str(p) for p in PERIODS} else DEFAULT_DAYS
        now = self._deps.clock.now()
        query = SummaryQuery(since=now - timedelta(days=days), until=now, service=None,
                             priorities=())
        summary = await read_summary(self._deps.store, query)
        return render(request, "reports.html", {
            "nav": "reports",
            "days": days,
            "periods": PERIODS,
            "unknown_period": bool(raw) and raw != str(days),
            "r": summary,
            **figures(summary, days),
        })


def figures(summary: dict[str, Any], days: int) -> dict[str, Any]:
    """The charts and the rows of their tables, from the summary document."""
    by_priority = summary["incidents"]["by_priority"]
    priority_bars = [charts.Bar(p, n) for p, n in by_priority.items()]
    sla_rows = [charts.Gauge(name.capitalize(), clock["compliance"])
                for name, clock in summary["sla"].items()]
    noise = summary["alerts"]["noise_reduction"]
    total = summary["incidents"]["total"]
    return {
        "priority_chart": charts.bar_chart(
            priority_bars,
            label=f"Incidents per priority, last {days} days: "
                  + ", ".join(f"{b.label} {charts.number(b.value)}" for b in priority_bars),
            empty="No incidents"),
        "priority_rows": priority_bars,
        "sla_chart": charts.gauges(
            sla_rows,
            label="SLA compliance: " + ", ".join(
                f"{g.label} {charts.percent(g.fraction)}" for g in sla_rows)),
        "noise_chart": charts.gauges(
            [charts.Gauge("Noise reduction", noise)],
            label=f"Noise reduction: {charts.percent(noise)}"),
        "incident_total": total,
        "percent": charts.percent,
        "number": charts.number,
    }
