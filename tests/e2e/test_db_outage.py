"""The database goes away under a running daemon, and comes back.

The daemon runs on its own PostgreSQL database, reached through a TCP proxy the
test cuts (`tcp_proxy.py`): every connection is reset and new ones are refused,
as when the server restarts; the shared PostgreSQL server itself is never
touched. The daemon must keep answering (503 + Retry-After for Alertmanager, 429
for PagerDuty, `/readyz` 503, `/healthz` 200), never exit, and recover by itself
when the database is back: no 2xx-acknowledged alert lost or stored twice, no
refused request half-stored, the background workers alive. A daemon started
while the database is down waits for it (and gives up, clearly, after
`database.connect_timeout_seconds`).
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import yaml
from aiohttp import web
from sqlalchemy.engine import make_url

from tests.conftest import PG_ADMIN_DSN, require

from .harness import (
    INTEGRATION_TOKEN,
    DaemonProcess,
    IncidentdClient,
    alertmanager_bytes,
    alertmanager_group,
    constant,
    example_config,
    local_server,
    metric_value,
    poll,
)
from .tcp_proxy import TcpProxy

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

CLIENTS = 8
REQUESTS_PER_CLIENT = 125
ALERTS_PER_REQUEST = 10  # 8 clients x 125 requests x 10 = 10,000 alerts
CUT_AFTER_ACKNOWLEDGED = 3_000
RETRY_AFTER = 2
ROUTING_KEY = "e2e-pagerduty-routing-key-0ut4ge"
PD_EVENTS = 5
# How long a client keeps retrying one request before the test calls it lost.
CLIENT_PATIENCE_SECONDS = 120.0
# The outage lasts at least this long, like a database restart: the scenario, not a
# wait for something to happen (those are polls with deadlines).
OUTAGE_SECONDS = 3.0
ALL = ["P1", "P2", "P3", "P4", "P5"]


# -- the database and the proxy in front of it -------------------------------------


@pytest.fixture
async def database() -> AsyncIterator[str]:
    """A PostgreSQL database of this test's own (URL without the proxy)."""
    name = f"incidentd_outage_{uuid.uuid4().hex[:12]}"
    try:
        await _admin(f'CREATE DATABASE "{name}"')
    except (OSError, asyncpg.PostgresError) as err:
        require(False, f"PostgreSQL at {PG_ADMIN_DSN} is not usable: {err}")
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
async def proxy(database: str) -> AsyncIterator[TcpProxy]:
    url = make_url(database)
    started = await TcpProxy(url.host or "127.0.0.1", url.port or 5432).start()
    try:
        yield started
    finally:
        await started.close()


def through(proxy: TcpProxy, database: str) -> str:
    return make_url(database).set(host="127.0.0.1", port=proxy.port).render_as_string(
        hide_password=False)


async def query(database: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """Straight to PostgreSQL, not through the proxy (nor the daemon)."""
    dsn = database.replace("postgresql+asyncpg://", "postgresql://", 1)
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


# -- HTTP --------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    text: str
    retry_after: str | None


async def post_alertmanager(http: aiohttp.ClientSession, daemon: DaemonProcess,
                            body: bytes) -> Answer:
    headers = {"User-Agent": "Alertmanager/0.25.0", "Authorization": f"Bearer {INTEGRATION_TOKEN}",
               "Content-Type": "application/json"}
    async with http.post(daemon.alertmanager_webhook_url, data=body, headers=headers) as resp:
        return Answer(resp.status, await resp.text(), resp.headers.get("Retry-After"))


async def post_pagerduty(http: aiohttp.ClientSession, daemon: DaemonProcess,
                         dedup_key: str) -> Answer:
    event = {"routing_key": ROUTING_KEY, "event_action": "trigger", "dedup_key": dedup_key,
             "payload": {"summary": f"outage probe {dedup_key}", "source": "e2e-outage",
                         "severity": "critical"}}
    async with http.post(daemon.pagerduty_events_url, json=event) as resp:
        return Answer(resp.status, await resp.text(), resp.headers.get("Retry-After"))


async def status_of(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(url) as resp:
        await resp.read()
        return resp.status


async def api_status(http: aiohttp.ClientSession, daemon: DaemonProcess) -> tuple[int, str]:
    """The API's answer to a read: status and error code."""
    async with http.get(f"{daemon.base_url}/api/v1/incidents",
                        headers=IncidentdClient.admin_headers()) as resp:
        body = await resp.json(content_type=None)
        return resp.status, (body.get("error") or {}).get("code", "")


async def hold_until(moment: float) -> None:
    """Keep the outage going until `moment` (time.monotonic())."""
    await asyncio.sleep(max(0.0, moment - time.monotonic()))


# -- the flood ---------------------------------------------------------------------


@dataclass
class Flood:
    acknowledged: list[str] = field(default_factory=list)
    refused: Counter[int] = field(default_factory=Counter)
    refused_in_outage: int = 0
    # Requests that got an answer a client must not see (a 500, no Retry-After, ...).
    wrong: list[str] = field(default_factory=list)
    # Requests an impatient client sent once and never again after a refusal.
    abandoned: list[list[str]] = field(default_factory=list)
    retried_requests: int = 0
    outage: bool = False
    enough: asyncio.Event = field(default_factory=asyncio.Event)
    restored: asyncio.Event = field(default_factory=asyncio.Event)

    def refusal(self, answer: Answer) -> None:
        self.refused[answer.status] += 1
        if self.outage:
            self.refused_in_outage += 1
        if answer.retry_after != str(RETRY_AFTER):
            self.wrong.append(f"{answer.status} with Retry-After {answer.retry_after!r}")

    def acknowledge(self, fingerprints: list[str]) -> None:
        self.acknowledged.extend(fingerprints)
        if len(self.acknowledged) >= CUT_AFTER_ACKNOWLEDGED:
            self.enough.set()


async def patient_client(flood: Flood, http: aiohttp.ClientSession, daemon: DaemonProcess,
                         number: int) -> None:
    """Sends its requests in turn and retries each refused one, as Alertmanager does."""
    for r in range(REQUESTS_PER_CLIENT):
        fingerprints = [uuid.uuid4().hex[:16] for _ in range(ALERTS_PER_REQUEST)]
        body = alertmanager_bytes(alertmanager_group(group=f"Outage{number}x{r}",
                                                     fingerprints=fingerprints))
        deadline = time.monotonic() + CLIENT_PATIENCE_SECONDS
        backoff = 0.05
        for attempt in range(10_000):
            answer = await post_alertmanager(http, daemon, body)
            if 200 <= answer.status < 300:
                flood.acknowledge(fingerprints)
                flood.retried_requests += attempt > 0
                break
            if answer.status != 503:
                flood.wrong.append(f"{answer.status}: {answer.text[:300]}")
                return
            flood.refusal(answer)
            if time.monotonic() > deadline:
                flood.wrong.append(f"still refused after {CLIENT_PATIENCE_SECONDS:g}s")
                return
            await asyncio.sleep(backoff)  # Alertmanager's own backoff, made short
            backoff = min(backoff * 2, 0.5)


async def impatient_client(flood: Flood, http: aiohttp.ClientSession,
                           daemon: DaemonProcess) -> None:
    """Sends requests back to back through the cut and the outage and never retries one:
    each refused request must be stored wholly or not at all."""
    await flood.enough.wait()
    r = 0
    while not flood.restored.is_set():
        r += 1
        fingerprints = [uuid.uuid4().hex[:16] for _ in range(ALERTS_PER_REQUEST)]
        body = alertmanager_bytes(alertmanager_group(group=f"Impatient{r}",
                                                     fingerprints=fingerprints))
        answer = await post_alertmanager(http, daemon, body)
        if 200 <= answer.status < 300:
            flood.acknowledge(fingerprints)
        elif answer.status == 503:
            flood.refusal(answer)
            flood.abandoned.append(fingerprints)
            await asyncio.sleep(0.05)
        else:
            flood.wrong.append(f"{answer.status}: {answer.text[:300]}")
            return


def outage_config() -> dict[str, Any]:
    config = example_config()
    config["ingest"]["retry_after_seconds"] = RETRY_AFTER
    return config


async def test_database_cut_mid_flood_503s_then_recovers_without_losing_or_doubling(
    database: str, proxy: TcpProxy, http: aiohttp.ClientSession,
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    daemon = await daemon_factory(config=outage_config(), database_url=through(proxy, database),
                                  env={"INCIDENTD_PAGERDUTY_ROUTING_KEY": ROUTING_KEY}).start()
    pid = daemon.proc.pid if daemon.proc else None
    flood = Flood()
    pd_keys = [f"outage-{uuid.uuid4().hex[:12]}" for _ in range(PD_EVENTS)]
    seen: dict[str, Any] = {}

    async def outage() -> None:
        await flood.enough.wait()
        seen["acknowledged_at_cut"] = len(flood.acknowledged)
        flood.outage = True
        seen["connections_cut"] = await proxy.cut()
        cut_at = time.monotonic()
        # While it is down: refusals, not errors; alive, not ready.
        await poll("flood requests refused during the outage",
                   lambda: constant(flood.refused_in_outage), lambda n: n >= 2 * CLIENTS,
                   within=60, diagnostics=daemon.describe)
        await poll("/readyz to say 503", lambda: status_of(http, f"{daemon.base_url}/readyz"),
                   lambda s: s == 503, within=30, diagnostics=daemon.describe)
        assert await status_of(http, f"{daemon.base_url}/healthz") == 200
        for key in pd_keys:
            answer = await post_pagerduty(http, daemon, key)
            seen.setdefault("pagerduty_during", []).append((answer.status, answer.retry_after))
        seen["api_during"] = await api_status(http, daemon)
        await poll("the leader to step down", lambda: constant(daemon.tail(400)),
                   lambda text: "leadership lost" in text, within=30,
                   diagnostics=daemon.describe)
        await hold_until(cut_at + OUTAGE_SECONDS)
        assert daemon.alive, daemon.describe(80)
        seen["outage_seconds"] = time.monotonic() - cut_at
        flood.outage = False
        await proxy.restore()
        restored_at = time.monotonic()
        await poll("/readyz to say 200 again, without a restart",
                   lambda: status_of(http, f"{daemon.base_url}/readyz"), lambda s: s == 200,
                   within=60, diagnostics=daemon.describe)
        seen["ready_again_after_seconds"] = time.monotonic() - restored_at
        flood.restored.set()

    await asyncio.gather(*(patient_client(flood, http, daemon, n) for n in range(CLIENTS)),
                         impatient_client(flood, http, daemon), outage())

    total = CLIENTS * REQUESTS_PER_CLIENT * ALERTS_PER_REQUEST
    print(f"\noutage: {seen}; refused {dict(flood.refused)}; "
          f"{flood.retried_requests} requests needed retries; "
          f"{len(flood.abandoned)} abandoned; {len(flood.acknowledged)} acknowledged")
    assert not flood.wrong, f"answers a client must not get: {flood.wrong[:10]}"
    assert seen["acknowledged_at_cut"] < total, "the cut should land mid-flood"
    assert seen["connections_cut"] >= 1, seen
    assert flood.refused_in_outage >= 2 * CLIENTS and flood.abandoned, seen
    assert seen["pagerduty_during"] == [(429, str(RETRY_AFTER))] * PD_EVENTS, seen
    assert seen["api_during"] == (503, "store_unavailable"), seen
    assert daemon.alive and daemon.proc is not None and daemon.proc.pid == pid

    # PagerDuty's retries after the outage: accepted now.
    for key in pd_keys:
        answer = await post_pagerduty(http, daemon, key)
        assert answer.status == 202, answer

    rows = await query(database, "SELECT source, fingerprint, occurrences FROM alerts")
    counts = Counter((r["source"], r["fingerprint"]) for r in rows)
    am = Counter({fp: n for (source, fp), n in counts.items() if source == "alertmanager"})
    missing = [fp for fp in flood.acknowledged if fp not in am]
    doubled = [fp for fp in flood.acknowledged if am[fp] > 1]
    assert not missing, f"{len(missing)} of {len(flood.acknowledged)} acknowledged alerts lost"
    assert not doubled, f"{len(doubled)} acknowledged alerts stored more than once"
    assert len(set(flood.acknowledged)) == len(flood.acknowledged) >= total
    half = [fps for fps in flood.abandoned if 0 < sum(am[fp] for fp in fps) < len(fps)]
    assert not half, f"{len(half)} refused requests were stored in part: {half[:3]}"
    landed_unseen = sum(1 for fps in flood.abandoned if all(am[fp] == 1 for fp in fps))
    print(f"refused requests whose commit had landed: {landed_unseen} (stored once, whole)")
    sent = set(flood.acknowledged) | {fp for fps in flood.abandoned for fp in fps}
    assert set(am) <= sent and max(am.values()) == 1, "nothing stored that was not sent"
    assert all(counts[("pagerduty", key)] == 1 for key in pd_keys), counts

    log = daemon.tail(100_000)
    assert "store unavailable; alerts refused" in log
    # A connection cut mid-transaction is an outage, not a bug: no 500s, no traces.
    assert "ingest batch failed" not in log and "unhandled error" not in log, daemon.tail(200)
    assert "Traceback" not in log, daemon.tail(200)
    metrics = await IncidentdClient(daemon, http).metrics_text()
    rejected = metric_value(metrics, "incidentd_alerts_rejected_total", reason="store_unavailable")
    assert rejected and rejected > 0, "refusals are counted for the dashboard's alert"


# -- the workers outlive the outage ------------------------------------------------


class Hook:
    """The notification target: records each event type and incident key."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        event = (await request.json())["event"]
        self.events.append((event["event_type"], event["incident"]["key"]))
        return web.Response(status=204)


@pytest.fixture
async def hook() -> AsyncIterator[Hook]:
    hook = Hook()
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    async with local_server(app) as port:
        hook.port = port
        yield hook


def workers_config(tmp_path: Path, hook: Hook) -> dict[str, Any]:
    """Short SLA and escalation timers, a webhook for every incident event, and a
    runbook whose first step waits for the test's go-ahead."""
    go = tmp_path / "go"
    step = ("import pathlib, sys, time\n"
            "pathlib.Path(sys.argv[1]).touch()\n"
            "deadline = time.monotonic() + 120\n"
            "while not pathlib.Path(sys.argv[2]).exists() and time.monotonic() < deadline:\n"
            "    time.sleep(0.05)\n")
    runbooks = tmp_path / "runbooks.yaml"
    runbooks.write_text(yaml.safe_dump({"runbooks": [{
        "name": "outlive-the-outage", "match": {"alerts": ['alertname="OutageFix"']},
        "rate_limit": None,
        "steps": [
            {"name": "wait-for-go", "type": "command", "timeout_seconds": 150,
             "argv": [sys.executable, "-c", step, str(tmp_path / "started"), str(go)]},
            {"name": "after", "type": "command", "argv": [sys.executable, "-c", "print(1)"]},
        ],
    }]}))
    config = example_config()
    config["runbooks"] = {"files": [str(runbooks)], "poll_interval_seconds": 0.1}
    config["sla"] = {"check_interval_seconds": 0.2, "policies": [
        {"name": "fast", "priorities": ALL, "response_seconds": 3,
         "resolution_seconds": 3600}]}
    config["escalation"] = {"check_interval_seconds": 0.2, "default_policy": "fast",
                            "policies": [{"name": "fast", "levels": [
                                {"targets": ["user:primary"], "timeout_seconds": 2},
                                {"targets": ["team:sre"], "timeout_seconds": 600}]}]}
    config["notifications"]["targets"] = [{
        "name": "outage-hook", "type": "webhook", "url": f"http://127.0.0.1:{hook.port}/hook",
        "routes": [{"events": ["incident.triggered", "incident.sla_breached"]}]}]
    config["notifications"]["poll_interval_seconds"] = 0.1
    config["notifications"]["retry"] = {"initial_seconds": 0.05, "max_seconds": 0.5,
                                        "timeout_seconds": 5, "max_attempts": 1000}
    return config


def kinds(incident: dict[str, Any]) -> list[str]:
    return [e["kind"] for e in incident["timeline"]]


async def fire(client: IncidentdClient, group: str) -> dict[str, Any]:
    status, text = await client.post_alertmanager(
        alertmanager_group(group=group, fingerprints=[uuid.uuid4().hex[:16]]))
    assert status == 200, text
    items = await client.all_incidents()
    return next(i for i in items if group in i["group_key"])


async def runs(client: IncidentdClient) -> list[dict[str, Any]]:
    page = await client._json("GET", "/api/v1/runbook-runs", headers=client.admin_headers())
    return page["items"]  # type: ignore[no-any-return]


async def test_workers_outlive_the_outage_and_work_after_it(
    database: str, proxy: TcpProxy, tmp_path: Path, hook: Hook, http: aiohttp.ClientSession,
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    daemon = await daemon_factory(config=workers_config(tmp_path, hook),
                                  database_url=through(proxy, database)).start()
    client = IncidentdClient(daemon, http)

    def log_has(*lines: str, within: float = 30) -> Any:
        return poll(f"{lines} in the log", lambda: constant(daemon.tail(100_000)),
                    lambda text: all(line in text for line in lines), within=within,
                    diagnostics=daemon.describe)

    await log_has("leadership acquired")
    before = await fire(client, "OutageFix")  # its runbook run waits for the go-ahead
    await poll("the run's first step to start",
               lambda: constant((tmp_path / "started").exists()), bool, within=30,
               diagnostics=daemon.describe)

    await proxy.cut()
    cut_at = time.monotonic()
    await log_has("leadership lost", "outbox: store unavailable",
                  "runbooks: store unavailable")
    assert await status_of(http, f"{daemon.base_url}/readyz") == 503
    assert await status_of(http, f"{daemon.base_url}/healthz") == 200
    # The step ends while the database is away: the run's outcome waits to be recorded.
    (tmp_path / "go").touch()
    await log_has("runbook step not saved", "runbook run outcome not recorded")
    await hold_until(cut_at + OUTAGE_SECONDS)
    assert daemon.alive, daemon.describe(80)

    await proxy.restore()
    await poll("/readyz 200 again", lambda: status_of(http, f"{daemon.base_url}/readyz"),
               lambda s: s == 200, within=60, diagnostics=daemon.describe)
    await log_has("outbox: store reachable again", "runbooks: store reachable again")
    await poll("leadership acquired again", lambda: constant(daemon.tail(100_000)),
               lambda text: text.count("leadership acquired") >= 2, within=30,
               diagnostics=daemon.describe)

    # The run that finished in the outage is recorded as it went, both steps.
    [run] = await poll("the run recorded after the outage", lambda: runs(client),
                       lambda items: items if items and items[0]["status"] == "succeeded"
                       else None, within=60, diagnostics=daemon.describe)
    assert [s["status"] for s in run["steps"]] == ["succeeded", "succeeded"], run

    # Timers and the outbox work again: on the incident from before (its SLA fell due
    # in the outage) and on a new one.
    after = await fire(client, "AfterOutage")
    for incident in (before, after):
        done = await poll(f"breach and escalation of {incident['key']}",
                          lambda i=incident: client.incident(i["id"]),
                          lambda i: i if {"sla_breached", "escalated"} <= set(kinds(i))
                          else None, within=60, diagnostics=daemon.describe)
        assert kinds(done).count("sla_breached") == 1, done["timeline"]
    await poll("the notifications of both incidents", lambda: constant(list(hook.events)),
               lambda events: {("incident.triggered", after["key"]),
                               ("incident.sla_breached", after["key"]),
                               ("incident.sla_breached", before["key"])} <= set(events),
               within=60, diagnostics=daemon.describe)
    assert "Traceback" not in daemon.tail(100_000), daemon.tail(200)


# -- starting while the database is down ---------------------------------------------


async def test_a_daemon_started_while_the_database_is_down_waits_for_it(
    database: str, proxy: TcpProxy, daemon_factory: Callable[..., DaemonProcess],
    http: aiohttp.ClientSession,
) -> None:
    config = example_config()
    config["database"]["connect_timeout_seconds"] = 120
    await proxy.cut()
    daemon = daemon_factory(config=config, database_url=through(proxy, database))
    daemon.spawn()
    await poll("tries to connect, each logged", lambda: constant(daemon.tail(400)),
               lambda text: text.count("database unreachable at start; retrying") >= 3,
               within=60, diagnostics=daemon.describe)
    assert daemon.alive, daemon.describe(80)
    assert "postgres@127.0.0.1" in daemon.tail(400)  # which database, password hidden
    await proxy.restore()
    await daemon.wait_http_ok(f"{daemon.base_url}/readyz", seconds=60)
    status, text = await IncidentdClient(daemon, http).post_alertmanager(
        alertmanager_group(group="LateDatabase", fingerprints=[uuid.uuid4().hex[:16]]))
    assert status == 200, text


async def test_a_daemon_gives_up_on_a_database_that_stays_down_with_a_clear_error(
    database: str, proxy: TcpProxy, daemon_factory: Callable[..., DaemonProcess],
) -> None:
    config = example_config()
    config["database"]["connect_timeout_seconds"] = 2
    await proxy.cut()
    daemon = daemon_factory(config=config, database_url=through(proxy, database))
    daemon.spawn()
    rc = await daemon.wait_exit(60)
    text = daemon.tail(200)
    assert rc == 2, f"exit code {rc}\n{text}"
    assert "database.url: cannot use the database" in text and "within 2 s" in text, text
    assert "database unreachable at start; retrying" in text, text
    assert "Traceback" not in text, text
