"""A runbook on the daemon as a process: an alert triggers it, it calls a real HTTP
agent, runs a real command without a shell (a hostile label stays one argument),
checks the port with the shipped python action, waits for the alert to clear, and
the incident is resolved by automation."""

from __future__ import annotations

import json
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from .harness import (
    DaemonProcess,
    IncidentdClient,
    alertmanager_group,
    constant,
    example_config,
    local_server,
    poll,
)

pytestmark = pytest.mark.e2e

HOSTILE = "nginx; rm -rf / #"


class Agent:
    """A host agent that restarts units on request (here: it records the request)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, Any]] = []
        self.port = 0

    async def restart(self, request: web.Request) -> web.Response:
        self.requests.append((request.match_info["unit"], await request.json()))
        return web.json_response({"restarted": True})


@pytest.fixture
async def agent() -> AsyncIterator[Agent]:
    agent = Agent()
    app = web.Application()
    app.router.add_post("/units/{unit}/restart", agent.restart)
    async with local_server(app) as port:
        agent.port = port
        yield agent


def catalog(agent: Agent, marker: Path) -> dict[str, Any]:
    record = "import json, sys; open(sys.argv[1], 'w').write(json.dumps(sys.argv[2:]))"
    return {"runbooks": [{
        "name": "restart-unit",
        "description": "Restart the unit through the host agent, then wait for recovery",
        "match": {"alerts": ['alertname="RunbookE2E"']},
        "params": {"unit": "{{ alert.labels.unit }}"},
        "steps": [
            {"name": "restart", "type": "http", "method": "POST",
             # urlencode leaves "/" alone; in a path segment it must be escaped too
             "url": f"http://127.0.0.1:{agent.port}/units/"
                    "{{ params.unit | urlencode | replace('/', '%2F') }}/restart",
             "body": {"incident": "{{ incident.key }}"}},
            {"name": "record", "type": "command",
             "argv": [sys.executable, "-c", record, str(marker), "{{ params.unit }}"]},
            {"name": "agent-up", "type": "python", "action": "tcp_check",
             "args": {"host": "127.0.0.1", "port": str(agent.port)}},
            {"name": "recovered", "type": "wait_for_resolution", "timeout_seconds": 60},
        ],
    }]}


async def test_an_alert_runs_its_runbook_and_automation_resolves_the_incident(
    tmp_path: Path, agent: Agent,
    daemon_factory: Callable[..., DaemonProcess],
    make_client: Callable[[DaemonProcess], IncidentdClient],
) -> None:
    marker = tmp_path / "argv.json"
    runbooks = tmp_path / "runbooks.yaml"
    runbooks.write_text(yaml.safe_dump(catalog(agent, marker)))
    config = example_config()
    config["runbooks"] = {"files": [str(runbooks)], "poll_interval_seconds": 0.1}
    daemon = await daemon_factory(config=config).start()
    client = make_client(daemon)

    fingerprint = uuid.uuid4().hex[:16]
    firing = alertmanager_group(group="RunbookE2E", fingerprints=[fingerprint])
    firing["alerts"][0]["labels"]["unit"] = HOSTILE
    status, text = await client.post_alertmanager(firing)
    assert status == 200, text
    [incident] = await client.all_incidents()

    run = await poll(
        "the run to reach its wait step", lambda: _runs(client),
        lambda runs: runs[0] if runs and len(runs[0]["steps"]) >= 3 else None,
        within=30, diagnostics=daemon.describe)
    assert [s["status"] for s in run["steps"][:3]] == ["succeeded"] * 3, run
    assert agent.requests == [(HOSTILE, {"incident": incident["key"]})]
    assert json.loads(marker.read_text()) == [HOSTILE]  # one literal argument, no shell

    resolved = alertmanager_group(group="RunbookE2E", fingerprints=[fingerprint],
                                  status="resolved")
    status, text = await client.post_alertmanager(resolved)
    assert status == 200, text
    run = await poll("the run to succeed", lambda: _runs(client),
                     lambda runs: runs[0] if runs[0]["status"] == "succeeded" else None,
                     within=30, diagnostics=daemon.describe)
    assert run["dry_run"] is False
    done = await client.incident(incident["id"])
    [resolution] = [e for e in done["timeline"] if e["kind"] == "resolved"]
    assert resolution["actor"] == "runbook:restart-unit", resolution
    assert resolution["detail"]["reason"] == "resolved by automation: restart-unit"
    kinds = [e["kind"] for e in done["timeline"]]
    assert "runbook_started" in kinds and "runbook_succeeded" in kinds


async def _runs(client: IncidentdClient) -> list[dict[str, Any]]:
    async with client.session.get(f"{client.base}/api/v1/runbook-runs",
                                  headers=client.admin_headers()) as resp:
        assert resp.status == 200, await resp.text()
        items: list[dict[str, Any]] = (await resp.json())["items"]
        return items


async def test_sighup_reloads_the_runbook_catalog_and_keeps_it_when_broken(
    tmp_path: Path, agent: Agent,
    daemon_factory: Callable[..., DaemonProcess],
    make_client: Callable[[DaemonProcess], IncidentdClient],
) -> None:
    runbooks = tmp_path / "runbooks.yaml"
    first = catalog(agent, tmp_path / "argv.json")
    runbooks.write_text(yaml.safe_dump(first))
    config = example_config()
    config["runbooks"] = {"files": [str(runbooks)]}
    daemon = await daemon_factory(config=config).start()
    client = make_client(daemon)

    async def names() -> list[str]:
        async with client.session.get(f"{client.base}/api/v1/runbooks",
                                      headers=client.admin_headers()) as resp:
            return [r["name"] for r in (await resp.json())["items"]]

    assert await names() == ["restart-unit"]
    second = dict(first["runbooks"][0], name="restart-unit-too")
    runbooks.write_text(yaml.safe_dump({"runbooks": [first["runbooks"][0], second]}))
    daemon.send_signal(signal.SIGHUP)
    await poll("the second runbook after SIGHUP", names,
               lambda n: n == ["restart-unit", "restart-unit-too"], within=10,
               diagnostics=daemon.describe)

    broken = dict(second, name="broken", steps=[{"name": "x", "type": "shell"}])
    runbooks.write_text(yaml.safe_dump({"runbooks": [broken]}))
    daemon.send_signal(signal.SIGHUP)
    await poll("the refusal in the log", lambda: constant(daemon.tail(200)),
               lambda text: "runbook files invalid" in text and "unknown step type" in text,
               within=10, diagnostics=daemon.describe)
    assert await names() == ["restart-unit", "restart-unit-too"]



async def test_sigterm_interrupts_a_running_step_within_the_grace_and_exits_0(
    tmp_path: Path, daemon_factory: Callable[..., DaemonProcess],
    make_client: Callable[[DaemonProcess], IncidentdClient],
) -> None:
    """A step still running at SIGTERM gets the executor's grace, then is cut short
    and recorded `interrupted`; the process exits 0 well inside the deadline, and the
    restarted daemon does not run it again."""
    started = tmp_path / "started"
    slow = "import pathlib, sys, time; pathlib.Path(sys.argv[1]).touch(); time.sleep(120)"
    runbooks = tmp_path / "runbooks.yaml"
    runbooks.write_text(yaml.safe_dump({"runbooks": [{
        "name": "slow-fix", "match": {"alerts": ['alertname="SlowFix"']},
        "steps": [{"name": "sleep", "type": "command", "timeout_seconds": 300,
                   "argv": [sys.executable, "-c", slow, str(started)]}],
    }]}))
    config = example_config()
    config["runbooks"] = {"files": [str(runbooks)], "poll_interval_seconds": 0.1}
    daemon = await daemon_factory(config=config).start()
    client = make_client(daemon)
    status, text = await client.post_alertmanager(
        alertmanager_group(group="SlowFix", fingerprints=[uuid.uuid4().hex[:16]]))
    assert status == 200, text
    await poll("the step to start", lambda: constant(started.exists()), bool, within=30,
               diagnostics=daemon.describe)

    daemon.send_signal(signal.SIGTERM)
    rc = await daemon.wait_exit(30)  # the executor's grace is 10 s
    assert rc == 0, f"exit code after SIGTERM: {rc}\n{daemon.describe(60)}"
    await poll("the step's process to be gone with the daemon",
               lambda: constant(_processes_mentioning(str(started))), lambda pids: not pids,
               within=10, diagnostics=daemon.describe)

    await daemon.restart()
    [run] = await _runs(client)
    assert run["status"] == "interrupted", run
    await poll("nothing re-runs the interrupted run", lambda: _runs(client),
               lambda runs: len(runs) == 1 and runs[0]["status"] == "interrupted",
               within=5, diagnostics=daemon.describe)


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if text in argv:
            found.append(int(entry.name))
    return found
