"""The console's incident list and its live parts, in process on a real store: filters,
keyset pages, the rows fragment, SLA countdowns, and the event stream telling of an
incident opened through the real receiver route."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from daemon import app as daemon_app
from daemon.config import Overrides, load_config
from daemon.web import incidents as incident_pages
from tests.conftest import reset
from tests.integration.test_console_auth import ADMIN, Signed, sign_in

Client = TestClient  # type: ignore[type-arg]
AM = {"Authorization": "Bearer am-token"}
CMDB = {"cis": [
    {"id": "svc-a", "name": "Alpha shop", "type": "service", "criticality": 1},
    {"id": "svc-b", "name": "Beta blog", "type": "service", "criticality": 4},
    {"id": "api-a", "name": "api-a", "type": "application", "service": "svc-a"},
    {"id": "api-b", "name": "api-b", "type": "application", "service": "svc-b"},
    {"id": "api-c", "name": "api-c", "type": "application", "service": "svc-b"},
]}


@pytest.fixture
async def client(database_url: str, tmp_path: Path) -> AsyncIterator[Client]:
    (tmp_path / "cmdb.yaml").write_text(yaml.safe_dump(CMDB))
    path = tmp_path / "incidentd.yaml"
    path.write_text(yaml.safe_dump({
        "api": {"tokens": [{"value": ADMIN}], "read_only_tokens": []},
        "console": {"session_secret": {"value": "s3cret-for-tests"}},
        "cmdb": {"files": [str(tmp_path / "cmdb.yaml")]},
        "integrations": [{"name": "alertmanager", "type": "alertmanager",
                          "auth": {"bearer_tokens": [{"value": "am-token"}]}}],
        "sla": {"policies": [{"name": "all", "priorities": ["P1", "P2", "P3", "P4", "P5"],
                              "response_seconds": 900, "resolution_seconds": 14400}]},
    }))
    config = load_config(path, environ={}, overrides=Overrides(database_url=database_url))
    await reset(database_url)
    components = await daemon_app.start(config)
    try:
        async with TestClient(TestServer(components.app)) as c:
            yield c
    finally:
        await daemon_app.stop(components)


def am_payload(name: str, ci: str, *, status: str = "firing") -> dict[str, Any]:
    alert = {"status": status, "labels": {"alertname": name, "ci": ci, "severity": "critical"},
             "annotations": {"summary": f"{name} on {ci}"},
             "startsAt": "2026-11-26T18:54:31.275Z", "endsAt": "0001-01-01T00:00:00Z",
             "generatorURL": "http://prometheus/graph", "fingerprint": f"fp-{name}"}
    return {"receiver": "webhook", "status": status, "alerts": [alert],
            "groupLabels": {"alertname": name}, "commonLabels": alert["labels"],
            "commonAnnotations": alert["annotations"], "externalURL": "http://am",
            "version": "4", "groupKey": f'{{}}:{{alertname="{name}"}}', "truncatedAlerts": 0}


async def fire(client: Client, name: str, ci: str, *, status: str = "firing") -> None:
    resp = await client.post("/api/v1/alerts/alertmanager", json=am_payload(name, ci,
                                                                             status=status),
                             headers=AM)
    assert resp.status == 200, await resp.text()


def keys(html: str) -> list[str]:
    return re.findall(r'<tr data-incident-id="\d+" data-key="(INC-\d+)"', html)


async def page(client: Client, signed: Signed, path: str, **query: str) -> str:
    resp = await client.get(path, params=query, headers=signed.headers, allow_redirects=False)
    assert resp.status == 200, await resp.text()
    return await resp.text()


async def test_the_list_filters_by_status_priority_and_service(client: Client) -> None:
    await fire(client, "AlphaDown", "api-a")
    await fire(client, "BetaDown", "api-b")
    await fire(client, "BetaDown", "api-b", status="resolved")
    signed = await sign_in(client, ADMIN)
    api = await (await client.get("/api/v1/incidents", headers=signed.headers)).json()
    by_key = {i["key"]: i for i in api["items"]}
    assert set(by_key) == {"INC-000001", "INC-000002"}
    alpha, beta = by_key["INC-000001"], by_key["INC-000002"]
    assert alpha["impacted_services"] == ["svc-a"] and beta["status"] == "resolved"

    html = await page(client, signed, "/ui/incidents")
    assert keys(html) == ["INC-000001"]  # open by default
    assert 'data-live-src="/ui/incidents/rows"' in html
    assert '<label for="f-status">Status</label>' in html
    assert '<option value="svc-a">Alpha shop (svc-a)</option>' in html
    assert '<option value="api-a"' not in html  # services only
    assert keys(await page(client, signed, "/ui/incidents", status="all")) == [
        "INC-000002", "INC-000001"]
    assert keys(await page(client, signed, "/ui/incidents", status="resolved")) == [
        "INC-000002"]
    html = await page(client, signed, "/ui/incidents", status="all", service="svc-b")
    assert keys(html) == ["INC-000002"]
    assert 'data-live-src="/ui/incidents/rows?status=all&amp;service=svc-b"' in html
    same = [k for k, i in by_key.items() if i["priority"] == alpha["priority"]]
    assert sorted(keys(await page(client, signed, "/ui/incidents", status="all",
                                  priority=alpha["priority"]))) == sorted(same)
    other = next(p for p in ("P1", "P2", "P3", "P4", "P5")
                 if p not in (alpha["priority"], beta["priority"]))
    html = await page(client, signed, "/ui/incidents", status="all", priority=other)
    assert keys(html) == [] and 'id="no-incidents"' in html

    resp = await client.get("/ui/incidents", params={"status": "bogus"},
                            headers=signed.headers)
    assert resp.status == 400
    assert "status: must be one of" in await resp.text()


async def test_rows_show_the_incident_as_the_api_does_with_an_sla_countdown(
        client: Client) -> None:
    await fire(client, "AlphaDown", "api-a")
    signed = await sign_in(client, ADMIN)
    detail = await (await client.get("/api/v1/incidents/1", headers=signed.headers)).json()
    [response] = [c for c in detail["sla"] if c["clock"] == "response"]

    resp = await client.get("/ui/incidents/rows", headers=signed.headers)
    assert resp.status == 200
    rows = await resp.text()
    assert "<html" not in rows and keys(rows) == ["INC-000001"]
    assert '<a href="/ui/incidents/1">INC-000001</a>' in rows
    assert f'<span class="badge badge-{detail["priority"]}">' in rows
    assert '<td class="status"><span class="status-triggered">triggered</span></td>' in rows
    assert f'<time class="countdown" datetime="{response["due_at"]}">' in rows
    assert f'<time class="ago" datetime="{detail["created_at"]}"' in rows
    assert '<a href="/ui/cmdb/api-a">api-a</a>' in rows and "svc-a" in rows

    # acknowledged: the response clock has stopped, the resolution clock is next
    await client.post("/api/v1/incidents/1/acknowledge", headers=signed.change())
    detail = await (await client.get("/api/v1/incidents/1", headers=signed.headers)).json()
    [resolution] = [c for c in detail["sla"] if c["clock"] == "resolution"]
    rows = await (await client.get("/ui/incidents/rows", headers=signed.headers)).text()
    assert f'resolution: <time class="countdown" datetime="{resolution["due_at"]}">' in rows


async def test_older_pages_follow_the_api_cursor(client: Client,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(incident_pages, "PAGE_SIZE", 2)
    for n, ci in enumerate(("api-a", "api-b", "api-c")):  # unrelated: three incidents
        await fire(client, f"Down{n}", ci)
    signed = await sign_in(client, ADMIN)
    html = await page(client, signed, "/ui/incidents")
    assert keys(html) == ["INC-000003", "INC-000002"]
    older = re.search(r'<a href="([^"]+)" rel="next">Older</a>', html)
    assert older is not None
    assert older.group(1).replace("&amp;", "&") == "/ui/incidents?cursor=2"
    html = await page(client, signed, "/ui/incidents", cursor="2")
    assert keys(html) == ["INC-000001"] and 'rel="next"' not in html
    assert 'data-live-src="/ui/incidents/rows?cursor=2"' in html


async def read_event(stream: aiohttp.StreamReader) -> dict[str, str]:
    """The next event's fields (comments and `retry:` skipped)."""
    while True:
        block = (await asyncio.wait_for(stream.readuntil(b"\n\n"), 30)).decode()
        fields = dict(line.split(": ", 1) for line in block.strip().splitlines()
                      if not line.startswith(":") and ": " in line)
        if "event" in fields:
            return fields


async def test_the_event_stream_tells_of_a_new_incident(client: Client) -> None:
    await fire(client, "Before", "api-b")
    signed = await sign_in(client, ADMIN)
    resp = await client.get("/ui/events", headers=signed.headers)
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    await fire(client, "AlphaDown", "api-a")  # after the stream opened: told
    event = await read_event(resp.content)
    assert event["event"] == "change"
    assert json.loads(event["data"]) == {"incident": 2, "key": "INC-000002", "kind": "opened"}
    first_id = int(event["id"])
    resp.close()

    # reconnecting with Last-Event-ID misses nothing in between
    await client.post("/api/v1/incidents/2/acknowledge", headers=signed.change())
    resp = await client.get("/ui/events", headers=signed.headers | {
        "Last-Event-ID": str(first_id)})
    seen = []
    while not seen or seen[-1]["kind"] != "acknowledged":
        event = await read_event(resp.content)
        assert int(event["id"]) > first_id
        seen.append(json.loads(event["data"]))
    assert {e["incident"] for e in seen} == {2}
    resp.close()
