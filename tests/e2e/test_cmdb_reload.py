"""The daemon as a process: the CMDB file is read at start and again on SIGHUP;
a broken file leaves the running CMDB in place. Alerts then bind to its CIs."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from .harness import DaemonProcess, IncidentdClient, example_config, poll

pytestmark = pytest.mark.e2e

CMDB_V1 = ("cis:\n  - {id: db-1, name: DB, type: database}\n"
           "  - {id: app-1, name: App, type: app, depends_on: [db-1]}\n")
CMDB_V2 = CMDB_V1 + "  - {id: web-1, name: Web, type: app, depends_on: [app-1]}\n"


async def test_sighup_reloads_the_cmdb_and_alerts_bind_to_it(
    tmp_path: Path, daemon_factory: Callable[..., DaemonProcess],
    make_client: Callable[[DaemonProcess], IncidentdClient], http: aiohttp.ClientSession,
) -> None:
    cmdb = tmp_path / "cmdb.yaml"
    cmdb.write_text(CMDB_V1)
    config = example_config()
    config["cmdb"]["files"] = [str(cmdb)]
    daemon = await daemon_factory(config=config).start()
    client = make_client(daemon)
    headers = client.admin_headers()

    async def status_of(ci: str) -> int:
        async with http.get(f"{daemon.base_url}/api/v1/cmdb/cis/{ci}", headers=headers) as r:
            return r.status

    assert await status_of("app-1") == 200
    assert await status_of("web-1") == 404
    cmdb.write_text(CMDB_V2)
    daemon.send_signal(signal.SIGHUP)
    await poll("web-1 after SIGHUP", lambda: status_of("web-1"), lambda s: s == 200,
               within=10, diagnostics=daemon.describe)

    cmdb.write_text(CMDB_V2 + "  - {id: bad, name: Bad, type: app, depends_on: [ghost]}\n")
    daemon.send_signal(signal.SIGHUP)
    await poll("the refusal in the log", lambda: _log(daemon),
               lambda text: "bad.depends_on: unknown CI 'ghost'" in text,
               within=10, diagnostics=daemon.describe)
    assert await status_of("web-1") == 200 and await status_of("bad") == 404

    # an alert on web-1 and one on db-1 become one incident rooted at db-1
    for name, ci in (("WebErrors", "web-1"), ("DbDown", "db-1")):
        body = {"version": "4", "status": "firing", "groupKey": name, "alerts": [{
            "status": "firing", "labels": {"alertname": name, "ci": ci},
            "annotations": {"summary": name}, "startsAt": "2026-11-26T10:00:00Z"}]}
        status, text = await client.post_alertmanager(body)
        assert status == 200, text
    [incident] = await client.all_incidents()
    assert incident["root_cause_ci"] == "db-1"
    assert incident["impacted_cis"] == ["app-1", "web-1"]


async def _log(daemon: DaemonProcess) -> str:
    return daemon.log_path.read_text()
