"""The shipped dashboard and recording rules, run against a real Prometheus.

A real daemon handles a scripted scenario in real time: seven incidents on
two business services, six of them acknowledged and resolved after known
waits of a few seconds (the histograms' first buckets are 1, 5 and 10 s).
A real Prometheus scrapes it every second with
`config/prometheus/incidentd-rules.yaml` loaded (its groups evaluated every
second here). Then every PromQL expression of
`config/grafana/incidentd-dashboard.json` and every recording rule goes
through Prometheus's `/api/v1/query` and must succeed (the MTTA, MTTR,
open-incident and alert-volume panels with data), and the median time to
resolve that `histogram_quantile` computes must fall in the same histogram
bucket as the exact `mttr_seconds.p50` of `GET /api/v1/reports/summary`.

Counters only count what Prometheus saw change: a histogram series that
first appears already holding an observation loses it to `increase()`.
So a warm-up incident per (service, priority) first creates every series
the scenario will touch, and the measured window starts after Prometheus
has scraped them.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.integration.test_shipped_dashboard import (
    dashboard_targets,
    load_dashboard,
    load_rules,
    recording_rules,
)

from .harness import (
    DaemonProcess,
    IncidentdClient,
    ProcessRegistry,
    PrometheusProcess,
    example_config,
    poll,
    short_json,
)

pytestmark = pytest.mark.e2e

GENERIC_TOKEN = "e2e-generic-token-41d7"
JOB = "incidentd"

# Two business services with independent hosts: no dependency edges, so every
# alert opens its own incident (nothing correlates), and each incident's
# primary service is its host's.
CMDB = {
    "cis": [
        {"id": "svc-shop", "name": "Shop", "type": "service", "criticality": 1},
        {"id": "svc-blog", "name": "Blog", "type": "service", "criticality": 3},
        *({"id": f"shop-{i}", "name": f"Shop host {i}", "type": "host",
           "service": "svc-shop", "criticality": 2} for i in range(5)),
        *({"id": f"blog-{i}", "name": f"Blog host {i}", "type": "host",
           "service": "svc-blog", "criticality": 3} for i in range(5)),
    ]
}

# (host, seconds to acknowledge, seconds to resolve, how it resolves) per measured
# incident, times counted from its opening. Sorted:
#   MTTA 1.5 2 2.5 3 3.5 6.5  → nearest-rank p50 2.5, histogram rank 3 of 6 in (1, 5]
#   MTTR 2.5 3.5 6.5 7.5 8.5 11 → nearest-rank p50 6.5, histogram rank 3 of 6 in (5, 10]
# Every value keeps half a second or more from a bucket bound.
SCENARIO: list[tuple[str, float, float, str]] = [
    ("shop-1", 1.5, 2.5, "manual"),
    ("blog-1", 2.0, 3.5, "manual"),
    ("shop-2", 2.5, 6.5, "alert"),   # its alert clears: automatic resolution
    ("blog-2", 3.0, 7.5, "manual"),
    ("shop-3", 3.5, 8.5, "alert"),
    ("blog-3", 6.5, 11.0, "manual"),
]
STAYS_OPEN = "shop-4"  # triggered, never acknowledged: the open-incident panels show it

# Panels that must return data after the scenario, not just succeed.
MUST_HAVE_DATA = {
    "MTTA (time to acknowledge) over the range",
    "MTTR (time to resolve) over the range",
    "MTTA trend (rolling 24 h)",
    "MTTR trend (rolling 24 h)",
    "MTTR p50 by priority (recording rule, 24 h)",
    "Open incidents by priority",
    "Open incidents by status",
    "Incidents opened / resolved over the range",
    "Alert volume vs incidents",
    "Alerts by outcome",
    "Noise reduction over the range",
}
RECORDS_WITH_DATA = {
    "incidentd:mtta_seconds:p50_1d", "incidentd:mtta_seconds:p90_1d",
    "incidentd:mttr_seconds:p50_1d", "incidentd:mttr_seconds:p90_1d",
}

SCRAPE_TIMEOUT = 30.0


def alert(host: str, *, status: str = "firing") -> dict[str, Any]:
    return {
        "summary": f"{host} is unhealthy",
        "status": status,
        "severity": "critical",
        "fingerprint": f"grafana-e2e-{host}",
        "ci": host,
        "labels": {"alertname": "HostUnhealthy", "host": host},
    }


def rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


class Scenario:
    def __init__(self, daemon: DaemonProcess, client: IncidentdClient,
                 prometheus: PrometheusProcess, http: aiohttp.ClientSession,
                 procs: ProcessRegistry) -> None:
        self.daemon = daemon
        self.client = client
        self.prometheus = prometheus
        self.http = http
        self.procs = procs

    async def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        async with self.http.post(
            self.daemon.integration_url("generic"), json=alerts,
            headers={"Authorization": f"Bearer {GENERIC_TOKEN}"},
        ) as resp:
            text = await resp.text()
            assert 200 <= resp.status < 300, f"POST generic alerts: {resp.status} {text}"

    async def open(self, hosts: list[str]) -> dict[str, dict[str, Any]]:
        """Fire one alert per host; their incidents by host."""
        await self.post_alerts([alert(h) for h in hosts])
        fingerprints = {alert(h)["fingerprint"]: h for h in hosts}

        def found(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]] | None:
            by_host = {fingerprints[a["fingerprint"]]: i for i in items for a in i["alerts"]
                       if a["fingerprint"] in fingerprints}
            return by_host if len(by_host) == len(hosts) else None

        incidents: dict[str, dict[str, Any]] = await poll(
            f"incidents for {hosts}", self.client.all_incidents, found,
            within=10, diagnostics=self.procs.describe, interval=0.05)
        assert len({i["id"] for i in incidents.values()}) == len(hosts), short_json(incidents)
        return incidents

    async def acknowledge(self, incident_id: int) -> None:
        answer = await self.client.action(incident_id, "acknowledge", actor="alice")
        assert answer["status"] == "acknowledged", answer

    async def resolve(self, host: str, incident_id: int, how: str) -> None:
        if how == "manual":
            answer = await self.client.action(incident_id, "resolve", actor="alice")
            assert answer["status"] == "resolved", answer
        else:
            await self.post_alerts([alert(host, status="resolved")])

    async def promql(self, expr: str, at: float) -> list[dict[str, Any]]:
        """Run an instant query; fail with Prometheus's own error when it does not succeed."""
        async with self.http.get(f"{self.prometheus.url}/api/v1/query",
                                 params={"query": expr, "time": f"{at:.3f}"}) as resp:
            body = await resp.json(content_type=None)
        assert resp.status == 200 and body.get("status") == "success", (
            f"Prometheus refused {expr!r}: HTTP {resp.status} {short_json(body)}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    async def scalar(self, expr: str, at: float) -> float:
        result = await self.promql(expr, at)
        assert len(result) == 1, f"{expr!r} gave {short_json(result)}"
        return float(result[0]["value"][1])

    async def wait_scraped(self, expr: str, want: float) -> None:
        async def fetch() -> tuple[float | None, Any]:
            return await self.prometheus.query_sum(self.http, expr)

        await poll(f"Prometheus to report {expr} == {want}", fetch,
                   lambda answer: answer[0] == want, within=SCRAPE_TIMEOUT,
                   diagnostics=self.procs.describe)


def prometheus_rule_groups() -> list[dict[str, Any]]:
    """The shipped rule groups, evaluated every second instead of every minute."""
    groups: list[dict[str, Any]] = load_rules()["groups"]
    for group in groups:
        group["interval"] = "1s"
    return groups


def bucket_of(value: float, bounds: list[float]) -> tuple[float, float]:
    """(lower, upper] of the histogram bucket holding `value`."""
    lower = 0.0
    for upper in bounds:
        if value <= upper:
            return lower, upper
        lower = upper
    return lower, math.inf


def panel_query(expr: str, window: str) -> str:
    """A dashboard expression as Grafana sends it with every service and priority selected."""
    return (expr.replace("$__rate_interval", "1m").replace("$__range", window)
            .replace("$service", ".*").replace("$priority", ".*"))


async def test_dashboard_and_rules_against_real_prometheus(
    daemon_factory: Callable[..., DaemonProcess],
    prometheus_factory: Callable[..., PrometheusProcess],
    make_client: Callable[[DaemonProcess], IncidentdClient],
    procs: ProcessRegistry,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    cmdb_path = tmp_path / "cmdb.yaml"
    cmdb_path.write_text(yaml.safe_dump(CMDB, sort_keys=False))
    config = example_config()
    config["cmdb"]["files"] = [str(cmdb_path)]
    config["runbooks"]["files"] = []  # no runbook may resolve an incident behind our back
    daemon = daemon_factory(config=config, env={"INCIDENTD_GENERIC_TOKEN": GENERIC_TOKEN})
    prometheus = prometheus_factory(alertmanager_port=None,
                                    scrape_targets={JOB: f"127.0.0.1:{daemon.port}"},
                                    rule_groups=prometheus_rule_groups())
    await asyncio.gather(daemon.start(), prometheus.start())
    client = make_client(daemon)
    s = Scenario(daemon, client, prometheus, http, procs)

    # -- warm-up: one resolved incident per (service, priority) the scenario touches,
    # so that every histogram series exists before the measured window opens.
    warm = await s.open(["shop-0", "blog-0"])
    for host, incident in warm.items():
        await s.acknowledge(incident["id"])
        await s.resolve(host, incident["id"], "manual")
    await s.wait_scraped("sum(incidentd_incident_time_to_resolve_seconds_count)", 2)
    await s.wait_scraped("sum(incidentd_incident_time_to_acknowledge_seconds_count)", 2)
    await asyncio.sleep(2.0)  # every sample from here on carries the warm-up counts
    window_start = time.time()

    # -- the measured scenario
    hosts = [host for host, *_ in SCENARIO]
    incidents = await s.open([*hosts, STAYS_OPEN])
    opened = time.monotonic()
    for host, *_ in SCENARIO:
        service = "svc-" + host.split("-")[0]
        assert incidents[host]["impacted_services"] == [service], short_json(incidents[host])
    warm_keys = {(i["impacted_services"][0], i["priority"]) for i in warm.values()}
    keys = {(incidents[h]["impacted_services"][0], incidents[h]["priority"]) for h in hosts}
    assert keys == warm_keys, f"scenario label sets {keys} != warm-up {warm_keys}"

    async def at(offset: float, step: Any) -> None:
        await asyncio.sleep(max(0.0, opened + offset - time.monotonic()))
        await step

    steps = []
    for host, ack_after, resolve_after, how in SCENARIO:
        iid = incidents[host]["id"]
        steps.append(at(ack_after, s.acknowledge(iid)))
        steps.append(at(resolve_after, s.resolve(host, iid, how)))
    await asyncio.gather(*steps)

    for host, *_ in SCENARIO:
        detail = await client.incident(incidents[host]["id"])
        assert detail["status"] == "resolved", short_json(detail)
    total_resolved = 2 + len(SCENARIO)
    await s.wait_scraped("sum(incidentd_incident_time_to_resolve_seconds_count)", total_resolved)
    await s.wait_scraped("sum(incidentd_incident_time_to_acknowledge_seconds_count)",
                         total_resolved)
    await asyncio.sleep(1.5)  # and a scrape of whatever was updated with them

    now = time.time()
    window = f"{math.ceil(now - window_start)}s"

    # -- the exact report over the same window
    async with http.get(f"{daemon.base_url}/api/v1/reports/summary",
                        params={"since": rfc3339(window_start), "until": rfc3339(now)},
                        headers=client.admin_headers()) as resp:
        report = await resp.json(content_type=None)
        assert resp.status == 200, report
    assert report["mttr_seconds"]["count"] == len(SCENARIO), short_json(report)
    assert report["mtta_seconds"]["count"] == len(SCENARIO), short_json(report)
    assert report["incidents"]["total"] == len(SCENARIO) + 1, short_json(report)

    # -- every dashboard expression
    failures = []
    for title, target in dashboard_targets(load_dashboard()):
        expr = panel_query(target["expr"], window)
        result = await s.promql(expr, now)
        if title in MUST_HAVE_DATA and not result:
            failures.append(f"{title} / {target['refId']}: no data for {expr!r}")
    assert not failures, "\n".join(failures) + "\n\n" + procs.describe(20)

    # -- every recording rule, as an expression and as the series Prometheus recorded
    for record, expr in recording_rules(load_rules()).items():
        result = await s.promql(expr, now)
        if record in RECORDS_WITH_DATA:
            assert result, f"{record}: no data for {expr!r}"
            recorded = await s.promql(record, now)
            assert recorded, f"Prometheus has not recorded {record}"
    async with http.get(f"{prometheus.url}/api/v1/rules") as resp:
        loaded = await resp.json(content_type=None)
    rules = [r for g in loaded["data"]["groups"] for r in g["rules"]]
    assert len(rules) == sum(len(g["rules"]) for g in load_rules()["groups"]), short_json(loaded)
    unhealthy = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not unhealthy, unhealthy
    firing = [r["name"] for r in rules if r["type"] == "alerting" and r["state"] != "inactive"]
    assert firing == [], f"health alerts fire on a healthy daemon: {firing}"

    # -- MTTR and MTTA: PromQL agrees with the report within one bucket
    bucket_rows = await s.promql(
        "count by (le) (incidentd_incident_time_to_resolve_seconds_bucket)", now)
    bounds = sorted(float(r["metric"]["le"]) for r in bucket_rows if r["metric"]["le"] != "+Inf")
    assert bounds[:3] == [1.0, 5.0, 10.0], bounds
    for name, metric in (("mttr_seconds", "incidentd_incident_time_to_resolve_seconds"),
                         ("mtta_seconds", "incidentd_incident_time_to_acknowledge_seconds")):
        exact = report[name]["p50"]
        promql = (f"histogram_quantile(0.5, sum by (le) "
                  f"(increase({metric}_bucket[{window}])))")
        estimate = await s.scalar(promql, now)
        lower, upper = bucket_of(exact, bounds)
        assert lower <= estimate <= upper, (
            f"{name}: PromQL p50 {estimate} is outside the bucket ({lower}, {upper}] of the "
            f"report's p50 {exact}\nreport: {short_json(report[name])}")
        counted = await s.scalar(f"sum(increase({metric}_count[{window}]))", now)
        # increase() extrapolates to the window's edges: a little over the true count.
        assert len(SCENARIO) - 0.01 <= counted < len(SCENARIO) + 1, (name, counted)
    # The scenario was built so that these are the buckets; a drift shows here first.
    assert bucket_of(report["mttr_seconds"]["p50"], bounds) == (5.0, 10.0), report["mttr_seconds"]
    assert bucket_of(report["mtta_seconds"]["p50"], bounds) == (1.0, 5.0), report["mtta_seconds"]

    # -- the open incident shows in the gauge, by priority and status
    open_rows = await s.promql('sum by (status) (incidentd_incidents_open{status="triggered"})',
                               now)
    assert [float(r["value"][1]) for r in open_rows] == [1.0], open_rows
    assert re.fullmatch(r"INC-\d{6}", incidents[STAYS_OPEN]["key"]), incidents[STAYS_OPEN]
