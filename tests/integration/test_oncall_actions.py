"""On-call engineers act from where they are: signed links, Slack buttons, the inbound
webhook; and an acknowledgement stops escalation even when a step is due that second.

The daemon runs in-process on SQLite and PostgreSQL. Slack's `response_url` is a real
local aiohttp server. Every Slack and webhook signature is computed here with
hmac/hashlib, independently of the daemon's code.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from daemon import app as daemon_app
from daemon.api.auth import api_token_middleware
from daemon.api.oncall import OnCallRoutes
from daemon.api.responses import errors_middleware
from daemon.app import Components, api_credentials
from daemon.config import Config, Overrides, load_config
from daemon.itsm.action_links import ActionLinks
from daemon.itsm.actions import Actions
from daemon.itsm.priority import PriorityMatrix
from daemon.models import Incident
from daemon.store import incidents as incident_store
from tests.conftest import FakeClock, reset

ADMIN = {"Authorization": "Bearer admin"}
SENDER = {"Authorization": "Bearer gen"}
LINK_SECRET = "link-secret-for-tests"
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
HOOK_OLD, HOOK_NEW = "hook-secret-old", "hook-secret-new"
TTL = 3600
SLACK_PATH = "/api/v1/integrations/slack/actions"
HOOK_PATH = "/api/v1/webhooks/actions"


def write_config(tmp_path: Path, database_url: str) -> Path:
    path = tmp_path / "incidentd.yaml"
    path.write_text(yaml.safe_dump({
        "api": {"tokens": [{"value": "admin"}]},
        "integrations": [{"name": "generic", "type": "generic",
                          "auth": {"bearer_tokens": [{"value": "gen"}]}}],
        "database": {"url": database_url},
        # The timer job runs only when the test says so.
        "escalation": {"default_policy": "std", "check_interval_seconds": 3600,
                       "policies": [{"name": "std", "levels": [
                           {"targets": ["user:ann"], "timeout_seconds": 60},
                           {"targets": ["team:sre"], "timeout_seconds": 300}]}]},
        "notifications": {
            "action_links": {"secret": {"value": LINK_SECRET}, "ttl_seconds": TTL},
            "slack": {"signing_secret": {"value": SLACK_SECRET}, "max_age_seconds": 300},
            "inbound_webhook": {"secrets": [{"value": HOOK_OLD}, {"value": HOOK_NEW}],
                                "max_age_seconds": 300},
        },
    }))
    return path


class SlackStub:
    """Slack's side of `response_url`: records each message update; `hold` keeps the
    answers waiting, to show the click was answered before the update was made."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self.release = asyncio.Event()
        self.release.set()
        app = web.Application()
        app.router.add_post("/respond/{n}", self._respond)
        self.server = TestServer(app)

    async def _respond(self, request: web.Request) -> web.Response:
        self.received.put_nowait((request.match_info["n"], await request.json()))
        await self.release.wait()
        return web.Response(text="ok")

    def url(self, n: int) -> str:
        return str(self.server.make_url(f"/respond/{n}"))

    async def next(self) -> tuple[str, dict[str, Any]]:
        # Real time is the point: the update comes from a background task.
        return await asyncio.wait_for(self.received.get(), timeout=10)


@dataclass
class Env:
    client: TestClient[web.Request, web.Application]
    components: Components
    config: Config
    clock: FakeClock
    actions: Actions
    links: ActionLinks
    slack: SlackStub

    async def incident(self, incident_id: int) -> Incident:
        async with self.components.store.read() as conn:
            found = await incident_store.get_incident(conn, incident_id)
        assert found is not None
        return found

    async def escalation(self, incident_id: int) -> dict[str, Any]:
        async with self.components.store.read() as conn:
            views = await self.components.followup.escalations.views(conn, [incident_id])
        view = views[incident_id]
        assert view is not None
        return view

    async def open(self, name: str) -> int:
        """Open a fresh incident with one alert; returns its id."""
        resp = await self.client.post("/api/v1/alerts", headers=SENDER, json={
            "summary": f"{name} is down", "severity": "critical", "fingerprint": name})
        assert resp.status == 202, await resp.text()
        resp = await self.client.get("/api/v1/incidents?limit=1", headers=ADMIN)
        newest: dict[str, Any] = (await resp.json())["items"][0]
        assert newest["title"] == f"{name} is down"
        return int(newest["id"])


def unconfigured_app(env: Env) -> tuple[web.Application, OnCallRoutes]:
    """The on-call routes without a Slack signing secret or webhook secrets, behind the
    daemon's middlewares."""
    routes = OnCallRoutes(actions=env.actions, links=env.links, store=env.components.store,
                          clock=env.clock, slack_signing_secret=None, slack_max_age_seconds=300,
                          webhook_secrets=(), webhook_max_age_seconds=300)
    app = web.Application(
        middlewares=[errors_middleware, api_token_middleware(api_credentials(env.config))])
    app.add_routes(routes.routes())
    return app, routes


@pytest.fixture
def oncall(database_url: str, tmp_path: Path, clock: FakeClock
           ) -> Callable[[], AbstractAsyncContextManager[Env]]:
    path = write_config(tmp_path, database_url)

    @asynccontextmanager
    async def run() -> AsyncIterator[Env]:
        config = load_config(path, environ={}, overrides=Overrides(database_url=database_url))
        await reset(database_url)
        components = await daemon_app.start(config, clock=clock)
        actions = Actions(store=components.store, clock=clock,
                          matrix=PriorityMatrix(config.priority), followup=components.followup)
        # As a notification makes them: with the configured secret, not the daemon's object.
        links = ActionLinks(secret=LINK_SECRET, ttl_seconds=TTL,
                            public_url="http://incidentd.test", clock=clock)
        slack = SlackStub()
        try:
            async with TestClient(TestServer(components.app)) as client, slack.server:
                yield Env(client, components, config, clock, actions, links, slack)
        finally:
            await daemon_app.stop(components)  # drains the Slack follow-ups in flight

    return run


Oncall = Callable[[], AbstractAsyncContextManager[Env]]


def kinds(incident: Incident) -> list[tuple[str, str]]:
    return [(e.kind, e.actor) for e in incident.timeline]


def path_of(url: str) -> str:
    return url.removeprefix("http://incidentd.test")


# -- signed links ------------------------------------------------------------------


async def test_link_get_shows_the_page_and_changes_nothing(oncall: Oncall) -> None:
    async with oncall() as env:
        n = await env.open("checkout")
        url = path_of(env.links.url(n, "acknowledge", "ann <ops>"))
        for _ in range(2):  # a link preview, then the person
            resp = await env.client.get(url)
            page = await resp.text()
            assert resp.status == 200 and resp.content_type == "text/html"
            assert "INC-000001" in page and "checkout is down" in page
            assert "triggered" in page and 'method="post"' in page
            assert "ann &lt;ops&gt;" in page and "ann <ops>" not in page  # escaped
            assert "<script" not in page and "src=" not in page and "href=" not in page
            assert resp.headers["Cache-Control"] == "no-store"
        incident = await env.incident(n)
        assert incident.status.value == "triggered"
        assert "acknowledged" not in [k for k, _ in kinds(incident)]


async def test_link_post_acknowledges_once_as_the_person(oncall: Oncall) -> None:
    async with oncall() as env:
        n = await env.open("checkout")
        url = path_of(env.links.url(n, "acknowledge", "ann"))
        resp = await env.client.post(url)
        page = await resp.text()
        assert resp.status == 200, page
        assert "INC-000001 acknowledged" in page and "Acknowledged by <strong>ann</strong>" in page
        incident = await env.incident(n)
        assert incident.status.value == "acknowledged"
        assert ("acknowledged", "ann") in kinds(incident)
        assert next(e for e in incident.timeline if e.kind == "acknowledged").detail == {
            "note": "via signed link"}
        assert (await env.escalation(n))["state"] == "stopped"

        again = await env.client.post(url)
        assert again.status == 403 and "already used" in await again.text()
        assert again.content_type == "text/html"


async def test_second_person_link_says_who_acknowledged_first(oncall: Oncall) -> None:
    async with oncall() as env:
        n = await env.open("checkout")
        first = await env.client.post(path_of(env.links.url(n, "acknowledge", "ann")))
        assert first.status == 200
        resp = await env.client.post(path_of(env.links.url(n, "acknowledge", "bob")))
        page = await resp.text()
        assert resp.status == 200
        assert "already acknowledged" in page and "<strong>ann</strong>" in page
        assert [a for k, a in kinds(await env.incident(n)) if k == "acknowledged"] == ["ann"]


async def test_expired_and_tampered_links_are_refused(oncall: Oncall) -> None:
    async with oncall() as env:
        n = await env.open("checkout")
        token = env.links.token(n, "acknowledge", "ann")
        payload, _, signature = token.partition(".")
        claim = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        forged = base64.urlsafe_b64encode(json.dumps(
            {**claim, "a": "resolve"}).encode()).rstrip(b"=").decode()
        for bad in (f"{forged}.{signature}", f"{payload}.{signature[:-2]}AA", "garbage",
                    "x" * 5000):
            for method in ("GET", "POST"):
                resp = await env.client.request(method, f"/actions/{bad}")
                assert resp.status == 403, (bad, method)
                assert "not valid" in await resp.text()

        env.clock.advance(TTL + 1)
        for method in ("GET", "POST"):
            resp = await env.client.request(method, f"/actions/{token}")
            assert resp.status == 403 and "expired" in await resp.text()
        assert (await env.incident(n)).status.value == "triggered"


async def test_resolve_link_and_a_spent_link_that_cannot_apply(oncall: Oncall) -> None:
    async with oncall() as env:
        n = await env.open("checkout")
        resolve = path_of(env.links.url(n, "resolve", "ann"))
        ack = path_of(env.links.url(n, "acknowledge", "bob"))
        page = await (await env.client.get(resolve)).text()
        assert "Resolve INC-000001" in page
        resp = await env.client.post(resolve)
        assert resp.status == 200 and "INC-000001 resolved" in await resp.text()
        incident = await env.incident(n)
        assert incident.status.value == "resolved" and ("resolved", "ann") in kinds(incident)

        late = await env.client.post(ack)  # acknowledging a resolved incident: 409, as HTML
        page = await late.text()
        assert late.status == 409 and late.content_type == "text/html"
        assert "is resolved" in page and "Traceback" not in page


async def test_link_to_a_missing_incident_is_404(oncall: Oncall) -> None:
    async with oncall() as env:
        url = path_of(env.links.url(999, "acknowledge", "ann"))
        for method in ("GET", "POST"):
            resp = await env.client.request(method, url)
            assert resp.status == 404 and "INC-000999" in await resp.text()


async def test_the_same_link_posted_twice_at_once_acts_once(oncall: Oncall) -> None:
    async with oncall() as env:
        n = await env.open("checkout")
        url = path_of(env.links.url(n, "acknowledge", "ann"))
        answers = await asyncio.gather(*(env.client.post(url) for _ in range(4)))
        assert sorted(r.status for r in answers) == [200, 403, 403, 403]
        assert [a for k, a in kinds(await env.incident(n)) if k == "acknowledged"] == ["ann"]


# -- Slack -----------------------------------------------------------------------------

def slack_payload(env: Env, incident_id: int, action: str, *, user: str, name: str,
                  n: int = 1) -> dict[str, Any]:
    """A `block_actions` payload as Slack sends it for a button on our message."""
    return {
        "type": "block_actions", "api_app_id": "A0", "token": "legacy", "trigger_id": "1.2.3",
        "user": {"id": user, "username": name, "name": name, "team_id": "T0"},
        "team": {"id": "T0", "domain": "acme"}, "channel": {"id": "C0", "name": "ops"},
        "container": {"type": "message", "message_ts": "1.2", "channel_id": "C0"},
        "response_url": env.slack.url(n),
        "message": {"type": "message", "ts": "1.2", "text": "INC-000001 checkout is down",
                    "blocks": [
                        {"type": "header", "block_id": "h",
                         "text": {"type": "plain_text", "text": "checkout is down"}},
                        {"type": "section", "block_id": "s",
                         "text": {"type": "mrkdwn", "text": "*P1* · root cause: db-1"}},
                        {"type": "actions", "block_id": "incident-actions", "elements": [
                            {"type": "button", "action_id": "acknowledge",
                             "value": str(incident_id),
                             "text": {"type": "plain_text", "text": "Acknowledge"}},
                            {"type": "button", "action_id": "resolve",
                             "value": str(incident_id),
                             "text": {"type": "plain_text", "text": "Resolve"}},
                            {"type": "button", "action_id": "open_incident",
                             "url": "https://incidentd.example/incidents/1",
                             "text": {"type": "plain_text", "text": "Open incident"}}]}]},
        "actions": [{"type": "button", "action_id": action, "block_id": "incident-actions",
                     "value": str(incident_id), "action_ts": "1.3"}],
    }


def slack_request(payload: dict[str, Any], ts: int, secret: str = SLACK_SECRET
                  ) -> tuple[bytes, dict[str, str]]:
    body = urlencode({"payload": json.dumps(payload)}).encode()
    base = b"v0:" + str(ts).encode() + b":" + body
    signature = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return body, {"Content-Type": "application/x-www-form-urlencoded",
                  "X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": signature}


def now_ts(env: Env) -> int:
    return int(env.clock.now().timestamp())


def context_line(message: dict[str, Any]) -> str:
    contexts = [b for b in message["blocks"] if b["type"] == "context"]
    assert len(contexts) == 1, message
    text: str = contexts[0]["elements"][0]["text"]
    return text


async def test_slack_button_answers_at_once_then_acknowledges_and_updates(
        oncall: Oncall) -> None:
    async with oncall() as env:
        n = await env.open("checkout")
        env.slack.release.clear()  # Slack's side is slow: our answer must not wait for it
        body, headers = slack_request(
            slack_payload(env, n, "acknowledge", user="U123", name="ann"), now_ts(env))
        resp = await env.client.post(SLACK_PATH, data=body, headers=headers)
        assert resp.status == 200 and await resp.read() == b""
        which, message = await env.slack.next()
        env.slack.release.set()
        assert which == "1" and message["replace_original"] is True
        line = context_line(message)
        assert line.startswith("Acknowledged by <@U123> at <!date^")
        assert message["text"] == line
        kept = [b["type"] for b in message["blocks"]]
        assert kept == ["header", "section", "context", "actions"]
        assert [e["action_id"] for e in message["blocks"][3]["elements"]] == [
            "resolve", "open_incident"]
        incident = await env.incident(n)
        assert incident.status.value == "acknowledged"
        assert ("acknowledged", "slack:ann") in kinds(incident)

        # A second person presses the same (stale) button: told who was first.
        body, headers = slack_request(
            slack_payload(env, n, "acknowledge", user="U456", name="bob", n=2), now_ts(env))
        assert (await env.client.post(SLACK_PATH, data=body, headers=headers)).status == 200
        which, message = await env.slack.next()
        assert which == "2"
        line = context_line(message)
        assert "already acknowledged by slack:ann" in line and "<@U456>" in line
        assert [a for k, a in kinds(await env.incident(n)) if k == "acknowledged"] == [
            "slack:ann"]

        # Resolve from the button that stayed.
        body, headers = slack_request(
            slack_payload(env, n, "resolve", user="U123", name="ann", n=3), now_ts(env))
        assert (await env.client.post(SLACK_PATH, data=body, headers=headers)).status == 200
        _, message = await env.slack.next()
        assert context_line(message).startswith("Resolved by <@U123>")
        assert [b["type"] for b in message["blocks"]] == ["header", "section", "context",
                                                          "actions"]
        assert [e["action_id"] for e in message["blocks"][3]["elements"]] == ["open_incident"]
        assert (await env.incident(n)).status.value == "resolved"


async def test_slack_refuses_old_forged_and_replayed_requests(oncall: Oncall) -> None:
    async with oncall() as env:
        n = await env.open("checkout")
        payload = slack_payload(env, n, "acknowledge", user="U123", name="ann")
        cases = [
            slack_request(payload, now_ts(env) - 301),  # older than 5 minutes
            slack_request(payload, now_ts(env) + 301),  # from the future
            slack_request(payload, now_ts(env), secret="not-the-secret"),
        ]
        body, headers = slack_request(payload, now_ts(env))
        cases.append((body + b"&x=1", headers))  # body changed after signing
        cases.append((body, {**headers, "X-Slack-Signature": ""}))
        for body_, headers_ in cases:
            resp = await env.client.post(SLACK_PATH, data=body_, headers=headers_)
            answer = await resp.json()
            assert resp.status == 401, answer
            assert answer["error"]["code"] == "unauthorized"

        ok = await env.client.post(SLACK_PATH, data=body, headers=headers)
        assert ok.status == 200
        await env.slack.next()
        replay = await env.client.post(SLACK_PATH, data=body, headers=headers)
        assert replay.status == 401 and "replay" in (await replay.json())["error"]["message"]
        assert [a for k, a in kinds(await env.incident(n)) if k == "acknowledged"] == [
            "slack:ann"]


def signed_form(form: dict[str, str], ts: int) -> tuple[bytes, dict[str, str]]:
    body = urlencode(form).encode()
    sig = "v0=" + hmac.new(SLACK_SECRET.encode(), f"v0:{ts}:".encode() + body,
                           hashlib.sha256).hexdigest()
    return body, {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": sig,
                  "Content-Type": "application/x-www-form-urlencoded"}


async def test_slack_bad_payload_names_the_field(oncall: Oncall) -> None:
    async with oncall() as env:
        n = await env.open("checkout")
        ack = slack_payload(env, n, "acknowledge", user="U123", name="ann")
        no_value = {**ack, "actions": [{**ack["actions"][0], "value": "INC-x"}]}
        no_user = {k: v for k, v in ack.items() if k != "user"}
        for form, field in [
            ({"payload": json.dumps(no_value)}, "actions[0].value"),
            ({"payload": json.dumps(no_user)}, "user"),
            ({"payload": json.dumps({**ack, "type": "view_submission"})}, "type"),
            ({"payload": "{not json"}, "payload"),
            ({"other": "1"}, "payload"),
        ]:
            body, headers = signed_form(form, now_ts(env))
            resp = await env.client.post(SLACK_PATH, data=body, headers=headers)
            answer = await resp.json()
            assert resp.status == 400, answer
            assert answer["error"]["errors"][0]["field"] == field
        assert env.slack.received.empty()


async def test_slack_link_button_is_answered_and_changes_nothing(oncall: Oncall) -> None:
    async with oncall() as env:
        n = await env.open("checkout")
        opened = slack_payload(env, n, "open_incident", user="U123", name="ann")
        del opened["actions"][0]["value"]
        body, headers = slack_request(opened, now_ts(env))
        resp = await env.client.post(SLACK_PATH, data=body, headers=headers)
        assert resp.status == 200 and await resp.read() == b""
        await env.components.oncall.drain()  # nothing was started, so nothing is sent
        assert env.slack.received.empty()
        assert (await env.incident(n)).status.value == "triggered"


async def test_slack_button_that_cannot_apply_says_why(oncall: Oncall) -> None:
    async with oncall() as env:
        n = await env.open("checkout")
        await env.actions.move(n, "resolve", actor="ann", note=None)
        body, headers = slack_request(
            slack_payload(env, n, "acknowledge", user="U123", name="ann"), now_ts(env))
        assert (await env.client.post(SLACK_PATH, data=body, headers=headers)).status == 200
        _, message = await env.slack.next()
        line = context_line(message)
        assert line.startswith("Could not acknowledge INC-000001") and "is resolved" in line
        buttons = [e["action_id"] for b in message["blocks"] if b["type"] == "actions"
                   for e in b["elements"]]
        assert buttons == ["open_incident"]


async def test_slack_and_webhook_unconfigured_are_refused(oncall: Oncall) -> None:
    async with oncall() as env:
        app, routes = unconfigured_app(env)
        async with TestClient(TestServer(app)) as client:
            body, headers = slack_request(
                slack_payload(env, 1, "acknowledge", user="U1", name="ann"), now_ts(env))
            resp = await client.post(SLACK_PATH, data=body, headers=headers)
            assert resp.status == 401
            assert "not configured" in (await resp.json())["error"]["message"]
            raw, headers = webhook_request({"incident": 1, "action": "acknowledge",
                                            "actor": "bot"}, HOOK_NEW)
            resp = await client.post(HOOK_PATH, data=raw, headers=headers)
            assert resp.status == 401
            assert "inbound webhook not configured" in (await resp.json())["error"]["message"]
        await routes.drain()


# -- inbound webhook ---------------------------------------------------------------

def webhook_request(body: dict[str, Any], *secrets: str, ts: int | None = None
                    ) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    signed = raw if ts is None else f"{ts}.".encode() + raw
    values = ",".join("v1=" + hmac.new(s.encode(), signed, hashlib.sha256).hexdigest()
                      for s in secrets)
    headers = {"Content-Type": "application/json", "X-Incidentd-Signature": values}
    if ts is not None:
        headers["X-Incidentd-Timestamp"] = str(ts)
    return raw, headers


async def hook(env: Env, body: dict[str, Any], *secrets: str, ts: int | None = None
               ) -> tuple[int, Any]:
    raw, headers = webhook_request(body, *secrets, ts=ts)
    resp = await env.client.post(HOOK_PATH, data=raw, headers=headers)
    return resp.status, await resp.json()


async def test_webhook_acknowledges_with_the_actor(oncall: Oncall) -> None:
    async with oncall() as env:
        n = await env.open("checkout")
        status, body = await hook(env, {"incident": "INC-000001", "action": "acknowledge",
                                        "actor": "chatops:ann", "note": "on it"}, HOOK_NEW)
        assert status == 200, body
        assert body == {"incident": "INC-000001", "status": "acknowledged",
                        "already_acknowledged": None}
        incident = await env.incident(n)
        entry = next(e for e in incident.timeline if e.kind == "acknowledged")
        assert (entry.actor, entry.detail) == ("chatops:ann", {"note": "on it"})

        status, body = await hook(env, {"incident": n, "action": "acknowledge",
                                        "actor": "bob"}, HOOK_NEW)
        assert status == 200 and body["already_acknowledged"]["by"] == "chatops:ann"


async def test_webhook_signatures_and_rotation(oncall: Oncall) -> None:
    async with oncall() as env:
        n = await env.open("checkout")
        ack = {"incident": n, "action": "acknowledge", "actor": "bot"}
        for secrets in [("wrong",), ()]:
            status, body = await hook(env, ack, *secrets)
            assert status == 401, body
        raw, headers = webhook_request(ack, HOOK_NEW)
        status = (await env.client.post(HOOK_PATH, data=raw + b" ", headers=headers)).status
        assert status == 401  # body changed after signing
        assert (await env.incident(n)).status.value == "triggered"

        # During a rotation a sender signs with both; a matching one among several passes.
        status, body = await hook(env, ack, "wrong", HOOK_OLD)
        assert status == 200 and body["status"] == "acknowledged"
        status, body = await hook(env, {"incident": n, "action": "resolve", "actor": "bot"},
                                  HOOK_NEW)
        assert status == 200 and body["status"] == "resolved"


async def test_webhook_with_timestamp(oncall: Oncall) -> None:
    async with oncall() as env:
        n = await env.open("checkout")
        ack = {"incident": n, "action": "acknowledge", "actor": "bot"}
        ts = now_ts(env)
        stale, _ = await hook(env, ack, HOOK_NEW, ts=ts - 301)
        assert stale == 401
        # A timestamp header with a signature over the body alone does not pass.
        raw, headers = webhook_request(ack, HOOK_NEW)
        headers["X-Incidentd-Timestamp"] = str(ts)
        assert (await env.client.post(HOOK_PATH, data=raw, headers=headers)).status == 401

        raw, headers = webhook_request(ack, HOOK_OLD, ts=ts)
        resp = await env.client.post(HOOK_PATH, data=raw, headers=headers)
        assert resp.status == 200 and (await resp.json())["status"] == "acknowledged"
        replay = await env.client.post(HOOK_PATH, data=raw, headers=headers)
        assert replay.status == 401


async def test_webhook_errors_are_json(oncall: Oncall) -> None:
    async with oncall() as env:
        n = await env.open("checkout")
        status, body = await hook(env, {"incident": 999, "action": "acknowledge",
                                        "actor": "bot"}, HOOK_NEW)
        assert status == 404 and body["error"]["code"] == "not_found"
        status, body = await hook(env, {"incident": n, "action": "close", "actor": "bot"},
                                  HOOK_NEW)
        assert status == 400 and body["error"]["errors"][0]["field"] == "action"
        status, body = await hook(env, {"incident": "INC-x", "action": "resolve",
                                        "actor": "bot"}, HOOK_NEW)
        assert status == 400 and body["error"]["errors"][0]["field"] == "incident"
        await hook(env, {"incident": n, "action": "resolve", "actor": "bot"}, HOOK_NEW)
        status, body = await hook(env, {"incident": n, "action": "acknowledge",
                                        "actor": "bot"}, HOOK_NEW)
        assert status == 409 and body["error"]["code"] == "invalid_transition"


# -- the race ----------------------------------------------------------------------

@pytest.mark.parametrize("ack_first", [True, False], ids=["ack-first", "sweep-first"])
async def test_acknowledgement_stops_escalation_due_the_same_second(
        oncall: Oncall, ack_first: bool) -> None:
    """Both start in the same (fake) second; the one started second waits a real 0 to
    7.5 ms, so the rounds cover the moments in between the other's statements (on
    PostgreSQL an unlocked incident row let a sweep escalate past an acknowledgement
    in flight about one round in three)."""
    async with oncall() as env:
        for round_ in range(16):
            n = await env.open(f"svc-{round_}")
            assert (await env.escalation(n))["level"] == 1
            env.clock.advance(60)  # level 1's timeout runs out exactly now
            offset = round_ * 0.0005

            async def acknowledge(n: int = n, wait: float = 0 if ack_first else offset
                                  ) -> None:
                await asyncio.sleep(wait)
                await env.actions.move(n, "acknowledge", actor="ann", note=None)

            async def sweep(wait: float = offset if ack_first else 0) -> None:
                await asyncio.sleep(wait)
                await env.components.jobs.escalate_unacknowledged()

            await asyncio.gather(acknowledge(), sweep())
            incident = await env.incident(n)
            assert incident.status.value == "acknowledged"
            assert (await env.escalation(n))["state"] == "stopped"
            order = [(e.kind.value, e.detail.get("level")) for e in incident.timeline]
            acked = order.index(("acknowledged", None))
            late = [i for i, entry in enumerate(order) if entry[0] == "escalated" and i > acked]
            assert not late, f"round {round_}: escalated after the acknowledgement: {order}"
