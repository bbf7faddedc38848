"""No secret in the daemon's log or in any error body: every configured secret (API
tokens, integration tokens and passwords, HMAC secrets, the action-link and Slack
signing secrets, a notification target's secret, the database password in its URL),
and every wrong secret a client sends (a wrong value must not be echoed either), after
a run of requests that get most of them wrong.

The daemon runs on PostgreSQL with a password in its URL (the test server trusts any
password, so the daemon gets in and still holds one).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy.engine import make_url

from tests.conftest import reset

from .harness import (
    ADMIN_TOKEN,
    INTEGRATION_TOKEN,
    DaemonProcess,
    alertmanager_bytes,
    alertmanager_group,
    constant,
    local_server,
    poll,
)
from .secure_setup import (
    ENV,
    GENERIC_USER,
    GRAFANA_TOKEN,
    READ_TOKEN,
    SECRETS,
    basic,
    bearer,
    inbound_headers,
    secure_config,
    slack_headers,
)

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

DB_PASSWORD = "e2e-db-password-c0ffee42"
WRONG = {
    "wrong bearer": "wrong-bearer-token-5e6a19",
    "wrong basic password": "wrong-basic-password-8d2c77",
    "wrong hmac secret": "wrong-hmac-secret-41b0d3",
    "wrong routing key": "wrong-routing-key-9f3e60",
    "wrong link token": "wrong-link-token-2a7c51",
}


async def test_no_secret_in_the_log_or_any_error_body(
    daemon_factory: Callable[..., DaemonProcess], pg_database: str
) -> None:
    url = make_url(pg_database).set(password=DB_PASSWORD).render_as_string(hide_password=False)
    await reset(url)
    delivered: list[bytes] = []

    async def target(request: web.Request) -> web.Response:
        delivered.append(await request.read())
        return web.json_response({"ok": True})

    receiver = web.Application()
    receiver.router.add_post("/hook", target)
    async with local_server(receiver) as port:
        config = secure_config(webhook_url=f"http://127.0.0.1:{port}/hook")
        daemon = await daemon_factory(config=config, env=ENV, database_url=url).start()
        bodies = await _hostile_session(daemon)
        await poll("the notification of the new incident delivered",
                   lambda: constant(delivered), bool, within=30, diagnostics=daemon.describe)
        assert await daemon.stop() == 0

    secrets = {**SECRETS, **WRONG, "database password": DB_PASSWORD}
    # The harness's own start line names the URL it passed; everything else is the daemon's.
    log = "\n".join(line for line in daemon.log_path.read_text().splitlines()
                    if not line.startswith("====="))
    assert len(bodies) >= 15, bodies
    leaks = [f"{what} in the log" for what, value in secrets.items() if value in log]
    leaks += [f"{what} in the error body of {where}" for where, body in bodies
              for what, value in secrets.items() if value in body]
    assert not leaks, "\n".join(leaks)
    # It did run on the database with the password, and said where (password hidden).
    listening = [json.loads(line) for line in log.splitlines()
                 if line.startswith("{") and '"listening"' in line]
    assert listening and "***" in listening[0]["database"], listening


async def _hostile_session(daemon: DaemonProcess) -> list[tuple[str, str]]:
    """Requests with wrong (or misplaced) secrets; every error body, by request."""
    base = daemon.base_url
    bodies: list[tuple[str, str]] = []
    firing = alertmanager_bytes(alertmanager_group(group="SecretTest", fingerprints=["s1"]))
    json_type = {"Content-Type": "application/json"}

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:

        async def send(where: str, method: str, path: str, *, expect: int,
                       data: bytes | None = None, headers: dict[str, str] | None = None) -> None:
            async with s.request(method, f"{base}{path}", data=data, headers=headers) as resp:
                text = await resp.text()
                assert resp.status == expect, f"{where}: {resp.status} {text[:500]}"
                if resp.status >= 400:
                    bodies.append((where, text))

        am = "/api/v1/alerts/alertmanager"
        await send("valid alertmanager", "POST", am, expect=200, data=firing,
                   headers={**bearer(INTEGRATION_TOKEN), **json_type})
        await send("wrong bearer on ingest", "POST", am, expect=401, data=firing,
                   headers={**bearer(WRONG["wrong bearer"]), **json_type})
        await send("admin token on ingest", "POST", am, expect=401, data=firing,
                   headers={**bearer(ADMIN_TOKEN), **json_type})
        await send("grafana token on alertmanager", "POST", am, expect=401, data=firing,
                   headers={**bearer(GRAFANA_TOKEN), **json_type})
        await send("wrong basic on generic", "POST", "/api/v1/alerts", expect=401,
                   data=b'{"summary": "x"}',
                   headers={**basic(GENERIC_USER, WRONG["wrong basic password"]), **json_type})
        await send("wrong hmac on grafana", "POST", "/api/v1/alerts/grafana", expect=401,
                   data=b"{}", headers={**json_type, "X-Grafana-Alerting-Signature":
                                        WRONG["wrong hmac secret"]})
        await send("wrong routing key", "POST", "/v2/enqueue", expect=400, headers=json_type,
                   data=json.dumps({"routing_key": WRONG["wrong routing key"],
                                    "event_action": "trigger", "payload": {
                                        "summary": "x", "source": "y",
                                        "severity": "info"}}).encode())
        for path in ("/api/v1/incidents", "/api/v1/cmdb/cis", "/api/v1/notifications"):
            await send(f"wrong bearer on {path}", "GET", path, expect=401,
                       headers=bearer(WRONG["wrong bearer"]))
            await send(f"integration token on {path}", "GET", path, expect=401,
                       headers=bearer(INTEGRATION_TOKEN))
        await send("basic on the admin API", "GET", "/api/v1/incidents", expect=401,
                   headers=basic("admin", ADMIN_TOKEN))
        await send("read-only token changing", "POST", "/api/v1/changes", expect=403,
                   data=b'{"summary": "x"}', headers={**bearer(READ_TOKEN), **json_type})
        slack_body = b"payload=%7B%7D"
        await send("wrong slack signature", "POST", "/api/v1/integrations/slack/actions",
                   expect=401, data=slack_body,
                   headers=slack_headers(WRONG["wrong hmac secret"], slack_body))
        hook_body = b'{"incident": 1, "action": "acknowledge", "actor": "bot"}'
        await send("wrong inbound webhook signature", "POST", "/api/v1/webhooks/actions",
                   expect=401, data=hook_body,
                   headers=inbound_headers(WRONG["wrong hmac secret"], hook_body))
        forged = base64.urlsafe_b64encode(WRONG["wrong link token"].encode()).decode()
        await send("forged action link", "GET", f"/actions/{forged}", expect=403)
        await send("forged action link (POST)", "POST", f"/actions/{forged}", expect=403)
        # A credential too long for a header line: refused before any handler, unechoed.
        long_auth = bearer(WRONG["wrong bearer"] + "x" * 10_000)
        await send("oversized Authorization", "GET", "/api/v1/incidents", expect=431,
                   headers=long_auth)
    return bodies
