"""Every alert route over HTTP, in process, on a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from base64 import b64encode
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from daemon import app as daemon_app
from daemon.config import Overrides, load_config
from tests.conftest import FIXTURES, fixture_bytes, reset

ADMIN = {"Authorization": "Bearer admin"}
KEY = "0123456789abcdef0123456789abcdef"

CONFIG = {
    "api": {"tokens": [{"value": "admin"}]},
    "integrations": [
        {"name": "pagerduty", "type": "pagerduty", "auth": {"routing_keys": [{"value": KEY}]},
         "defaults": {"labels": {"team": "sre"}}},
        {"name": "grafana", "type": "grafana",
         "auth": {"bearer_tokens": [{"value": "graf"}],
                  "hmac": {"secrets": [{"value": "hm"}],
                           "timestamp_header": "X-Grafana-Alerting-Timestamp"}}},
        {"name": "generic", "type": "generic", "auth": {"bearer_tokens": [{"value": "gen"}]},
         "limits": {"max_alerts": 5}, "defaults": {"service": "checkout"}},
        {"name": "scripts", "type": "generic", "auth": {"basic": [
            {"username": "cron", "password": {"value": "pw"}}]}},
    ],
}

Client = TestClient  # type: ignore[type-arg]


@pytest.fixture
async def client(database_url: str, tmp_path: Path) -> AsyncIterator[Client]:
    path = tmp_path / "incidentd.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    config = load_config(path, environ={}, overrides=Overrides(database_url=database_url))
    await reset(database_url)
    components = await daemon_app.start(config)
    async with TestClient(TestServer(components.app)) as c:
        yield c
    await daemon_app.stop(components)


def pd_event(action: str, dedup_key: str | None = "srv01/HTTP", **payload: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"routing_key": KEY, "event_action": action}
    if dedup_key:
        body["dedup_key"] = dedup_key
    if action == "trigger":
        body["payload"] = {"summary": "HTTP on srv01 down", "source": "srv01",
                           "severity": "critical", **payload}
    return body


async def incidents(client: Client) -> list[dict[str, Any]]:
    resp = await client.get("/api/v1/incidents?limit=100", headers=ADMIN)
    return list(reversed((await resp.json())["items"]))


async def alert_count(client: Client) -> int:
    resp = await client.get("/api/v1/alerts?limit=500", headers=ADMIN)
    return len((await resp.json())["items"])


async def test_pagerduty_lifecycle_as_pagerduty_answers(client: Client) -> None:
    resp = await client.post("/v2/enqueue", json=pd_event("trigger"))
    assert resp.status == 202
    assert await resp.json() == {"status": "success", "message": "Event processed",
                                 "dedup_key": "srv01/HTTP"}
    await client.post("/v2/enqueue", json=pd_event("trigger"))  # repeat: deduplicated
    [inc] = await incidents(client)
    assert (inc["status"], inc["severity"], inc["title"]) == (
        "triggered", "critical", "HTTP on srv01 down")
    assert inc["alerts"][0]["occurrences"] == 2
    assert inc["alerts"][0]["labels"] == {"source": "srv01", "team": "sre"}
    assert inc["alerts"][0]["details"] == {}

    resp = await client.post("/api/v1/alerts/pagerduty", json=pd_event("acknowledge"))
    assert resp.status == 202
    detail = await (await client.get(f"/api/v1/incidents/{inc['id']}", headers=ADMIN)).json()
    assert detail["status"] == "acknowledged"
    assert detail["timeline"][-1]["actor"] == "pagerduty"

    await client.post("/v2/enqueue", json=pd_event("resolve"))
    [inc] = await incidents(client)
    assert inc["status"] == "resolved"
    # the same dedup_key after a resolve is a new alert; within the reopen window it
    # reopens the incident
    await client.post("/v2/enqueue", json=pd_event("trigger"))
    [inc] = await incidents(client)
    assert (inc["status"], len(inc["alerts"])) == ("triggered", 2)


async def test_pagerduty_generates_a_dedup_key(client: Client) -> None:
    resp = await client.post("/v2/enqueue", json=pd_event("trigger", dedup_key=None))
    key = (await resp.json())["dedup_key"]
    assert len(key) == 32 and int(key, 16) >= 0
    [inc] = await incidents(client)
    assert inc["alerts"][0]["fingerprint"] == key


async def test_alertmanager_pagerduty_config_payloads(client: Client) -> None:
    for name in ("pagerduty_v2_trigger.json", "pagerduty_v2_resolve.json"):
        body = json.loads(fixture_bytes(name))
        body["routing_key"] = KEY
        assert (await client.post("/v2/enqueue", json=body)).status == 202
    [inc] = await incidents(client)
    assert inc["status"] == "resolved"
    assert inc["alerts"][0]["fingerprint"] == body["dedup_key"]


@pytest.mark.parametrize(("body", "status", "answer"), [
    ({**pd_event("trigger"), "routing_key": "x" * 32}, 400,
     {"status": "invalid event", "message": "Event object is invalid",
      "errors": ["Invalid routing key"]}),
    (pd_event("trigger", severity="urgent"), 400,
     {"status": "invalid event", "message": "Event object is invalid", "errors": [
         "'payload.severity' is invalid (Input should be 'critical', 'error', 'warning' or "
         "'info')"]}),
    ("not json", 400, {"status": "Unrecognized object",
                       "message": "Event object format is unrecognized",
                       "errors": ["JSON parse error"]}),
])
async def test_pagerduty_refusals_in_pagerduty_shape(
    client: Client, body: Any, status: int, answer: dict[str, Any]
) -> None:
    data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    resp = await client.post("/v2/enqueue", data=data)
    assert (resp.status, await resp.json()) == (status, answer)
    assert await alert_count(client) == 0


async def test_pagerduty_body_over_512_kb_is_413(client: Client) -> None:
    event = pd_event("trigger", custom_details={"blob": "x" * 600_000})
    resp = await client.post("/v2/enqueue", json=event)
    assert resp.status == 413
    assert (await resp.json())["status"] == "error"


async def test_change_events_are_recorded_and_listed(client: Client) -> None:
    resp = await client.post("/v2/change/enqueue", json={
        "routing_key": KEY,
        "payload": {"summary": "Deploy checkout v42", "source": "argo",
                    "timestamp": "2026-11-26T10:00:00Z", "custom_details": {"sha": "abc"}},
        "links": [{"href": "https://argo.example/app", "text": "Argo"}]})
    assert (resp.status, await resp.json()) == (
        202, {"status": "success", "message": "Change event processed"})
    resp = await client.get("/api/v1/changes", headers=ADMIN)
    [change] = (await resp.json())["items"]
    assert (change["summary"], change["source"], change["occurred_at"]) == (
        "Deploy checkout v42", "argo", "2026-11-26T10:00:00Z")
    assert change["links"] == [{"href": "https://argo.example/app", "text": "Argo"}]


async def test_grafana_with_bearer_or_signature(client: Client) -> None:
    body = (FIXTURES / "grafana" / "firing.json").read_bytes()
    resp = await client.post("/api/v1/alerts/grafana", data=body,
                             headers={"Authorization": "Bearer graf"})
    assert resp.status == 200
    [inc] = await incidents(client)
    assert [link["text"] for link in inc["alerts"][0]["links"]] == [
        "Dashboard", "Panel", "Silence"]
    assert inc["alerts"][0]["details"]["values"] == {"B": 44.23943737541908, "C": 1}
    resolved = (FIXTURES / "grafana" / "resolved.json").read_bytes()
    ts = str(int(time.time()))
    sig = hmac.new(b"hm", ts.encode() + b":" + resolved, hashlib.sha256).hexdigest()
    signed = {"X-Grafana-Alerting-Signature": sig, "X-Grafana-Alerting-Timestamp": ts}
    resp = await client.post("/api/v1/alerts/grafana", data=resolved, headers=signed)
    assert resp.status == 200, await resp.text()
    [inc] = await incidents(client)
    assert inc["status"] == "resolved"
    # the same signed request again is a replay
    resp = await client.post("/api/v1/alerts/grafana", data=resolved, headers=signed)
    assert resp.status == 401
    assert "replay" in (await resp.json())["error"]["message"]
    old = str(int(time.time()) - 3600)
    sig = hmac.new(b"hm", old.encode() + b":" + body, hashlib.sha256).hexdigest()
    resp = await client.post("/api/v1/alerts/grafana", data=body, headers={
        "X-Grafana-Alerting-Signature": sig, "X-Grafana-Alerting-Timestamp": old})
    assert resp.status == 401
    resp = await client.post("/api/v1/alerts/grafana", data=body, headers={
        "X-Grafana-Alerting-Signature": "00" * 32, "X-Grafana-Alerting-Timestamp": ts})
    assert resp.status == 401


async def test_generic_alerts_pick_their_integration_by_credentials(client: Client) -> None:
    resp = await client.post("/api/v1/alerts", json={"summary": "Backup failed"},
                             headers={"Authorization": "Bearer gen"})
    assert resp.status == 202
    [fingerprint] = (await resp.json())["fingerprints"]
    resp = await client.post("/api/v1/alerts", json=[{"summary": "Cron late", "group": "cron"}],
                             headers={"Authorization": "Basic " + b64encode(b"cron:pw").decode()})
    assert resp.status == 202
    first, second = await incidents(client)
    assert first["alerts"][0]["labels"] == {"service": "checkout"}  # integration default
    assert second["alerts"][0]["labels"] == {}
    resp = await client.post("/api/v1/alerts", json={"status": "resolved",
                                                     "fingerprint": fingerprint},
                             headers={"Authorization": "Bearer gen"})
    assert resp.status == 202
    assert [i["status"] for i in await incidents(client)] == ["resolved", "triggered"]
    for headers in ({}, {"Authorization": "Bearer admin"}, {"Authorization": "Bearer graf"}):
        resp = await client.post("/api/v1/alerts", json={"summary": "x"}, headers=headers)
        assert resp.status == 401


async def test_a_request_is_stored_whole_or_not_at_all(client: Client) -> None:
    gen = {"Authorization": "Bearer gen"}
    mixed = [{"summary": "ok 1"}, {"summary": "ok 2"}, {"summary": "bad", "severity": "loud"}]
    resp = await client.post("/api/v1/alerts", json=mixed, headers=gen)
    assert resp.status == 400
    assert (await resp.json())["error"]["errors"][0]["field"] == "[2].severity"
    resp = await client.post("/api/v1/alerts", json=[{"summary": str(i)} for i in range(6)],
                             headers=gen)
    assert resp.status == 400
    assert (await resp.json())["error"]["errors"][0]["reason"] == (
        "6 alerts in one request; at most 5")
    assert await alert_count(client) == 0


async def test_openapi_document_is_public_and_names_every_route(client: Client) -> None:
    doc = await (await client.get("/api/v1/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    assert {"/api/v1/alerts", "/v2/enqueue", "/v2/change/enqueue", "/api/v1/alerts/grafana",
            "/api/v1/alerts/alertmanager", "/api/v1/incidents"} <= set(doc["paths"])
    assert "GenericAlert" in doc["components"]["schemas"]
    # every API route the daemon serves is documented, with its method
    undocumented = []
    for route in client.server.app.router.routes():
        path = route.resource.canonical if route.resource else ""
        if (route.method == "HEAD" or not path.startswith(("/api/", "/v2/"))
                or path in {"/api/v1/alerts/{integration}", "/api/v1/openapi.json"}):
            continue
        if route.method.lower() not in doc["paths"].get(path, {}):
            undocumented.append(f"{route.method} {path}")
    assert not undocumented

