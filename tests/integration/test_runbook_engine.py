"""The runbook engine through the real pipeline and store (SQLite and PostgreSQL):
triggers and guards, the executor with a real local HTTP target and real
subprocesses, approval, the circuit breaker and its escalation, resolution by
automation, and a restart during a run.

Guards run on the FakeClock; only the steps themselves take real time.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp import web
from aiohttp.test_utils import TestServer
from tenacity import wait_none

from daemon import metrics
from daemon.app import build_pipeline
from daemon.config import Config, EscalationConfig, RunbooksConfig
from daemon.correlation.topology import Topology, TopologyHolder
from daemon.errors import InvalidTransition, NotFound
from daemon.itsm.actions import Actions
from daemon.itsm.followup import FollowUp
from daemon.itsm.priority import PriorityMatrix
from daemon.models import (
    Alert,
    AlertStatus,
    ConfigurationItem,
    IncidentStatus,
    Severity,
    TimelineKind,
)
from daemon.runbooks.catalog import CatalogHolder, read_catalog
from daemon.runbooks.executor import Executor
from daemon.runbooks.triggers import Triggers
from daemon.store import Store
from daemon.store import incidents as incident_store
from daemon.store import runbooks as run_store
from daemon.store.runbooks import RunView
from tests.conftest import FakeClock

INJECTION = "x; rm -rf / #"
PY = sys.executable
CIS = (
    ConfigurationItem(id="db-1", name="DB 1", type="database", owner_group="dba"),
    ConfigurationItem(id="db-2", name="DB 2", type="database"),
    ConfigurationItem(id="db-3", name="DB 3", type="database"),
    ConfigurationItem(id="web-1", name="Web", type="app"),
)
ESCALATION = {"default_policy": "ops", "policies": [{"name": "ops", "levels": [
    {"targets": ["user:ann"], "timeout_seconds": 900},
    {"targets": ["team:sre"], "timeout_seconds": 900},
    {"targets": ["user:boss"], "timeout_seconds": 900}]}]}


def alert(name: str, ci: str | None, *, status: str = "firing", **labels: str) -> Alert:
    all_labels = {"alertname": name, **labels} | ({"instance": f"{ci}:9100"} if ci else {})
    return Alert(
        source="alertmanager", integration="alertmanager", fingerprint=f"{name}-{ci}",
        status=AlertStatus(status), severity=Severity.ERROR, summary=f"{name} on {ci}",
        labels=all_labels, annotations={"summary": f"{name} on {ci}"},
        starts_at=datetime(2026, 11, 26, 11, 0, tzinfo=UTC), ends_at=None,
        generator_url=None, group_key=f"am:{name}:{ci}",
    )


class Target:
    """A real local HTTP server that records each request."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.status = 200
        self.body = "restarted"
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.server = TestServer(app)

    async def _handle(self, request: web.Request) -> web.Response:
        self.seen.append({"method": request.method, "path": request.path,
                          "headers": dict(request.headers), "body": await request.text()})
        return web.Response(status=self.status, text=self.body)

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    t = Target()
    await t.server.start_server()
    yield t
    await t.server.close()


class Lab:
    """One store, a clock, the CMDB above, the pipeline, and the runbook engine."""

    def __init__(self, store: Store, clock: FakeClock, tmp_path: Path, catalog: str, *,
                 dry_run: bool = False, max_output_bytes: int = 64 * 1024) -> None:
        path = tmp_path / "runbooks.yaml"
        path.write_text(textwrap.dedent(catalog))
        self.store = store
        self.clock = clock
        self.config = Config(escalation=EscalationConfig.model_validate(ESCALATION),
                             runbooks=RunbooksConfig(files=[path], dry_run=dry_run,
                                                     approval_ttl_seconds=600,
                                                     max_output_bytes=max_output_bytes))
        holder = TopologyHolder(Topology.build(CIS))
        self.followup = FollowUp(self.config, holder, clock=clock)
        self.pipeline = build_pipeline(self.config, holder, clock, self.followup)
        self.catalog = CatalogHolder(read_catalog([path]))
        self.triggers = Triggers(catalog=self.catalog, config=self.config.runbooks,
                                 topology=holder)
        self.triggers.followup = self.followup
        self.actions = Actions(store=store, clock=clock,
                               matrix=PriorityMatrix(self.config.priority),
                               followup=self.followup)
        self.executor = self.new_executor()
        self.executor.retry_wait = wait_none()

    def new_executor(self) -> Executor:
        return Executor(store=self.store, clock=self.clock, catalog=self.catalog,
                        config=self.config.runbooks, actions=self.actions,
                        escalations_escalate=self.actions.escalate, followup=self.followup)

    async def send(self, *alerts: Alert) -> list[int]:
        """Ingest alerts as the daemon does; returns the runs they made."""
        self.clock.advance(1)
        async with self.store.write() as conn:
            result = await self.pipeline.process(conn, alerts)
            touched = result.touched | {t.incident.id for t in result.transitions}
            return await self.triggers.create_runs(conn, touched, self.clock.now())

    async def run(self, run_id: int) -> RunView:
        async with self.store.read() as conn:
            found = await run_store.get_run(conn, run_id)
        assert found is not None
        return found

    async def timeline(self, incident_id: int, kind: TimelineKind
                       ) -> list[tuple[str, dict[str, Any]]]:
        async with self.store.read() as conn:
            found = await incident_store.get_incident(conn, incident_id)
        assert found is not None
        return [(e.actor, e.detail) for e in found.timeline if e.kind is kind]

    async def incident_status(self, incident_id: int) -> IncidentStatus:
        async with self.store.read() as conn:
            state = await incident_store.get_state(conn, incident_id)
        assert state is not None
        return state.status


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def echo_argv(marker: Path | None = None) -> str:
    """A python program printing its argv and environment names as JSON."""
    touch = f"open({str(marker)!r}, 'w').close(); " if marker else ""
    return (f"import json, os, sys; {touch}"
            "print(json.dumps({'argv': sys.argv[1:], 'env': dict(os.environ)}))")


# -- end to end ------------------------------------------------------------------


async def test_end_to_end_http_command_notify(store: Store, clock: FakeClock, tmp_path: Path,
                                              target: Target,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INCIDENTD_TEST_SECRET", "hunter2")
    monkeypatch.setenv("LANG", "C.UTF-8")
    lab = Lab(store, clock, tmp_path, f"""
        runbooks:
          - name: restart-db
            match: {{alerts: ['alertname="DbDown"'], ci_types: [database]}}
            params: {{unit: "postgres@{{{{ ci.id }}}}", path: "{{{{ alert.labels.path }}}}"}}
            steps:
              - name: restart
                type: http
                url: "{target.url}/units/{{{{ params.unit }}}}/restart"
                headers: {{X-Incident: "{{{{ incident.key }}}}", Authorization: "Bearer t0k"}}
                body: {{label: "{{{{ alert.labels.path }}}}", owner: "{{{{ ci.owner_group }}}}"}}
              - name: inspect
                type: command
                argv: ["{PY}", "-c", "{echo_argv()}", "{{{{ alert.labels.path }}}}",
                       "--unit={{{{ params.unit }}}}"]
                env: {{TARGET: "{{{{ ci.id }}}}"}}
                cwd: "{tmp_path}"
              - name: tell
                type: notify
                message: "restarted {{{{ params.unit }}}} for {{{{ incident.key }}}}"
    """)
    before = sample("incidentd_runbook_runs_total", runbook="restart-db", outcome="succeeded")
    [run_id] = await lab.send(alert("DbDown", "db-1", path=INJECTION))
    assert await lab.send(alert("DbDown", "db-1", path=INJECTION)) == []  # a repeat: no run
    run = await lab.run(run_id)
    assert (run.status, run.trigger, run.ci_id, run.dry_run) == ("queued", "alert", "db-1", False)
    assert run.params == {"unit": "postgres@db-1", "path": INJECTION}

    assert await lab.executor.run_once() == 1
    run = await lab.run(run_id)
    assert run.status == "succeeded", run
    assert [s["status"] for s in run.steps] == ["succeeded"] * 3

    [request] = target.seen
    assert (request["method"], request["path"]) == ("POST", "/units/postgres@db-1/restart")
    assert request["headers"]["X-Incident"] == "INC-000001"
    assert json.loads(request["body"]) == {"label": INJECTION, "owner": "dba"}
    http_step, command_step, _ = run.steps
    assert (http_step["http_status"], http_step["output"]) == (200, "restarted")
    assert http_step["input"]["headers"] == {"X-Incident": "INC-000001",
                                             "Authorization": "[redacted]"}

    printed = json.loads(command_step["output"]["stdout"])
    # The label arrives as one literal argument: no shell ever saw it.
    assert printed["argv"] == [INJECTION, "--unit=postgres@db-1"]
    assert printed["env"]["TARGET"] == "db-1"
    assert printed["env"]["LANG"] == "C.UTF-8"  # allowlisted
    assert "INCIDENTD_TEST_SECRET" not in printed["env"]  # not allowlisted
    assert command_step["exit_code"] == 0
    assert command_step["input"]["env"] == {"TARGET": "[redacted]"}
    assert command_step["input"]["argv"][3] == INJECTION

    started = await lab.timeline(1, TimelineKind.RUNBOOK_STARTED)
    assert started == [("incidentd", {"run": run_id, "runbook": "restart-db",
                                      "status": "queued", "dry_run": False,
                                      "trigger": "alert"})]
    [(actor, notified)] = await lab.timeline(1, TimelineKind.RUNBOOK_NOTIFY)
    assert actor == "runbook:restart-db"
    assert notified["message"] == "restarted postgres@db-1 for INC-000001"
    [(_, done)] = await lab.timeline(1, TimelineKind.RUNBOOK_SUCCEEDED)
    assert done | {"error": None} == {"run": run_id, "runbook": "restart-db",
                                      "status": "succeeded", "dry_run": False, "error": None,
                                      "failed_step": None, "breaker_opened": False}
    assert sample("incidentd_runbook_runs_total", runbook="restart-db",
                  outcome="succeeded") == before + 1
    assert await lab.executor.run_once() == 0  # nothing runs twice


async def test_sandbox_escape_fails_the_run_with_a_clear_error(
        store: Store, clock: FakeClock, tmp_path: Path) -> None:
    lab = Lab(store, clock, tmp_path, """
        runbooks:
          - name: sneaky
            match: {alerts: ['alertname="DbDown"']}
            params: {escape: "{{ ''.__class__.__mro__[1].__subclasses__() }}"}
            steps: [{name: s, type: notify, message: "{{ params.escape }}"}]
    """)
    [run_id] = await lab.send(alert("DbDown", "db-1"))
    run = await lab.run(run_id)
    assert run.status == "failed"
    assert run.error is not None and "sneaky.params.escape" in run.error
    assert "sandbox" in run.error or "unsafe" in run.error
    [(_, detail)] = await lab.timeline(1, TimelineKind.RUNBOOK_FAILED)
    assert detail["status"] == "failed" and detail["error"] == run.error
    assert await lab.executor.run_once() == 0


# -- time limits -------------------------------------------------------------------


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


async def wait_dead(pid: int) -> bool:
    for _ in range(50):
        if not alive(pid):
            return True
        await asyncio.sleep(0.1)
    return False


async def test_step_timeout_kills_the_process_group(store: Store, clock: FakeClock,
                                                    tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    program = ("import subprocess, sys, time; "
               "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
               f"open({str(pidfile)!r}, 'w').write(str(p.pid)); time.sleep(60)")
    lab = Lab(store, clock, tmp_path, f"""
        runbooks:
          - name: hang
            match: {{alerts: ['alertname="DbDown"']}}
            steps:
              - {{name: stuck, type: command, timeout_seconds: 1.5,
                  argv: ["{PY}", "-c", "{program}"]}}
              - {{name: after, type: notify, message: "never"}}
    """)
    [run_id] = await lab.send(alert("DbDown", "db-1"))
    await lab.executor.run_once()
    run = await lab.run(run_id)
    assert run.status == "failed"
    stuck, after = run.steps
    assert stuck["status"] == "failed" and stuck["error"] == "timed out within 1.5 s"
    assert after["status"] == "skipped"
    assert run.error == "step stuck failed: timed out within 1.5 s"
    assert await wait_dead(int(pidfile.read_text()))  # the grandchild too


async def test_whole_run_timeout(store: Store, clock: FakeClock, tmp_path: Path) -> None:
    lab = Lab(store, clock, tmp_path, f"""
        runbooks:
          - name: slow
            match: {{alerts: ['alertname="DbDown"']}}
            timeout_seconds: 1
            steps:
              - {{name: sleepy, type: command, argv: ["{PY}", "-c", "import time; time.sleep(30)"]}}
    """)
    [run_id] = await lab.send(alert("DbDown", "db-1"))
    await lab.executor.run_once()
    run = await lab.run(run_id)
    assert (run.status, run.error) == ("failed", "the run timed out after 1 s")
    assert run.steps[0]["status"] == "failed"
    # A fix that timed out escalates the incident.
    [(actor, detail)] = [e for e in await lab.timeline(1, TimelineKind.ESCALATED)
                         if e[0] != "incidentd"]
    assert actor == "runbook:slow" and detail["level"] == 2
    assert "timed out" in detail["note"]


# -- dry run -------------------------------------------------------------------------


async def test_dry_run_renders_and_runs_nothing(store: Store, clock: FakeClock,
                                                tmp_path: Path, target: Target) -> None:
    marker = tmp_path / "ran"
    lab = Lab(store, clock, tmp_path, f"""
        runbooks:
          - name: fix
            match: {{alerts: ['alertname="DbDown"']}}
            steps:
              - {{name: call, type: http, url: "{target.url}/fix/{{{{ ci.id }}}}"}}
              - {{name: touch, type: command,
                  argv: ["{PY}", "-c", "{echo_argv(marker)}", "{{{{ alert.labels.path }}}}"]}}
              - {{name: wait, type: wait_for_resolution, timeout_seconds: 300}}
    """, dry_run=True)
    before = sample("incidentd_runbook_runs_total", runbook="fix", outcome="dry_run")
    [run_id] = await lab.send(alert("DbDown", "db-1", path=INJECTION))
    assert (await lab.run(run_id)).dry_run
    await lab.executor.run_once()
    run = await lab.run(run_id)
    assert target.seen == []
    assert not marker.exists()
    assert run.status == "succeeded"
    assert [s["status"] for s in run.steps] == ["dry_run"] * 3
    assert run.steps[0]["input"]["url"] == f"{target.url}/fix/db-1"
    assert run.steps[1]["input"]["argv"][-1] == INJECTION
    assert sample("incidentd_runbook_runs_total", runbook="fix", outcome="dry_run") == before + 1
    assert await lab.incident_status(1) is IncidentStatus.TRIGGERED  # nothing resolved


# -- approval --------------------------------------------------------------------------


async def test_approval_granted_denied_and_expired(store: Store, clock: FakeClock,
                                                   tmp_path: Path) -> None:
    lab = Lab(store, clock, tmp_path, """
        runbooks:
          - name: careful
            approval: required
            match: {alerts: ['alertname="DbDown"']}
            steps: [{name: say, type: notify, message: "fixed {{ ci.id }}"}]
    """)
    [granted] = await lab.send(alert("DbDown", "db-1"))
    [denied] = await lab.send(alert("DbDown", "db-2"))
    [expiring] = await lab.send(alert("DbDown", "db-3"))
    run = await lab.run(granted)
    assert run.status == "pending_approval"
    assert run.approval_expires_at == run.created_at + timedelta(seconds=600)
    [(_, pending)] = await lab.timeline(run.incident_id or 0,
                                        TimelineKind.RUNBOOK_PENDING_APPROVAL)
    assert pending["run"] == granted and pending["runbook"] == "careful"
    assert pending["expires_at"] is not None
    assert await lab.executor.run_once() == 0  # nothing runs unapproved

    async with store.write() as conn:
        view = await lab.triggers.approve(conn, granted, actor="ann", now=clock.now())
        assert (view.status, view.approver) == ("queued", "ann")
        view = await lab.triggers.deny(conn, denied, actor="bob", now=clock.now())
        assert (view.status, view.approver) == ("denied", "bob")
    async with store.write() as conn:
        with pytest.raises(InvalidTransition, match="denied by bob"):
            await lab.triggers.approve(conn, denied, actor="ann", now=clock.now())
    async with store.write() as conn:
        with pytest.raises(NotFound):
            await lab.triggers.approve(conn, 999, actor="ann", now=clock.now())

    assert await lab.executor.run_once() == 1
    assert (await lab.run(granted)).status == "succeeded"
    assert (await lab.run(denied)).status == "denied"
    [(_, started)] = await lab.timeline((await lab.run(granted)).incident_id or 0,
                                        TimelineKind.RUNBOOK_STARTED)
    assert started["approver"] == "ann"

    clock.advance(601)
    async with store.write() as conn:
        with pytest.raises(InvalidTransition, match="expired"):
            await lab.triggers.approve(conn, expiring, actor="ann", now=clock.now())
    async with store.write() as conn:
        assert await lab.triggers.expire(conn, clock.now()) == 1
        assert await lab.triggers.expire(conn, clock.now()) == 0
    run = await lab.run(expiring)
    assert run.status == "expired" and run.finished_at == clock.now()
    [(_, detail)] = await lab.timeline(run.incident_id or 0, TimelineKind.RUNBOOK_FAILED)
    assert detail["status"] == "expired"
    assert await lab.executor.run_once() == 0


# -- rate limit, lock, kill switch ------------------------------------------------------


async def test_rate_limit_per_runbook_per_ci(store: Store, clock: FakeClock,
                                             tmp_path: Path) -> None:
    lab = Lab(store, clock, tmp_path, """
        runbooks:
          - name: bounce
            match: {alerts: ['team="db"']}
            steps: [{name: say, type: notify, message: "hi"}]
    """)
    ids = [(await lab.send(alert(f"A{i}", "db-1", team="db")))[0] for i in range(4)]
    statuses = [(await lab.run(i)).status for i in ids]
    assert statuses == ["queued", "queued", "queued", "skipped"]
    skipped = await lab.run(ids[3])
    assert skipped.error is not None and skipped.error.startswith(
        "rate limited: 3 runs in the last 3600 s")
    [other] = await lab.send(alert("A0", "db-2", team="db"))  # another CI: its own limit
    assert (await lab.run(other)).status == "queued"
    clock.advance(3600)
    [later] = await lab.send(alert("A9", "db-1", team="db"))
    assert (await lab.run(later)).status == "queued"


async def test_one_run_at_a_time_per_ci(store: Store, clock: FakeClock, tmp_path: Path) -> None:
    lab = Lab(store, clock, tmp_path, """
        runbooks:
          - name: first
            match: {alerts: ['alertname="DbDown"']}
            steps: [{name: say, type: notify, message: "one"}]
          - name: second
            match: {alerts: ['alertname="DbDown"']}
            steps: [{name: say, type: notify, message: "two"}]
    """)
    on_db1 = await lab.send(alert("DbDown", "db-1"))
    on_db2 = await lab.send(alert("DbDown", "db-2"))
    ids = on_db1 + on_db2
    # Two runs on each CI are queued; only one per CI may be running at a time.
    assert await lab.executor.run_once() == 2  # one on db-1, one on db-2
    assert [(await lab.run(i)).status for i in ids] == [
        "succeeded", "queued", "succeeded", "queued"]
    assert await lab.executor.run_once() == 2
    assert {(await lab.run(i)).status for i in ids} == {"succeeded"}


async def test_lock_holds_while_a_run_is_running(store: Store, clock: FakeClock,
                                                 tmp_path: Path) -> None:
    lab = Lab(store, clock, tmp_path, """
        runbooks:
          - name: waits
            match: {alerts: ['alertname="DbDown"']}
            steps: [{name: wait, type: wait_for_resolution, timeout_seconds: 30}]
          - name: other
            match: {alerts: ['alertname="DbDown"']}
            steps: [{name: say, type: notify, message: "two"}]
    """)
    waiting, other = await lab.send(alert("DbDown", "db-1"))
    pass_one = asyncio.create_task(lab.executor.run_once())
    for _ in range(100):
        if (await lab.run(waiting)).status == "running":
            break
        await asyncio.sleep(0.05)
    second = lab.new_executor()  # another replica, say
    assert await second.run_once() == 0
    assert (await lab.run(other)).status == "queued"
    await lab.send(alert("DbDown", "db-1", status="resolved"))
    assert await pass_one == 1
    assert (await lab.run(waiting)).status == "succeeded"
    assert await second.run_once() == 1


async def test_kill_switch(store: Store, clock: FakeClock, tmp_path: Path) -> None:
    lab = Lab(store, clock, tmp_path, """
        runbooks:
          - name: fix
            match: {alerts: ['alertname="DbDown"']}
            steps: [{name: say, type: notify, message: "hi"}]
    """)
    [queued] = await lab.send(alert("DbDown", "db-1"))
    async with store.write() as conn:
        await run_store.set_disabled(conn, "*", disabled=True, reason="incident review",
                                     now=clock.now())
    [skipped] = await lab.send(alert("DbDown", "db-2"))
    assert (await lab.run(skipped)).error == (
        "all runbooks are disabled (kill switch): incident review")
    assert await lab.executor.run_once() == 0
    run = await lab.run(queued)  # queued before the switch: skipped when claimed
    assert run.status == "skipped" and run.error is not None and "kill switch" in run.error
    async with store.write() as conn:
        await run_store.set_disabled(conn, "*", disabled=False, reason=None, now=clock.now())
    [again] = await lab.send(alert("DbDown", "db-3"))
    assert (await lab.run(again)).status == "queued"


# -- the circuit breaker and escalation ---------------------------------------------------


async def test_circuit_breaker_opens_escalates_and_skips(store: Store, clock: FakeClock,
                                                         tmp_path: Path) -> None:
    lab = Lab(store, clock, tmp_path, f"""
        runbooks:
          - name: broken
            circuit_breaker_failures: 2
            match: {{alerts: ['alertname="DbDown"']}}
            steps:
              - {{name: try, type: command, argv: ["{PY}", "-c", "import sys; sys.exit(3)"]}}
    """)
    first = (await lab.send(alert("DbDown", "db-1")))[0]
    await lab.executor.run_once()
    run = await lab.run(first)
    assert (run.status, run.steps[0]["exit_code"]) == ("failed", 3)
    assert run.error == "step try failed: exit status 3"
    [(actor, escalated)] = [e for e in await lab.timeline(run.incident_id or 0,
                                                          TimelineKind.ESCALATED)
                            if e[0] != "incidentd"]
    assert actor == "runbook:broken"
    assert (escalated["level"], escalated["targets"]) == (2, ["team:sre"])
    assert escalated["note"] == "runbook broken failed: step try failed: exit status 3"
    async with store.read() as conn:
        assert (await run_store.states(conn))["broken"].consecutive_failures == 1

    second = (await lab.send(alert("DbDown", "db-2")))[0]
    await lab.executor.run_once()
    run = await lab.run(second)
    [(_, failed)] = await lab.timeline(run.incident_id or 0, TimelineKind.RUNBOOK_FAILED)
    assert failed["breaker_opened"] is True and failed["failed_step"] == "try"
    [(_, escalated)] = [e for e in await lab.timeline(run.incident_id or 0,
                                                      TimelineKind.ESCALATED)
                        if e[0] != "incidentd"]
    assert escalated["level"] == 2 and "circuit breaker opened" in escalated["note"]
    async with store.read() as conn:
        state = (await run_store.states(conn))["broken"]
    assert state.disabled and state.reason is not None
    assert state.reason.startswith("circuit breaker open: 2 failures in a row")

    third = (await lab.send(alert("DbDown", "db-3")))[0]
    run = await lab.run(third)
    assert run.status == "skipped" and "runbook broken is disabled" in (run.error or "")
    assert await lab.executor.run_once() == 0

    async with store.write() as conn:  # an operator closes the breaker
        await run_store.set_disabled(conn, "broken", disabled=False, reason=None,
                                     now=clock.now())
        assert (await run_store.states(conn))["broken"].consecutive_failures == 0


# -- conditions and retries ---------------------------------------------------------------


async def test_when_conditions_and_idempotent_retries(store: Store, clock: FakeClock,
                                                      tmp_path: Path) -> None:
    counter = tmp_path / "count"
    flaky = (f"import pathlib, sys; p = pathlib.Path({str(counter)!r}); "
             "n = int(p.read_text()) + 1 if p.exists() else 1; p.write_text(str(n)); "
             "sys.exit(0 if n >= 3 else 1)")
    lab = Lab(store, clock, tmp_path, f"""
        runbooks:
          - name: steps
            match: {{alerts: ['alertname="DbDown"']}}
            steps:
              - {{name: flaky, type: command, idempotent: true, retries: 2,
                  argv: ["{PY}", "-c", "{flaky}"]}}
              - {{name: fails, type: command, argv: ["{PY}", "-c", "import sys; sys.exit(1)"],
                  idempotent: false, retries: 5}}
              - {{name: on-success, type: notify, message: "ok"}}
              - {{name: on-failure, type: notify, when: failed, message: "rolling back"}}
              - {{name: cleanup, type: notify, when: always, message: "done"}}
    """)
    [run_id] = await lab.send(alert("DbDown", "db-1"))
    await lab.executor.run_once()
    run = await lab.run(run_id)
    got = [(s["name"], s["status"], s["attempts"]) for s in run.steps]
    assert got == [("flaky", "succeeded", 3), ("fails", "failed", 1),
                   ("on-success", "skipped", 0), ("on-failure", "succeeded", 1),
                   ("cleanup", "succeeded", 1)]
    assert run.status == "failed" and run.error == "step fails failed: exit status 1"


async def test_http_status_and_output_truncation(store: Store, clock: FakeClock,
                                                 tmp_path: Path, target: Target) -> None:
    target.status, target.body = 503, "x" * 1000
    lab = Lab(store, clock, tmp_path, f"""
        runbooks:
          - name: call
            match: {{alerts: ['alertname="DbDown"']}}
            steps: [{{name: call, type: http, method: PUT, url: "{target.url}/x",
                      expect_status: [200]}}]
    """, max_output_bytes=64)
    [run_id] = await lab.send(alert("DbDown", "db-1"))
    await lab.executor.run_once()
    [step] = (await lab.run(run_id)).steps
    assert (step["status"], step["http_status"]) == ("failed", 503)
    assert step["output"].startswith("x" * 64 + "… [truncated")
    assert step["error"] == "HTTP 503, expected one of [200]"
    assert target.seen[0]["method"] == "PUT"


# -- closing the loop ------------------------------------------------------------------------


async def test_wait_for_resolution_resolves_the_incident(store: Store, clock: FakeClock,
                                                         tmp_path: Path) -> None:
    lab = Lab(store, clock, tmp_path, f"""
        runbooks:
          - name: clear-disk
            match: {{alerts: ['alertname="DiskFull"']}}
            steps:
              - {{name: clean, type: command, argv: ["{PY}", "-c", "print('cleaned')"]}}
              - {{name: wait, type: wait_for_resolution, timeout_seconds: 30}}
    """)
    # Two alerts on one CI make one incident; only the disk alert triggers the runbook.
    [run_id] = await lab.send(alert("DiskFull", "db-1"), alert("HighLoad", "db-1"))
    running = asyncio.create_task(lab.executor.run_once())
    await asyncio.sleep(0.3)
    assert not running.done()
    await lab.send(alert("DiskFull", "db-1", status="resolved"))
    assert await asyncio.wait_for(running, 10) == 1
    run = await lab.run(run_id)
    assert run.status == "succeeded"
    incident_id = run.incident_id or 0
    assert await lab.incident_status(incident_id) is IncidentStatus.RESOLVED
    [(actor, detail)] = await lab.timeline(incident_id, TimelineKind.RESOLVED)
    assert actor == "runbook:clear-disk"
    assert detail["note"] == "resolved by automation: clear-disk"


async def test_wait_for_resolution_times_out_and_escalates(store: Store, clock: FakeClock,
                                                          tmp_path: Path) -> None:
    lab = Lab(store, clock, tmp_path, """
        runbooks:
          - name: hope
            match: {alerts: ['alertname="DiskFull"']}
            steps: [{name: wait, type: wait_for_resolution, timeout_seconds: 0.6}]
    """)
    [run_id] = await lab.send(alert("DiskFull", "db-1"))
    await lab.executor.run_once()
    run = await lab.run(run_id)
    assert run.error == "step wait failed: the alerts did not resolve within 0.6 s"
    assert await lab.incident_status(run.incident_id or 0) is IncidentStatus.TRIGGERED
    levels = [d["level"] for a, d in await lab.timeline(run.incident_id or 0,
                                                         TimelineKind.ESCALATED)]
    assert levels == [1, 2]


async def test_manual_run(store: Store, clock: FakeClock, tmp_path: Path) -> None:
    lab = Lab(store, clock, tmp_path, """
        runbooks:
          - name: by-hand
            match: {alerts: ['alertname="Never"']}
            params: {who: "{{ alert.labels.alertname }} on {{ ci.id }}"}
            steps: [{name: say, type: notify, message: "{{ params.who }}"}]
    """)
    assert await lab.send(alert("DbDown", "db-1")) == []
    async with store.write() as conn:
        run_id = await lab.triggers.run_manually(conn, "by-hand", 1, actor="ann",
                                                 now=clock.now())
        with pytest.raises(NotFound):
            await lab.triggers.run_manually(conn, "nope", 1, actor="ann", now=clock.now())
        with pytest.raises(NotFound):
            await lab.triggers.run_manually(conn, "by-hand", 99, actor="ann", now=clock.now())
    run = await lab.run(run_id)
    assert (run.trigger, run.actor, run.alert_id, run.ci_id) == ("manual", "ann", None, "db-1")
    assert run.params == {"who": "DbDown on db-1"}
    await lab.executor.run_once()
    assert (await lab.run(run_id)).status == "succeeded"


# -- restart ---------------------------------------------------------------------------------


async def test_restart_during_a_run_interrupts_it(store: Store, clock: FakeClock,
                                                  tmp_path: Path) -> None:
    lab = Lab(store, clock, tmp_path, """
        runbooks:
          - name: long
            match: {alerts: ['alertname="DbDown"']}
            steps:
              - {name: one, type: notify, message: "1"}
              - {name: two, type: notify, message: "2"}
    """)
    [run_id] = await lab.send(alert("DbDown", "db-1"))
    # A process claimed it, finished step 1, and died during step 2.
    async with store.write() as conn:
        await run_store.move(conn, [run_id], allowed_from=["queued"], to="running",
                             now=clock.now(), started_at=clock.now())
        await run_store.set_steps(conn, run_id, [{"name": "one", "status": "succeeded"}],
                                  clock.now())
    restarted = lab.new_executor()
    assert await restarted.interrupt_running() == 1
    run = await lab.run(run_id)
    assert run.status == "interrupted"
    assert run.error == "the daemon stopped during step 2 (two); not re-run"
    [(_, detail)] = await lab.timeline(1, TimelineKind.RUNBOOK_FAILED)
    assert detail["status"] == "interrupted"
    assert await restarted.run_once() == 0
    assert await restarted.interrupt_running() == 0


async def test_a_run_another_live_process_runs_is_left_alone_until_it_falls_silent(
        store: Store, clock: FakeClock, tmp_path: Path) -> None:
    lab = Lab(store, clock, tmp_path, """
        runbooks:
          - name: long
            match: {alerts: ['alertname="DbDown"']}
            steps: [{name: one, type: notify, message: "1"}]
    """)
    [run_id] = await lab.send(alert("DbDown", "db-1"))
    async with store.write() as conn:  # a replica claimed it and keeps its heartbeat
        await run_store.move(conn, [run_id], allowed_from=["queued"], to="running",
                             now=clock.now(), started_at=clock.now(), owner="replica-b",
                             heartbeat_at=clock.now())
    other = lab.new_executor()
    clock.advance(30)
    assert await other.interrupt_running() == 0
    async with store.write() as conn:
        await run_store.heartbeat(conn, owner="replica-b", now=clock.now())
    clock.advance(30)
    assert await other.interrupt_running() == 0  # heard from 30 s ago: alive
    clock.advance(10)  # silent for 40 s: its process is gone
    assert await other.interrupt_running() == 1
    assert (await lab.run(run_id)).status == "interrupted"


async def test_stop_interrupts_a_run_in_flight(store: Store, clock: FakeClock, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("daemon.runbooks.executor.STOP_GRACE_SECONDS", 0.2)
    lab = Lab(store, clock, tmp_path, f"""
        runbooks:
          - name: long
            match: {{alerts: ['alertname="DbDown"']}}
            steps:
              - {{name: sleepy, type: command, argv: ["{PY}", "-c", "import time; time.sleep(30)"]}}
    """)
    [run_id] = await lab.send(alert("DbDown", "db-1"))
    lab.executor.start()
    for _ in range(100):
        if (await lab.run(run_id)).status == "running":
            break
        await asyncio.sleep(0.05)
    await lab.executor.stop()
    run = await lab.run(run_id)
    assert run.status == "interrupted"
    assert run.error == "the daemon stopped during step 1 (sleepy); not re-run"


# -- replicas (PostgreSQL) -------------------------------------------------------------------


async def test_claimed_rows_are_skipped_by_other_replicas(pg_store: Store, clock: FakeClock,
                                                          tmp_path: Path) -> None:
    store = pg_store  # SKIP LOCKED is PostgreSQL's; SQLite has one writer
    lab = Lab(store, clock, tmp_path, """
        runbooks:
          - name: fix
            match: {alerts: ['alertname="DbDown"']}
            steps: [{name: say, type: notify, message: "hi"}]
    """)
    [run_id] = await lab.send(alert("DbDown", "db-1"))
    async with store.write() as conn:
        [held] = await run_store.queued(conn, limit=10)  # replica A, mid-claim
        assert held.id == run_id
        assert await asyncio.wait_for(lab.new_executor().run_once(), 5) == 0  # replica B
    assert await lab.executor.run_once() == 1


async def test_runs_listing(store: Store, clock: FakeClock, tmp_path: Path) -> None:
    lab = Lab(store, clock, tmp_path, """
        runbooks:
          - name: fix
            match: {alerts: ['alertname="DbDown"']}
            steps: [{name: say, type: notify, message: "hi"}]
    """)
    ids = [(await lab.send(alert("DbDown", ci)))[0] for ci in ("db-1", "db-2", "db-3")]
    async with store.read() as conn:
        page = await run_store.list_runs(conn, status=["queued"], incident_id=None,
                                         runbook="fix", limit=2, before_id=None)
        assert [r.id for r in page] == ids[::-1][:2]
        rest = await run_store.list_runs(conn, status=None, incident_id=None, runbook=None,
                                         limit=2, before_id=page[-1].id)
        assert [r.id for r in rest] == ids[:1]
        count = await conn.scalar(sa.select(sa.func.count()).select_from(
            sa.table("runbook_runs")))
    assert count == 3
    body = run_store.run_json(page[0])
    assert body["status"] == "queued" and body["created_at"].endswith("Z")
    assert os.environ.get("INCIDENTD_TEST_SECRET") is None
