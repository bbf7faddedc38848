"""The daemon as a process: kill -9 and restart, SIGTERM with requests in
flight, and a real `amtool alert add` through a real Alertmanager."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest

from .harness import (
    STOP_TIMEOUT,
    AlertmanagerProcess,
    DaemonProcess,
    IncidentdClient,
    ProcessRegistry,
    alertmanager_group,
    metric_value,
    poll,
    require_binary,
    short_json,
)

pytestmark = pytest.mark.e2e

GROUPS = 10
ALERTS_PER_GROUP = 5


def new_fingerprint() -> str:
    return uuid.uuid4().hex[:16]


def is_2xx(status: int) -> bool:
    return 200 <= status < 300


async def test_committed_alerts_survive_kill9_and_restart(
    daemon: DaemonProcess, client: IncidentdClient
) -> None:
    # 50 alerts in 10 Alertmanager groups, one alert per request, all at once.
    groups = {
        f"E2ELoad{g:02d}": [new_fingerprint() for _ in range(ALERTS_PER_GROUP)]
        for g in range(GROUPS)
    }
    requests = [
        alertmanager_group(group=name, fingerprints=[fp])
        for name, fps in groups.items()
        for fp in fps
    ]
    answers = await asyncio.gather(*(client.post_alertmanager(body) for body in requests))
    refused = [
        (i, status, text[:300]) for i, (status, text) in enumerate(answers) if not is_2xx(status)
    ]
    assert not refused, f"{len(refused)} of {len(requests)} requests not 2xx: {refused[:5]}"

    # Every 2xx promised a commit: take the process down without any chance to flush.
    await daemon.kill9()
    await daemon.restart()

    alerts = await client.all_alerts(limit=20)  # several pages: exercises next_cursor
    fingerprint_to_group = {fp: name for name, fps in groups.items() for fp in fps}
    stored = [a["fingerprint"] for a in alerts]
    assert sorted(stored) == sorted(fingerprint_to_group), (
        f"after kill -9: {len(stored)} alerts stored, {len(set(stored))} distinct; "
        f"missing {sorted(set(fingerprint_to_group) - set(stored))[:10]}, "
        f"unexpected {sorted(set(stored) - set(fingerprint_to_group))[:10]}"
    )

    incidents = await client.all_incidents(status="triggered", limit=7)
    incidents_of_group: dict[str, set[int]] = defaultdict(set)
    for incident in incidents:
        members = {a["fingerprint"] for a in incident["alerts"]}
        owners = {fingerprint_to_group.get(fp, "<unknown>") for fp in members}
        assert len(owners) == 1 and members == set(groups.get(next(iter(owners)), ())), (
            f"incident {incident['id']} should hold exactly one group's {ALERTS_PER_GROUP} alerts: "
            f"{short_json(incident)}"
        )
        incidents_of_group[owners.pop()].add(incident["id"])
    per_group = {name: sorted(ids) for name, ids in incidents_of_group.items()}
    assert len(incidents) == GROUPS and sorted(per_group) == sorted(groups), (
        f"want one incident per group ({GROUPS}), got {len(incidents)}: {per_group}"
    )

    # Caches rebuilt from the store: the open gauge counts what is open, and a
    # repeat of an already-firing alert joins its incident instead of opening one.
    metrics = await client.metrics_text()
    assert metric_value(metrics, "incidentd_incidents_open") == GROUPS, metrics
    status, text = await client.post_alertmanager(requests[0])
    assert is_2xx(status), text
    assert len(await client.all_incidents(status="triggered")) == GROUPS
    assert len(await client.all_alerts()) == GROUPS * ALERTS_PER_GROUP


async def test_sigterm_finishes_in_flight_requests_and_exits_0(
    daemon: DaemonProcess, client: IncidentdClient
) -> None:
    # Hold SQLite's write lock, as a slow disk would: the daemon reads each
    # request whole, then its commit waits on the lock, so the requests are
    # in flight inside the daemon (not in a socket buffer) when SIGTERM lands.
    # WAL readers are not blocked, and the hold (~1 s) is well inside
    # SQLite's default 5 s busy timeout.
    fingerprints = [new_fingerprint() for _ in range(5)]
    lock = sqlite3.connect(daemon.db_path, timeout=5, isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")
        requests = [
            asyncio.create_task(
                client.post_alertmanager(
                    alertmanager_group(group=f"E2EDrain{i}", fingerprints=[fp])
                )
            )
            for i, fp in enumerate(fingerprints)
        ]
        await asyncio.sleep(0.3)
        early = [t.exception() or t.result() for t in requests if t.done()]
        assert not early, f"answered while the store could not commit: {early}"

        daemon.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        assert daemon.alive, (
            f"daemon exited (rc={daemon.returncode}) with {len(requests)} requests in flight\n"
            f"{daemon.describe(60)}"
        )
    finally:
        if lock.in_transaction:
            lock.execute("ROLLBACK")
        lock.close()

    answers = await asyncio.gather(*requests, return_exceptions=True)
    rc = await daemon.wait_exit(STOP_TIMEOUT)
    assert rc == 0, f"exit code after SIGTERM: {rc}\n{daemon.describe(60)}"
    bad = [a for a in answers if isinstance(a, BaseException) or not is_2xx(a[0])]
    assert not bad, (
        f"in-flight requests not answered 2xx during shutdown: {bad}\n{daemon.describe(60)}"
    )

    await daemon.restart()
    stored = {a["fingerprint"] for a in await client.all_alerts()}
    assert set(fingerprints) <= stored, (
        f"answered 2xx but lost across SIGTERM: {sorted(set(fingerprints) - stored)}"
    )


async def test_amtool_alert_reaches_daemon_through_alertmanager(
    daemon_factory: Callable[[], DaemonProcess],
    alertmanager_factory: Callable[[str], AlertmanagerProcess],
    make_client: Callable[[DaemonProcess], IncidentdClient],
    procs: ProcessRegistry,
) -> None:
    amtool = require_binary("amtool")
    daemon = daemon_factory()
    alertmanager = alertmanager_factory(daemon.alertmanager_webhook_url)
    await asyncio.gather(daemon.start(), alertmanager.start())
    client = make_client(daemon)

    summary = f"amtool e2e alert {uuid.uuid4().hex[:8]}"
    proc = await asyncio.create_subprocess_exec(
        amtool,
        f"--alertmanager.url={alertmanager.url}",
        "alert",
        "add",
        "alertname=AmtoolTest",
        "severity=warning",
        "service=payments",
        f"--annotation=summary={summary}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0, f"amtool alert add exited {proc.returncode}: {out.decode()}"

    def find(page: dict[str, Any]) -> dict[str, Any] | None:
        return next((i for i in page["items"] if summary in i["title"]), None)

    incident = await poll(
        f"a triggered incident titled {summary!r}",
        lambda: client.incidents(status="triggered"),
        find,
        within=30,
        diagnostics=procs.describe,
    )
    assert incident["title"] == summary, incident
    assert incident["severity"] == "warning", incident
    [alert] = incident["alerts"]
    assert alert["status"] == "firing", alert
    assert alert["labels"] == {
        "alertname": "AmtoolTest",
        "severity": "warning",
        "service": "payments",
    }, alert
