"""The runbook API, approval from signed links and Slack buttons, the notifications of
runs, the report's automation figures, and `check-config` on runbook files.

Over HTTP on a real store (SQLite and PostgreSQL) with the real `Triggers`; runs are
made through `POST /api/v1/runbooks/{name}/run` on incidents seeded in the tables.
Slack's `response_url` is a real local aiohttp server, and every Slack signature is
computed here with hmac/hashlib, independently of the daemon's code.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from daemon.api.oncall import OnCallRoutes
from daemon.api.responses import errors_middleware
from daemon.api.runbooks import RunbookRoutes
from daemon.cli import main
from daemon.config import Config, NotificationsConfig, RunbooksConfig
from daemon.correlation.topology import TopologyHolder
from daemon.itsm.action_links import ActionLinks
from daemon.itsm.actions import Actions
from daemon.itsm.followup import FollowUp
from daemon.itsm.priority import PriorityMatrix
from daemon.itsm.reports import SummaryQuery, summary
from daemon.itsm.slack_messages import message
from daemon.runbooks.catalog import CatalogHolder, read_catalog
from daemon.runbooks.templates import render
from daemon.runbooks.triggers import Triggers
from daemon.store import Store
from daemon.store import runbooks as run_store
from daemon.store.tables import incidents, notifications, runbook_runs, timeline
from tests.conftest import FakeClock

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_CATALOG = REPO / "config" / "runbooks.example.yaml"
LINK_SECRET = "link-secret-for-tests"
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SLACK_PATH = "/api/v1/integrations/slack/actions"
APPROVAL_TTL = 1800
Client = TestClient[web.Request, web.Application]

CATALOG = {"runbooks": [
    {"name": "restart-app", "description": "Restart the app",
     "match": {"alerts": ['alertname="AppDown"'], "ci_types": ["host"]},
     "params": {"key": "{{ incident.key }}"},
     "steps": [
         {"name": "restart", "type": "command", "argv": ["/bin/true", "{{ params.key }}"]},
         {"name": "wait", "type": "wait_for_resolution", "timeout_seconds": 120}]},
    {"name": "scale-up", "description": "Scale the deployment",
     "match": {"min_priority": "P2"}, "approval": "required", "dry_run": True,
     "rate_limit": None,
     "steps": [{"name": "patch", "type": "http", "method": "PATCH",
                "url": "http://127.0.0.1:8001/scale/{{ incident.id }}",
                "body": {"spec": {"replicas": 6}}}]},
]}


@dataclass
class Env:
    client: Client
    store: Store
    clock: FakeClock
    triggers: Triggers
    links: ActionLinks
    oncall: OnCallRoutes
    woken: list[int] = field(default_factory=list)

    async def incident(self, *, status: str = "triggered", priority: str | None = "P1") -> int:
        async with self.store.write() as conn:
            result = await conn.execute(sa.insert(incidents).returning(incidents.c.id), {
                "title": "checkout is slow", "status": status, "severity": "critical",
                "group_key": "g", "created_at": self.clock.now(), "priority": priority,
                "impacted_services": ["svc-checkout"], "root_cause_ci": "app-01"})
            return int(result.scalar_one())

    async def run(self, runbook: str, incident: int | str, *, actor: str = "ann",
                  expect: int = 201) -> dict[str, Any]:
        resp = await self.client.post(f"/api/v1/runbooks/{runbook}/run",
                                      json={"incident": incident, "actor": actor})
        body: dict[str, Any] = await resp.json()
        assert resp.status == expect, body
        return body

    async def get_run(self, run_id: int) -> dict[str, Any]:
        resp = await self.client.get(f"/api/v1/runbook-runs/{run_id}")
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        return body

    async def timeline(self, incident_id: int) -> list[tuple[str, str, dict[str, Any]]]:
        async with self.store.read() as conn:
            rows = await conn.execute(
                sa.select(timeline.c.kind, timeline.c.actor, timeline.c.detail)
                .where(timeline.c.incident_id == incident_id).order_by(timeline.c.id))
            return [(r.kind, r.actor, r.detail) for r in rows]


def write_catalog(tmp_path: Path, data: dict[str, Any] = CATALOG) -> Path:
    path = tmp_path / "runbooks.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def notifying_config() -> Config:
    """A webhook target that takes every runbook event (nothing is ever sent here)."""
    return Config(notifications=NotificationsConfig.model_validate({
        "public_url": "http://incidentd.test",
        "targets": [{"name": "ops", "type": "webhook", "url": "http://127.0.0.1:9/hook",
                     "routes": [{"events": ["runbook.*"]}]}]}))


@pytest.fixture
async def env(store: Store, clock: FakeClock, tmp_path: Path) -> AsyncIterator[Env]:
    catalog = CatalogHolder(read_catalog([write_catalog(tmp_path)]))
    triggers = Triggers(catalog=catalog, config=RunbooksConfig(approval_ttl_seconds=APPROVAL_TTL),
                        topology=TopologyHolder())
    config = notifying_config()
    followup = FollowUp(config, TopologyHolder(), clock=clock, link_secret=LINK_SECRET)
    triggers.followup = followup
    links = followup.links
    actions = Actions(store=store, clock=clock, matrix=PriorityMatrix(config.priority),
                      followup=followup)
    woken: list[int] = []
    oncall = OnCallRoutes(actions=actions, links=links, store=store, clock=clock,
                          slack_signing_secret=SLACK_SECRET, slack_max_age_seconds=300,
                          webhook_secrets=(), webhook_max_age_seconds=300, triggers=triggers,
                          executor_wake=lambda: woken.append(1))
    routes = RunbookRoutes(store=store, clock=clock, catalog=catalog, triggers=triggers,
                           executor_wake=lambda: woken.append(1))
    app = web.Application(middlewares=[errors_middleware])
    app.add_routes(routes.routes())
    app.add_routes(oncall.routes())
    async with TestClient(TestServer(app)) as client:
        yield Env(client, store, clock, triggers, links, oncall, woken)
    await oncall.drain()


# -- the catalog -------------------------------------------------------------------


async def test_list_runbooks_with_guards_and_state(env: Env) -> None:
    resp = await env.client.get("/api/v1/runbooks")
    assert resp.status == 200
    body = await resp.json()
    assert body["disabled_all"] is False and body["disabled_all_reason"] is None
    assert [r["name"] for r in body["items"]] == ["restart-app", "scale-up"]
    restart, scale = body["items"]
    assert restart["description"] == "Restart the app"
    assert restart["match"]["alerts"] == ['alertname="AppDown"']
    assert restart["match"]["ci_types"] == ["host"]
    assert restart["approval"] == "none" and restart["dry_run"] is False
    assert restart["rate_limit"] == {"max_runs": 3, "per_seconds": 3600}
    assert restart["steps"] == [{"type": "command", "name": "restart"},
                                {"type": "wait_for_resolution", "name": "wait"}]
    assert restart["state"] == {"disabled": False, "reason": None, "consecutive_failures": 0,
                                "updated_at": None}
    assert scale["approval"] == "required" and scale["dry_run"] is True
    assert scale["rate_limit"] is None


async def test_effective_dry_run_includes_the_global_switch(store: Store, clock: FakeClock,
                                                            tmp_path: Path) -> None:
    catalog = CatalogHolder(read_catalog([write_catalog(tmp_path)]))
    triggers = Triggers(catalog=catalog, config=RunbooksConfig(dry_run=True),
                        topology=TopologyHolder())
    app = web.Application(middlewares=[errors_middleware])
    app.add_routes(RunbookRoutes(store=store, clock=clock, catalog=catalog, triggers=triggers,
                                 executor_wake=None, dry_run_all=True).routes())
    async with TestClient(TestServer(app)) as client:
        body = await (await client.get("/api/v1/runbooks")).json()
    assert body["dry_run_all"] is True
    assert [r["dry_run"] for r in body["items"]] == [True, True]


async def test_kill_switch_skips_new_runs_until_enabled(env: Env) -> None:
    n = await env.incident()
    resp = await env.client.post("/api/v1/runbooks/disable-all",
                                 json={"actor": "alice", "reason": "bad deploy of the agent"})
    assert resp.status == 200
    assert (await resp.json())["disabled_all"] is True
    listed = await (await env.client.get("/api/v1/runbooks")).json()
    assert listed["disabled_all"] is True
    assert listed["disabled_all_reason"] == "alice: bad deploy of the agent"

    skipped = await env.run("restart-app", n)
    assert skipped["status"] == "skipped"
    assert "kill switch" in skipped["error"] and "bad deploy of the agent" in skipped["error"]
    assert env.woken == []
    assert ("runbook_failed", "ann") in [(k, a) for k, a, _ in await env.timeline(n)]

    resp = await env.client.post("/api/v1/runbooks/enable-all", json={"actor": "alice"})
    assert resp.status == 200 and (await resp.json())["disabled_all"] is False
    assert (await (await env.client.get("/api/v1/runbooks")).json())["disabled_all"] is False
    queued = await env.run("restart-app", n)
    assert queued["status"] == "queued" and queued["trigger"] == "manual"
    assert queued["actor"] == "ann" and queued["params"] == {"key": f"INC-{n:06d}"}
    assert env.woken  # the executor is told at once


async def test_kill_switch_body_is_validated(env: Env) -> None:
    resp = await env.client.post("/api/v1/runbooks/disable-all", json={"who": "alice"})
    assert resp.status == 400
    assert (await resp.json())["error"]["errors"][0]["field"] == "who"
    # No body at all: the actor defaults to `api`.
    resp = await env.client.post("/api/v1/runbooks/disable-all")
    assert resp.status == 200 and (await resp.json())["disabled_all_reason"] == "by api"


async def test_enable_closes_an_open_breaker(env: Env) -> None:
    async with env.store.write() as conn:
        for _ in range(3):
            state = await run_store.record_outcome(conn, "restart-app", failed=True,
                                                   threshold=3, reason="3 failures in a row",
                                                   now=env.clock.now())
    assert state.disabled
    item = (await (await env.client.get("/api/v1/runbooks")).json())["items"][0]
    assert item["state"]["disabled"] is True
    assert item["state"]["consecutive_failures"] == 3
    assert item["state"]["reason"] == "3 failures in a row"
    n = await env.incident()
    assert (await env.run("restart-app", n))["status"] == "skipped"

    resp = await env.client.post("/api/v1/runbooks/restart-app/enable", json={"actor": "bob"})
    assert resp.status == 200
    state_json = (await resp.json())["state"]
    assert (state_json["disabled"], state_json["consecutive_failures"]) == (False, 0)
    assert (await env.run("restart-app", n))["status"] == "queued"

    resp = await env.client.post("/api/v1/runbooks/no-such/enable")
    assert resp.status == 404


# -- manual runs and approval over the API -----------------------------------------------


async def test_manual_run_errors(env: Env) -> None:
    n = await env.incident()
    closed = await env.incident(status="resolved")
    for body, field_name in [({"actor": "ann"}, "incident"),
                             ({"incident": "yesterday"}, "incident"),
                             ({"incident": n, "actor": ""}, "actor"),
                             ({"incident": n, "extra": 1}, "extra")]:
        resp = await env.client.post("/api/v1/runbooks/restart-app/run", json=body)
        assert resp.status == 400, body
        assert (await resp.json())["error"]["errors"][0]["field"] == field_name
    resp = await env.client.post("/api/v1/runbooks/restart-app/run")
    assert resp.status == 400
    assert (await env.run("no-such", n, expect=404))["error"]["code"] == "not_found"
    assert "INC-000999" in (await env.run("restart-app", 999, expect=404))["error"]["message"]
    refused = await env.run("restart-app", closed, expect=409)
    assert "resolved" in refused["error"]["message"]


async def test_approve_and_deny_over_the_api(env: Env) -> None:
    n = await env.incident()
    first = await env.run("scale-up", f"INC-{n:06d}", actor="ann")
    assert first["status"] == "pending_approval" and first["dry_run"] is True
    assert first["approval_expires_at"] == "2026-11-26T12:30:00Z"
    assert env.woken == []  # nothing to run until someone approves
    second = await env.run("scale-up", n)

    pending = await (await env.client.get("/api/v1/runbook-runs",
                                          params={"status": "pending_approval"})).json()
    assert [r["id"] for r in pending["items"]] == [second["id"], first["id"]]

    env.clock.advance(60)
    resp = await env.client.post(f"/api/v1/runbook-runs/{first['id']}/approve",
                                 json={"actor": "carol"})
    assert resp.status == 200
    approved = await resp.json()
    assert (approved["status"], approved["approver"]) == ("queued", "carol")
    assert env.woken == [1]

    again = await env.client.post(f"/api/v1/runbook-runs/{first['id']}/deny",
                                  json={"actor": "dave"})
    assert again.status == 409
    assert "queued by carol" in (await again.json())["error"]["message"]

    resp = await env.client.post(f"/api/v1/runbook-runs/{second['id']}/deny",
                                 json={"actor": "dave"})
    denied = await resp.json()
    assert resp.status == 200
    assert (denied["status"], denied["approver"]) == ("denied", "dave")
    assert denied["finished_at"] == "2026-11-26T12:01:00Z"
    assert env.woken == [1]

    kinds = [(k, a, d.get("status")) for k, a, d in await env.timeline(n)]
    assert ("runbook_started", "carol", "queued") in kinds
    assert ("runbook_failed", "dave", "denied") in kinds

    for path in ("/api/v1/runbook-runs/999/approve", "/api/v1/runbook-runs/x/approve",
                 "/api/v1/runbook-runs/999"):
        resp = await env.client.request("GET" if path.endswith("999") else "POST", path)
        assert resp.status == 404, path


async def test_an_expired_approval_is_409(env: Env) -> None:
    n = await env.incident()
    run = await env.run("scale-up", n)
    env.clock.advance(APPROVAL_TTL)
    resp = await env.client.post(f"/api/v1/runbook-runs/{run['id']}/approve",
                                 json={"actor": "carol"})
    assert resp.status == 409
    assert "expired" in (await resp.json())["error"]["message"]
    async with env.store.write() as conn:
        assert await env.triggers.expire(conn, env.clock.now()) == 1
    assert (await env.get_run(run["id"]))["status"] == "expired"
    resp = await env.client.post(f"/api/v1/runbook-runs/{run['id']}/deny")
    assert resp.status == 409 and "expired" in (await resp.json())["error"]["message"]


async def test_list_runs_filters_and_pages(env: Env) -> None:
    a, b = await env.incident(), await env.incident()
    r1 = (await env.run("restart-app", a))["id"]
    r2 = (await env.run("scale-up", a))["id"]
    r3 = (await env.run("restart-app", b))["id"]

    async def ids(**query: str) -> list[int]:
        resp = await env.client.get("/api/v1/runbook-runs", params=query)
        assert resp.status == 200, await resp.text()
        return [r["id"] for r in (await resp.json())["items"]]

    assert await ids() == [r3, r2, r1]
    assert await ids(runbook="restart-app") == [r3, r1]
    assert await ids(incident=f"INC-{a:06d}") == [r2, r1]
    assert await ids(incident=str(b)) == [r3]
    assert await ids(status="queued,pending_approval", runbook="scale-up") == [r2]

    page1 = await (await env.client.get("/api/v1/runbook-runs", params={"limit": "2"})).json()
    assert [r["id"] for r in page1["items"]] == [r3, r2]
    assert await ids(limit="2", cursor=page1["next_cursor"]) == [r1]

    detail = await env.get_run(r1)
    assert detail["runbook"] == "restart-app" and detail["steps"] == []
    assert detail["context"]["incident"]["key"] == f"INC-{a:06d}"

    for query, field_name in [({"status": "done"}, "status"), ({"incident": "x"}, "incident"),
                              ({"limit": "0"}, "limit"), ({"cursor": "abc"}, "cursor")]:
        resp = await env.client.get("/api/v1/runbook-runs", params=query)
        assert resp.status == 400, query
        assert (await resp.json())["error"]["errors"][0]["field"] == field_name


# -- signed links ----------------------------------------------------------------------


def path_of(url: str) -> str:
    return url.removeprefix("http://incidentd.test")


async def test_run_links_name_the_run(env: Env) -> None:
    claim = env.links.verify(path_of(env.links.url(7, "approve", "ann", 42)).rsplit("/")[-1])
    assert (claim.incident_id, claim.action, claim.person, claim.run_id) == (7, "approve",
                                                                            "ann", 42)
    assert env.links.verify(env.links.token(7, "acknowledge", "ann")).run_id is None
    with pytest.raises(ValueError):
        env.links.token(7, "approve", "ann")  # which run?
    with pytest.raises(ValueError):
        env.links.token(7, "resolve", "ann", 42)


async def test_approve_and_deny_by_signed_link(env: Env) -> None:
    n = await env.incident()
    run = await env.run("scale-up", n)
    url = path_of(env.links.url(n, "approve", "ann", run["id"]))
    for _ in range(2):  # a link preview, then the person: GET changes nothing
        resp = await env.client.get(url)
        page = await resp.text()
        assert resp.status == 200 and resp.content_type == "text/html"
        assert "scale-up" in page and f"INC-{n:06d}" in page and "pending_approval" in page
        assert 'method="post"' in page and "dry run" in page
    assert (await env.get_run(run["id"]))["status"] == "pending_approval"

    resp = await env.client.post(url)
    page = await resp.text()
    assert resp.status == 200, page
    assert f"Run {run['id']} of scale-up approved" in page
    assert "Approved by <strong>ann</strong>" in page
    after = await env.get_run(run["id"])
    assert (after["status"], after["approver"]) == ("queued", "ann")
    assert env.woken == [1]
    again = await env.client.post(url)
    assert again.status == 403 and "already used" in await again.text()

    other = await env.run("scale-up", n)
    deny = path_of(env.links.url(n, "deny", "bob", other["id"]))
    resp = await env.client.post(deny)
    assert resp.status == 200 and "denied" in await resp.text()
    assert (await env.get_run(other["id"]))["status"] == "denied"


async def test_a_refused_link_is_not_spent_and_a_foreign_run_is_404(env: Env) -> None:
    n, m = await env.incident(), await env.incident()
    run = await env.run("scale-up", n)
    url = path_of(env.links.url(n, "approve", "ann", run["id"]))
    resp = await env.client.post(f"/api/v1/runbook-runs/{run['id']}/deny")
    assert resp.status == 200
    for _ in range(2):  # refused in the decision's transaction: the link is not used up
        resp = await env.client.post(url)
        page = await resp.text()
        assert resp.status == 409 and "denied" in page and "Nothing changed" in page

    elsewhere = path_of(env.links.url(m, "approve", "ann", run["id"]))
    for method in ("GET", "POST"):
        resp = await env.client.request(method, elsewhere)
        assert resp.status == 404, method
    missing = path_of(env.links.url(n, "approve", "ann", 999))
    assert (await env.client.post(missing)).status == 404


async def test_run_links_without_runbooks_configured(env: Env, store: Store,
                                                     clock: FakeClock) -> None:
    n = await env.incident()
    run = await env.run("scale-up", n)
    bare = OnCallRoutes(actions=None,  # type: ignore[arg-type]  # never reached
                        links=env.links, store=store, clock=clock, slack_signing_secret=None,
                        slack_max_age_seconds=300, webhook_secrets=(),
                        webhook_max_age_seconds=300)
    app = web.Application(middlewares=[errors_middleware])
    app.add_routes(bare.routes())
    async with TestClient(TestServer(app)) as client:
        resp = await client.post(path_of(env.links.url(n, "approve", "ann", run["id"])))
        assert resp.status == 404 and "not enabled" in await resp.text()
    assert (await env.get_run(run["id"]))["status"] == "pending_approval"


# -- Slack -----------------------------------------------------------------------------


class SlackStub:
    """Slack's side of `response_url`: records each message update."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        app = web.Application()
        app.router.add_post("/respond", self._respond)
        self.server = TestServer(app)

    async def _respond(self, request: web.Request) -> web.Response:
        self.received.put_nowait(await request.json())
        return web.Response(text="ok")

    async def next(self) -> dict[str, Any]:
        # Real time: the update comes from a background task.
        return await asyncio.wait_for(self.received.get(), timeout=10)


def slack_request(env: Env, stub: SlackStub, action: str, value: str, *, user: str = "U1",
                  name: str = "ann") -> tuple[bytes, dict[str, str]]:
    """A signed `block_actions` request for a button on our pending-approval message."""
    envelope = {"event": {"event_type": "runbook.pending_approval", "actor": "ann",
                          "detail": {"run": int(value) if value.isdigit() else 0,
                                     "runbook": "scale-up"},
                          "incident": {"id": 1, "key": "INC-000001", "title": "slow",
                                       "status": "triggered", "priority": "P1",
                                       "url": "http://incidentd.test/api/v1/incidents/1"}}}
    payload = {
        "type": "block_actions", "user": {"id": user, "username": name, "team_id": "T0"},
        "response_url": str(stub.server.make_url("/respond")),
        "message": {"type": "message", "text": "x", "blocks": message(envelope)["blocks"]},
        "actions": [{"type": "button", "action_id": action, "value": value,
                     "block_id": "incident:1", "action_ts": "1.3"}],
    }
    body = urlencode({"payload": json.dumps(payload)}).encode()
    ts = str(int(env.clock.now().timestamp()))
    signature = "v0=" + hmac.new(SLACK_SECRET.encode(), f"v0:{ts}:".encode() + body,
                                 hashlib.sha256).hexdigest()
    return body, {"Content-Type": "application/x-www-form-urlencoded",
                  "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature}


def context_line(update: dict[str, Any]) -> str:
    contexts = [b for b in update["blocks"] if b["type"] == "context"]
    assert len(contexts) == 1, update
    text: str = contexts[0]["elements"][0]["text"]
    return text


def button_ids(update: dict[str, Any]) -> list[str]:
    return [e["action_id"] for b in update["blocks"] if b["type"] == "actions"
            for e in b["elements"]]


async def test_slack_approve_and_deny_buttons(env: Env) -> None:
    n = await env.incident()
    run = await env.run("scale-up", n)
    stub = SlackStub()
    async with stub.server:
        body, headers = slack_request(env, stub, "approve_run", str(run["id"]))
        resp = await env.client.post(SLACK_PATH, data=body, headers=headers)
        assert resp.status == 200  # at once; the decision follows
        update = await stub.next()
        assert update["replace_original"] is True
        line = context_line(update)
        assert line.startswith("Approved by <@U1> at <!date^") and "scale-up" in line
        # Approve/Deny are spent; acknowledge, resolve and the link stay.
        assert button_ids(update) == ["acknowledge", "resolve", "open_incident"]
        after = await env.get_run(run["id"])
        assert (after["status"], after["approver"]) == ("queued", "slack:ann")
        assert env.woken == [1]

        body, headers = slack_request(env, stub, "deny_run", str(run["id"]), user="U2",
                                      name="bob")
        assert (await env.client.post(SLACK_PATH, data=body, headers=headers)).status == 200
        line = context_line(await stub.next())
        assert line.startswith(f"Could not deny run {run['id']}: ") and "queued" in line
        assert (await env.get_run(run["id"]))["status"] == "queued"

        other = await env.run("scale-up", n)
        body, headers = slack_request(env, stub, "deny_run", str(other["id"]), user="U2",
                                      name="bob")
        assert (await env.client.post(SLACK_PATH, data=body, headers=headers)).status == 200
        assert context_line(await stub.next()).startswith("Denied by <@U2>")
        assert (await env.get_run(other["id"]))["approver"] == "slack:bob"

        body, headers = slack_request(env, stub, "approve_run", "not-a-run")
        resp = await env.client.post(SLACK_PATH, data=body, headers=headers)
        assert resp.status == 400
        assert (await resp.json())["error"]["errors"][0]["field"] == "actions[0].value"
        assert stub.received.empty()


# -- notifications -------------------------------------------------------------------


async def outbox(store: Store) -> list[dict[str, Any]]:
    async with store.read() as conn:
        rows = await conn.execute(sa.select(notifications.c.payload)
                                  .order_by(notifications.c.id))
        return [r.payload["event"] for r in rows]


async def test_pending_approval_event_carries_signed_run_links(env: Env) -> None:
    n = await env.incident()
    run = await env.run("scale-up", n)
    [event] = await outbox(env.store)
    assert event["event_type"] == "runbook.pending_approval"
    assert event["detail"]["run"] == run["id"] and event["detail"]["runbook"] == "scale-up"
    actions = event["actions"]
    assert set(actions) == {"approve", "deny", "acknowledge", "resolve"}
    claim = env.links.verify(path_of(actions["approve"]).rsplit("/")[-1])
    assert (claim.action, claim.run_id, claim.incident_id, claim.person) == (
        "approve", run["id"], n, "ops")
    assert env.links.verify(path_of(actions["deny"]).rsplit("/")[-1]).run_id == run["id"]

    # The link from the notification works as it is.
    resp = await env.client.post(path_of(actions["approve"]))
    assert resp.status == 200, await resp.text()
    events = await outbox(env.store)
    assert [e["event_type"] for e in events] == ["runbook.pending_approval", "runbook.started"]
    assert "approve" not in events[1]["actions"]

    slack = message({"event": event})
    _header, section, buttons = slack["blocks"]
    assert "Runbook scale-up waits for approval" in section["text"]["text"]
    assert [(e["action_id"], e.get("value")) for e in buttons["elements"]][:2] == [
        ("approve_run", str(run["id"])), ("deny_run", str(run["id"]))]


def test_slack_headlines_of_run_events() -> None:
    incident = {"id": 1, "key": "INC-000001", "title": "slow", "status": "resolved",
                "priority": "P1", "url": "http://x/1"}

    def said(event_type: str, **detail: Any) -> str:
        msg = message({"event": {"event_type": event_type, "actor": "runbook:x",
                                 "detail": detail, "incident": incident}})
        return str(msg["blocks"][1]["text"]["text"])

    assert said("runbook.started", run=3, runbook="x") == "*Runbook x started (run 3)*"
    assert said("runbook.succeeded", run=3, runbook="x") == "*Runbook x succeeded (run 3)*"
    assert said("runbook.failed", run=3, runbook="x", status="expired") == (
        "*Runbook x expired (run 3)*")
    assert said("runbook.notify", run=3, runbook="x", message="disk <full>") == (
        "*Runbook x: disk &lt;full&gt;*")
    no_buttons = message({"event": {"event_type": "runbook.started", "detail": {"run": 3},
                                    "incident": incident}})
    assert [e["action_id"] for e in no_buttons["blocks"][2]["elements"]] == ["open_incident"]


# -- the report ------------------------------------------------------------------------

SINCE = datetime(2026, 11, 20, tzinfo=UTC)
UNTIL = datetime(2026, 11, 27, tzinfo=UTC)


async def seed_incident(conn: Any, *, resolved: bool, created: datetime = SINCE,
                        resolvers: Sequence[str] = ()) -> int:
    result = await conn.execute(sa.insert(incidents).returning(incidents.c.id), {
        "title": "t", "status": "resolved" if resolved else "triggered", "severity": "error",
        "group_key": "g", "created_at": created, "impacted_services": [],
        "resolved_at": created + timedelta(minutes=5) if resolved else None})
    incident_id = int(result.scalar_one())
    for i, actor in enumerate(resolvers):
        kind = "resolved" if i % 2 == 0 else "reopened"
        await conn.execute(sa.insert(timeline), {
            "incident_id": incident_id, "at": created + timedelta(minutes=i), "actor": actor,
            "kind": kind, "detail": {}})
    return incident_id


async def seed_run(conn: Any, incident_id: int, status: str, n: int) -> None:
    await conn.execute(sa.insert(runbook_runs), {
        "runbook": "restart-app", "incident_id": incident_id, "alert_id": n, "ci_id": None,
        "status": status, "dry_run": False, "trigger": "alert", "actor": "incidentd",
        "params": {}, "context": {}, "steps": [], "created_at": SINCE, "updated_at": SINCE})


async def test_report_counts_resolutions_by_automation(store: Store) -> None:
    async with store.write() as conn:
        by_runbook = await seed_incident(conn, resolved=True, resolvers=["runbook:restart-app"])
        by_person = await seed_incident(conn, resolved=True, resolvers=["alice"])
        # Resolved by a runbook, reopened, then resolved by a person: the person's.
        taken_back = await seed_incident(
            conn, resolved=True, resolvers=["runbook:restart-app", "incidentd", "bob"])
        # Resolved by a person, reopened, then by a runbook: the runbook's.
        given = await seed_incident(conn, resolved=True,
                                    resolvers=["carol", "incidentd", "runbook:scale-up"])
        still_open = await seed_incident(conn, resolved=False)
        outside = await seed_incident(conn, resolved=True, created=UNTIL,
                                      resolvers=["runbook:restart-app"])
        # `runbook:` spelled differently is not automation.
        lookalike = await seed_incident(conn, resolved=True, resolvers=["runbook_bot"])
        for n, (incident_id, status) in enumerate([
                (by_runbook, "succeeded"), (by_runbook, "skipped"), (taken_back, "failed"),
                (given, "succeeded"), (still_open, "pending_approval"),
                (still_open, "denied"), (outside, "succeeded"), (by_person, "expired")]):
            await seed_run(conn, incident_id, status, n)
        del lookalike
    async with store.read() as conn:
        body = await summary(conn, SummaryQuery(since=SINCE, until=UNTIL, service=None,
                                                priorities=()))
    automation = body["automation"]
    assert automation["resolved_by_automation"] == 2  # by_runbook, given
    assert automation["share_of_resolutions"] == pytest.approx(2 / 5)
    assert automation["runs"] == {
        "pending_approval": 1, "queued": 0, "running": 0, "succeeded": 2, "failed": 1,
        "denied": 1, "expired": 1, "interrupted": 0, "skipped": 1}

    async with store.read() as conn:
        empty = await summary(conn, SummaryQuery(since=UNTIL + timedelta(days=30),
                                                 until=UNTIL + timedelta(days=37),
                                                 service=None, priorities=()))
    assert empty["automation"]["resolved_by_automation"] == 0
    assert empty["automation"]["share_of_resolutions"] is None
    assert set(empty["automation"]["runs"].values()) == {0}


# -- check-config and the example catalog ----------------------------------------------


def test_check_config_reports_runbook_problems_with_their_path(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "runbooks.yaml"
    bad.write_text(yaml.safe_dump({"runbooks": [
        {"name": "broken", "match": {"alerts": ['job=~"("']},
         "steps": [{"name": "a", "type": "shell", "cmd": "rm -rf /"}]}]}))
    templated = tmp_path / "more-runbooks.yaml"
    templated.write_text(yaml.safe_dump({"runbooks": [
        {"name": "templated", "match": {},
         "steps": [{"name": "a", "type": "command", "argv": ["/bin/echo", "{{ alert.x "]},
                   {"name": "b", "type": "notify", "message": "{{ secrets.token }}"}]}]}))
    config = tmp_path / "incidentd.yaml"
    config.write_text(yaml.safe_dump({"runbooks": {"files": ["runbooks.yaml",
                                                            "more-runbooks.yaml"]}}))
    assert main(["check-config", str(config)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"{bad}: runbooks.0.match.alerts: bad regular expression"), err
    assert err[1] == (f"{bad}: runbooks.0.steps.0: unknown step type 'shell' (use http, "
                      "command, python, wait_for_resolution, notify)")
    assert err[2].startswith(f"{templated}: runbooks.0.steps.0.argv.1: template syntax error")
    assert err[3].startswith(f"{templated}: runbooks.0.steps.1.message: unknown variable "
                             "secrets")
    assert len(err) == 4

    good = tmp_path / "ok.yaml"
    good.write_text(yaml.safe_dump({"runbooks": {"files": [str(EXAMPLE_CATALOG)]}}))
    assert main(["check-config", str(good)]) == 0
    assert capsys.readouterr().out == "OK\n"


def test_example_catalog_loads_all_in_dry_run() -> None:
    catalog = read_catalog([EXAMPLE_CATALOG])
    runbooks = catalog.runbooks
    assert set(runbooks) == {"restart-systemd-unit", "clear-tmp-on-full-disk",
                             "scale-deployment"}
    assert all(rb.dry_run for rb in runbooks.values())
    assert all(any(s.type == "wait_for_resolution" for s in rb.steps)
               for rb in runbooks.values())
    assert [rb.name for rb in runbooks.values() if rb.approval == "required"] == [
        "scale-deployment"]
    assert {runbooks["restart-systemd-unit"].steps[0].type,
            runbooks["scale-deployment"].steps[0].type} == {"http"}
    find = runbooks["clear-tmp-on-full-disk"].steps[0]
    assert find.type == "command" and find.argv[0] == "/usr/bin/find"


def test_example_templates_render_alert_text_as_data() -> None:
    """The example's parameters and URLs with hostile label values: still one value each,
    and URL-encoded where they go into a path."""
    runbooks = read_catalog([EXAMPLE_CATALOG]).runbooks
    context: dict[str, Any] = {
        "alert": {"labels": {"unit": "a b/../x;rm -rf /.service", "mountpoint": "/var/tmp",
                             "namespace": "shop", "deployment": "api?x=1"},
                  "summary": "unit failed"},
        "incident": {"id": 7, "key": "INC-000007"},
        "ci": {"id": "app-01.prod.example.com", "name": "app-01"},
        "run": {"id": 1},
    }
    restart = runbooks["restart-systemd-unit"]
    context["params"] = {k: render(v, context, path=k) for k, v in restart.params.items()}
    assert context["params"]["unit"] == "a b/../x;rm -rf /.service"
    url = render(restart.steps[0].url, context, path="url")  # type: ignore[union-attr]
    assert url == ("http://app-01.prod.example.com:9110/units/"
                   "a%20b%2F..%2Fx%3Brm%20-rf%20%2F.service/restart")

    clear = runbooks["clear-tmp-on-full-disk"]
    assert render(clear.params["dir"], context, path="dir") == "/var/tmp"
    context["alert"]["labels"]["mountpoint"] = "/; rm -rf /"
    assert render(clear.params["dir"], context, path="dir") == "/tmp"

    scale = runbooks["scale-deployment"]
    context["params"] = {k: render(v, context, path=k) for k, v in scale.params.items()}
    url = render(scale.steps[0].url, context, path="url")  # type: ignore[union-attr]
    assert url.endswith("/namespaces/shop/deployments/api%3Fx%3D1/scale")


def test_openapi_paths_cover_every_route(tmp_path: Path) -> None:
    """What the lead merges into the OpenAPI document names every route of this module."""
    from daemon.api.runbooks import OPENAPI_MODELS, openapi_paths

    catalog = CatalogHolder(read_catalog([write_catalog(tmp_path)]))
    routes = RunbookRoutes(store=None, clock=FakeClock(), catalog=catalog,  # type: ignore[arg-type]
                           triggers=None, executor_wake=None)  # type: ignore[arg-type]
    paths = openapi_paths({"description": "Error"})
    served = {(r.method.lower(), r.path) for r in routes.routes()
              if isinstance(r, web.RouteDef)}
    assert served == {(m, p) for p, ops in paths.items() for m in ops}
    refs = {op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/")[-1]
            for ops in paths.values() for op in ops.values() if "requestBody" in op}
    assert refs == set(OPENAPI_MODELS)
