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
- `/actions/{token}`: a forged token gets the 403 page.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from daemon import app as daemon_app
from daemon.config import Overrides, load_config
from tests.conftest import reset
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
FILL = {"id": "1", "name": "some-name", "integration": "alertmanager", "token": "forged.token"}
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
    components = await daemon_app.start(config)
    async with TestClient(TestServer(components.app)) as c:
        c.protect_metrics = request.param  # type: ignore[attr-defined]
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
    resp = await client.request(method, concrete(path), data=body, headers=sent)
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
            kind = "text/html" if path in LINKS else "application/json"
            if not content_type.startswith(kind):
                wrong.append(f"{method} {path}: {status} as {content_type}")
    assert not wrong, "\n".join(wrong)


def _expected_without_credentials(method: str, path: str, protect_metrics: bool) -> set[int]:
    if (method, path) in PUBLIC or (method == "HEAD" and ("GET", path) in PUBLIC):
        if path == "/metrics" and protect_metrics:
            return {401}
        return {200, 503}  # /readyz: 503 while not ready
    if path in PAGERDUTY:
        return {400}  # no routing key in `{}`: PagerDuty's 400
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
            if (method, path) in PUBLIC or method == "HEAD" or path in PAGERDUTY | LINKS:
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
        if path in OWN_CREDENTIALS or (method, path) in PUBLIC:
            continue
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
               if method != "HEAD" and path not in UNDOCUMENTED
               and method.lower() not in doc["paths"].get(path, {})]
    assert not missing, missing
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
