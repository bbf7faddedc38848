"""Every route the app serves, walked from its router: without credentials each answers
401, except the few that are public or carry their own proof, which refuse in their own
way; a read-only token gets 403 on every change; and every route is in the OpenAPI
document.

- public: `/healthz`, `/readyz`, `/api/v1/openapi.json`, and `/metrics` unless
  `api.protect_metrics: true` (then 401 too);
- alert ingest: 401 without *integration* credentials (an admin token is not one);
- PagerDuty's endpoints: the routing key is in the body, and an unknown one is a 400,
  as PagerDuty answers;
- Slack and the inbound webhook: 401 without a valid signature;
- `/actions/{token}`: a forged token gets the 403 page;
- the console (`/` and `/ui/*`, HTML, not in the API document): a page sends the browser
  to sign in (303), its live fragments and event stream answer 401; only the sign-in
  form and the static files are public. A session cookie, not a Bearer token, opens
  it: every page is walked with no cookie, a forged one, an expired one and a valid
  one; a read-only session gets 403 on every API change.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from daemon import app as daemon_app
from daemon.config import Overrides, load_config
from tests.conftest import FakeClock, reset
from tests.e2e.harness import ADMIN_TOKEN, INTEGRATION_TOKEN
from tests.e2e.secure_setup import ENV, READ_TOKEN, secure_config

PUBLIC = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/api/v1/openapi.json"),
          ("GET", "/metrics")}
INGEST = {"/api/v1/alerts", "/api/v1/alerts/{integration}"}
PAGERDUTY = {"/v2/enqueue", "/v2/change/enqueue"}
SIGNED = {"/api/v1/integrations/slack/actions", "/api/v1/webhooks/actions"}
LINKS = {"/actions/{token}"}
# Walked like the rest, but not part of the API document: Prometheus' and
# Alertmanager's operational endpoint name, as `/metrics` is theirs.
UNDOCUMENTED = {"/-/reload"}
OWN_CREDENTIALS = INGEST | PAGERDUTY | SIGNED | LINKS | {"/api/v1/connectors/{name}/updates"}
# The web console: HTML pages, not API operations.
CONSOLE_PUBLIC = {("GET", "/ui/sign-in"), ("POST", "/ui/sign-in"), ("POST", "/ui/sign-out"),
                  ("GET", "/ui/static/{file}"), ("GET", "/")}
CONSOLE_FRAGMENT = re.compile(r"^/ui/(events|.+/(rows|live))$")
FILL = {"id": "1", "name": "some-name", "integration": "alertmanager", "token": "forged.token",
        "file": "console.css", "ci_id": "some-ci"}
WRONG = "wrong-secret-7e1f0a"


@pytest.fixture(params=[False, True], ids=["metrics-open", "metrics-protected"])
async def client(request: pytest.FixtureRequest, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[TestClient]:
    for name, value in {**ENV, "INCIDENTD_API_TOKEN": ADMIN_TOKEN,
                        "INCIDENTD_ALERTMANAGER_TOKEN": INTEGRATION_TOKEN}.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "incidentd.yaml"
    path.write_text(yaml.safe_dump(secure_config(api={"protect_metrics": request.param})))
    url = f"sqlite+aiosqlite:///{tmp_path}/incidentd.db"
    config = load_config(path, environ={}, overrides=Overrides(database_url=url))
    await reset(url)
    clock = FakeClock(datetime.now(UTC))
    components = await daemon_app.start(config, clock=clock)
    async with TestClient(TestServer(components.app)) as c:
        c.protect_metrics = request.param  # type: ignore[attr-defined]
        c.components = components  # type: ignore[attr-defined]
        c.clock = clock  # type: ignore[attr-defined]
        yield c
    await daemon_app.stop(components)


def served(client: TestClient) -> list[tuple[str, str]]:
    routes = []
    for route in client.server.app.router.routes():
        path = route.resource.canonical if route.resource else ""
        if path:
            routes.append((route.method, path))
    assert len(routes) > 40, routes
    return sorted(set(routes))


def concrete(path: str) -> str:
    for name, value in FILL.items():
        path = path.replace(f"{{{name}}}", value)
    return path


async def call(client: TestClient, method: str, path: str,
               headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    body: bytes | None = None
    sent = dict(headers or {})
    if method in ("POST", "PUT", "PATCH"):
        body = b"payload=%7B%7D" if path in SIGNED and "slack" in path else b"{}"
        sent.setdefault("Content-Type", "application/x-www-form-urlencoded"
                        if b"payload" in body else "application/json")
    resp = await client.request(method, concrete(path), data=body, headers=sent,
                                allow_redirects=False)
    return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


async def test_without_credentials_every_route_refuses(client: TestClient) -> None:
    protect_metrics: bool = client.protect_metrics  # type: ignore[attr-defined]
    wrong: list[str] = []
    for method, path in served(client):
        status, content_type, text = await call(client, method, path)
        expected = _expected_without_credentials(method, path, protect_metrics)
        if status not in expected:
            wrong.append(f"{method} {path}: {status}, expected {sorted(expected)}: {text[:200]}")
        elif status in (400, 401, 403) and method != "HEAD":
            kind = ("text/html" if path in LINKS or (method, path) in CONSOLE_PUBLIC
                    else "application/json")
            if not content_type.startswith(kind):
                wrong.append(f"{method} {path}: {status} as {content_type}")
    assert not wrong, "\n".join(wrong)


def console(path: str) -> bool:
    return path == "/" or path.startswith("/ui/")


def _console_without_session(method: str, path: str) -> set[int]:
    if (method, path) in CONSOLE_PUBLIC:
        return {"/": {303}, "/ui/sign-in": {200} if method == "GET" else {401},
                "/ui/sign-out": {303}}.get(path, {200})
    return {401} if CONSOLE_FRAGMENT.match(path) else {303}


def _expected_without_credentials(method: str, path: str, protect_metrics: bool) -> set[int]:
    if (method, path) in PUBLIC or (method == "HEAD" and ("GET", path) in PUBLIC):
        if path == "/metrics" and protect_metrics:
            return {401}
        return {200, 503}  # /readyz: 503 while not ready
    if path in PAGERDUTY:
        return {400}  # no routing key in `{}`: PagerDuty's 400
    if console(path):
        return _console_without_session(method, path)
    if path in LINKS:
        return {403}
    if path == "/api/v1/connectors/{name}/updates":
        return {401, 404}  # no connector of that name is configured here
    return {401}


async def test_wrong_credentials_are_refused_and_not_echoed(client: TestClient) -> None:
    wrong: list[str] = []
    for headers in ({"Authorization": f"Bearer {WRONG}"},
                    {"Authorization": "Basic " + "d3Jvbmc6" + "c2VjcmV0LTdlMWYwYQ=="},
                    {"X-Slack-Signature": f"v0={WRONG}", "X-Slack-Request-Timestamp": "1",
                     "X-Incidentd-Signature": f"v1={WRONG}"}):
        for method, path in served(client):
            if ((method, path) in PUBLIC or method == "HEAD" or path in PAGERDUTY | LINKS
                    or console(path)):  # walked with cookies below
                continue
            status, _, text = await call(client, method, path, headers)
            if status not in (401, 404) or (status == 404
                                            and path != "/api/v1/connectors/{name}/updates"):
                wrong.append(f"{method} {path} with {list(headers)}: {status} {text[:200]}")
            if WRONG in text or "c2VjcmV0LTdlMWYwYQ" in text:
                wrong.append(f"{method} {path} echoed the wrong credential: {text[:300]}")
    assert not wrong, "\n".join(wrong)


async def test_a_read_only_token_reads_and_changes_nothing(client: TestClient) -> None:
    read_only = {"Authorization": f"Bearer {READ_TOKEN}"}
    wrong: list[str] = []
    for method, path in served(client):
        if path in OWN_CREDENTIALS or (method, path) in PUBLIC or console(path):
            continue  # the console takes sessions, not tokens: walked below
        status, _, text = await call(client, method, path, read_only)
        if method in ("GET", "HEAD"):
            if status in (401, 403):
                wrong.append(f"{method} {path}: a read-only token got {status}: {text[:200]}")
        elif status != 403:
            wrong.append(f"{method} {path}: a read-only token got {status}, not 403: "
                         f"{text[:200]}")
        elif json.loads(text)["error"]["code"] != "forbidden":
            wrong.append(f"{method} {path}: {text[:200]}")
    assert not wrong, "\n".join(wrong)


async def test_every_served_route_is_in_the_openapi_document(client: TestClient) -> None:
    doc: dict[str, Any] = await (await client.get("/api/v1/openapi.json")).json()
    missing = [f"{method} {path}" for method, path in served(client)
               if method != "HEAD" and path not in UNDOCUMENTED and not console(path)
               and method.lower() not in doc["paths"].get(path, {})]
    assert not missing, missing
    assert not [p for p in doc["paths"] if console(p)], "console pages are not API operations"
    schemes = doc["components"]["securitySchemes"]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if method == "parameters":
                continue
            for requirement in op.get("security", []):
                assert set(requirement) <= set(schemes), (method, path, requirement)
            if (path.startswith("/api/v1/") and path not in OWN_CREDENTIALS
                    and ("GET", path) not in PUBLIC):
                assert op["security"], f"{method} {path} documents no credentials"
                assert "401" in op["responses"], f"{method} {path} documents no 401"


async def session_cookie(client: TestClient, token: str) -> tuple[str, str]:
    """Sign in; the cookie header to send and the page's CSRF token."""
    resp = await client.post("/ui/sign-in", data={"token": token}, allow_redirects=False)
    assert resp.status == 303, await resp.text()
    client.session.cookie_jar.clear()
    value = SimpleCookie(resp.headers["Set-Cookie"])["incidentd_session"].value
    cookie = f"incidentd_session={value}"
    page = await (await client.get("/ui/sign-in", headers={"Cookie": cookie})).text()
    return cookie, page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]


async def test_every_console_page_needs_a_valid_session(client: TestClient) -> None:
    cookie, _ = await session_cookie(client, ADMIN_TOKEN)
    forged = cookie[:-4] + ("AAAA" if not cookie.endswith("AAAA") else "BBBB")
    pages = [(m, p) for m, p in served(client)
             if console(p) and m == "GET" and (m, p) not in CONSOLE_PUBLIC]
    assert {"/ui/incidents", "/ui/incidents/rows", "/ui/events"} <= {p for _, p in pages}
    wrong: list[str] = []
    for method, path in pages:
        refused = {401} if CONSOLE_FRAGMENT.match(path) else {303}
        for name, headers in (("no cookie", {}), ("forged", {"Cookie": forged}),
                              ("a Bearer token", {"Authorization": f"Bearer {ADMIN_TOKEN}"})):
            status, _, text = await call(client, method, path, headers)
            if status not in refused:
                wrong.append(f"{method} {path} with {name}: {status} {text[:200]}")
        if path == "/ui/events":
            continue  # a stream: opened in its own test
        status, _, text = await call(client, method, path, {"Cookie": cookie})
        if status not in (200, 404):  # 404: no record `1` or `some-ci` here
            wrong.append(f"{method} {path} signed in: {status} {text[:200]}")
    # expired: the same cookie half a day later
    c: Any = client
    c.clock.advance(13 * 3600)
    for method, path in pages:
        status, _, text = await call(client, method, path, {"Cookie": cookie})
        if status not in ({401} if CONSOLE_FRAGMENT.match(path) else {303}):
            wrong.append(f"{method} {path} with an expired session: {status} {text[:200]}")
    assert not wrong, "\n".join(wrong)


async def test_a_read_only_session_changes_nothing(client: TestClient) -> None:
    cookie, csrf = await session_cookie(client, READ_TOKEN)
    session = {"Cookie": cookie, "X-CSRF-Token": csrf}
    wrong: list[str] = []
    for method, path in served(client):
        if path in OWN_CREDENTIALS or (method, path) in PUBLIC or console(path):
            continue
        status, _, text = await call(client, method, path, session)
        if method in ("GET", "HEAD"):
            if status in (401, 403):
                wrong.append(f"{method} {path}: a read-only session got {status}: {text[:200]}")
        elif status != 403 or json.loads(text)["error"]["code"] != "forbidden":
            wrong.append(f"{method} {path}: a read-only session got {status}: {text[:200]}")
    assert not wrong, "\n".join(wrong)
