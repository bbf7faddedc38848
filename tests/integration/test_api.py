"""The HTTP API in process, on a real store: status codes, JSON errors, auth."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from daemon import app as daemon_app
from daemon.config import Overrides, load_config
from tests.conftest import fixture_bytes, reset

EXAMPLE = Path(__file__).parents[2] / "config" / "incidentd.example.yaml"
ADMIN = {"Authorization": "Bearer admin-token"}
AM = {"Authorization": "Bearer am-token"}


@pytest.fixture
async def client(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[TestClient]:
    monkeypatch.setenv("INCIDENTD_API_TOKEN", "admin-token")
    monkeypatch.setenv("INCIDENTD_ALERTMANAGER_TOKEN", "am-token")
    env = {"INCIDENTD_SERVER_MAX_BODY_BYTES": "4096"}
    config = load_config(EXAMPLE, environ=env, overrides=Overrides(database_url=database_url))
    await reset(database_url)
    components = await daemon_app.start(config)
    async with TestClient(TestServer(components.app)) as c:
        yield c
    await daemon_app.stop(components)


async def post_alerts(client: TestClient, name: str) -> None:
    resp = await client.post("/api/v1/alerts/alertmanager", data=fixture_bytes(name), headers=AM)
    assert resp.status == 200, await resp.text()


async def test_alertmanager_round_trip_and_manual_actions(client: TestClient) -> None:
    await post_alerts(client, "prometheus_firing.json")
    resp = await client.get("/api/v1/incidents?status=open", headers=ADMIN)
    body = await resp.json()
    [inc] = body["items"]
    assert body["next_cursor"] is None
    assert (inc["key"], inc["status"], inc["severity"]) == ("INC-000001", "triggered", "critical")
    assert inc["alerts"][0]["fingerprint"] == "5362e3d39617e665"
    assert inc["alerts"][0]["role"] == "unbound"

    resp = await client.post(f"/api/v1/incidents/{inc['key']}/acknowledge",
                             json={"actor": "alice", "note": "looking"}, headers=ADMIN)
    assert resp.status == 200
    assert (await resp.json())["status"] == "acknowledged"

    # a second acknowledgement is harmless and says who was first
    resp = await client.post("/api/v1/incidents/1/acknowledge", json={"actor": "bob"},
                             headers=ADMIN)
    assert resp.status == 200
    assert (await resp.json())["already_acknowledged"]["by"] == "alice"
    resp = await client.post("/api/v1/incidents/1/hold", headers=ADMIN)
    resp = await client.post("/api/v1/incidents/1/acknowledge", headers=ADMIN)
    assert resp.status == 409
    err = (await resp.json())["error"]
    assert err["code"] == "invalid_transition"
    assert "INC-000001 is on_hold" in err["message"]
    await client.post("/api/v1/incidents/1/resume", headers=ADMIN)

    await post_alerts(client, "prometheus_resolved.json")
    resp = await client.get("/api/v1/incidents/1", headers=ADMIN)
    detail = await resp.json()
    assert detail["status"] == "resolved"
    # the example config's escalation policy notified its first level at opening
    assert [(e["kind"], e["actor"]) for e in detail["timeline"]] == [
        ("opened", "incidentd"), ("escalated", "incidentd"), ("acknowledged", "alice"),
        ("held", "api"), ("resumed", "api"), ("alert_resolved", "incidentd"),
        ("resolved", "incidentd")]

    resp = await client.get("/api/v1/alerts?status=resolved", headers=ADMIN)
    [a] = (await resp.json())["items"]
    assert a["incident_ids"] == [1]


async def test_ingest_auth_is_per_integration(client: TestClient) -> None:
    body = fixture_bytes("prometheus_firing.json")
    for headers in ({}, ADMIN, {"Authorization": "Bearer nope"}):
        resp = await client.post("/api/v1/alerts/alertmanager", data=body, headers=headers)
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await resp.json())["error"]["code"] == "unauthorized"
    resp = await client.get("/api/v1/incidents", headers=AM)
    assert resp.status == 401
    resp = await client.post("/api/v1/alerts/nosuch", data=body, headers=AM)
    assert resp.status == 404


async def test_bad_input_gets_400_with_the_field_path(client: TestClient) -> None:
    resp = await client.post("/api/v1/alerts/alertmanager", data=b"{not json", headers=AM)
    assert resp.status == 400
    assert (await resp.json())["error"]["errors"][0]["field"] == "(body)"
    payload = json.loads(fixture_bytes("prometheus_firing.json"))
    payload["alerts"][0]["startsAt"] = "yesterday"
    resp = await client.post("/api/v1/alerts/alertmanager", json=payload, headers=AM)
    assert resp.status == 400
    err = (await resp.json())["error"]
    assert err["errors"][0]["field"] == "alerts[0].startsAt"
    assert err["message"].startswith("invalid Alertmanager webhook: alerts[0].startsAt:")
    resp = await client.get("/api/v1/incidents?limit=0", headers=ADMIN)
    assert (await resp.json())["error"]["errors"] == [
        {"field": "limit", "reason": "must be a whole number from 1 to 500"}]
    resp = await client.get("/api/v1/incidents?status=burning", headers=ADMIN)
    assert resp.status == 400
    resp = await client.post("/api/v1/incidents/1/acknowledge", json={"actr": "x"}, headers=ADMIN)
    assert resp.status == 400
    assert (await resp.json())["error"]["errors"][0]["field"] == "actr"


async def test_oversized_body_gets_413(client: TestClient) -> None:
    resp = await client.post("/api/v1/alerts/alertmanager", data=b"x" * 5000, headers=AM)
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "payload_too_large"


async def test_unknown_routes_and_incidents_answer_json(client: TestClient) -> None:
    resp = await client.get("/api/v1/incidents/424242", headers=ADMIN)
    assert resp.status == 404
    assert (await resp.json())["error"]["message"] == "no incident INC-424242"
    resp = await client.get("/nowhere")
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "not_found"


async def test_pagination_with_cursor(client: TestClient) -> None:
    payload = json.loads(fixture_bytes("prometheus_firing.json"))
    for i in range(5):
        payload["alerts"][0]["fingerprint"] = f"fp{i}"
        payload["groupKey"] = f"group{i}"
        resp = await client.post("/api/v1/alerts/alertmanager", json=payload, headers=AM)
        assert resp.status == 200
    async def pages(limit: int) -> list[list[int]]:
        out: list[list[int]] = []
        cursor = ""
        while True:
            resp = await client.get(f"/api/v1/incidents?limit={limit}&cursor={cursor}",
                                    headers=ADMIN)
            body = await resp.json()
            out.append([i["id"] for i in body["items"]])
            if not body["next_cursor"]:
                return out
            cursor = body["next_cursor"]

    assert await pages(2) == [[5, 4], [3, 2], [1]]
    assert await pages(5) == [[5, 4, 3, 2, 1]]  # a full last page has no empty page after it


async def test_health_ready_and_metrics(client: TestClient) -> None:
    assert (await client.get("/healthz")).status == 200
    resp = await client.get("/readyz")
    assert (resp.status, await resp.json()) == (200, {"status": "ready"})
    await post_alerts(client, "prometheus_firing.json")
    text = await (await client.get("/metrics")).text()
    for name in ("incidentd_alerts_received_total", "incidentd_alerts_processed_total",
                 "incidentd_incidents_opened_total", "incidentd_incidents_open",
                 "incidentd_incident_time_to_acknowledge_seconds",
                 "incidentd_incident_time_to_resolve_seconds",
                 "incidentd_ingest_duration_seconds"):
        assert f"# TYPE {name} " in text, name
    assert 'incidentd_alerts_received_total{source="alertmanager",status="firing"}' in text
    assert 'incidentd_alerts_processed_total{outcome="new",source="alertmanager"}' in text


async def test_actors_incidentd_writes_itself_cannot_be_claimed(client: TestClient) -> None:
    await post_alerts(client, "prometheus_firing.json")
    for actor in ("runbook:restart", "incidentd"):
        resp = await client.post("/api/v1/incidents/1/resolve", json={"actor": actor},
                                 headers=ADMIN)
        assert resp.status == 400, actor
        [error] = (await resp.json())["error"]["errors"]
        assert error["field"] == "actor" and "reserved" in error["reason"]


async def test_read_only_tokens_read_and_cannot_change(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INCIDENTD_API_TOKEN", "admin-token")
    monkeypatch.setenv("INCIDENTD_API_READ_TOKEN", "read-token")
    monkeypatch.setenv("INCIDENTD_ALERTMANAGER_TOKEN", "am-token")
    config = load_config(EXAMPLE, environ={"INCIDENTD_API_PROTECT_METRICS": "true"},
                         overrides=Overrides(database_url=database_url))
    await reset(database_url)
    components = await daemon_app.start(config)
    try:
        async with TestClient(TestServer(components.app)) as client:
            await post_alerts(client, "prometheus_firing.json")
            reader = {"Authorization": "Bearer read-token"}
            assert (await client.get("/api/v1/incidents/1", headers=reader)).status == 200
            assert (await client.get("/metrics", headers=reader)).status == 200
            assert (await client.get("/metrics")).status == 401
            resp = await client.post("/api/v1/incidents/1/acknowledge", headers=reader)
            assert resp.status == 403
            assert "read-only" in (await resp.json())["error"]["message"]
            resp = await client.post("/api/v1/incidents/1/acknowledge", headers=ADMIN)
            assert resp.status == 200
            assert (await client.get("/api/v1/incidents", headers={
                "Authorization": "Bearer nope"})).status == 401
    finally:
        await daemon_app.stop(components)
