"""The console's incident page on a real store (SQLite and PostgreSQL), through the
daemon's own app: signed in with real tokens, alerts posted to the real receiver, a
change, a problem and a runbook run made through the real API.

What it shows (status, SLA, root cause and the drawing, alerts, timeline, suspected
change, known-error workaround, runbook runs with Approve/Deny), that hostile alert
and CI text stays text, that read-only sessions get disabled buttons, that the live
part follows an acknowledgement made elsewhere, and that an unknown incident is a
404 page.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from daemon import app as daemon_app
from daemon.config import Overrides, load_config
from tests.conftest import reset
from tests.e2e.harness import example_config

ADMIN_TOKEN = "page-admin-token-4d1f"
READ_TOKEN = "page-read-token-8c2a"
GENERIC_TOKEN = "page-generic-token-0b7e"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
Client = TestClient[web.Request, web.Application]
HOSTILE = "<script>alert('x')</script>"

CMDB = {"cis": [
    {"id": "svc-shop", "name": "Shop", "type": "service", "owner_group": "shop-team",
     "depends_on": ["web-01"]},
    {"id": "web-01", "name": "Web <b>front</b>", "type": "application", "service": "svc-shop",
     "owner_group": "web-team", "depends_on": ["db-01"]},
    {"id": "db-01", "name": "Orders DB", "type": "database", "owner_group": "dba-team",
     "depends_on": ["host-01"]},
    {"id": "host-01", "name": HOSTILE, "type": "host", "owner_group": "infra"},
]}

CATALOG = {"runbooks": [
    {"name": "failover-db", "description": "Fail the database over",
     "match": {"alerts": ['alertname="DbDown"']}, "approval": "required", "dry_run": True,
     "rate_limit": None,
     "steps": [{"name": "say", "type": "notify", "message": "would fail over"}]},
]}


@pytest.fixture
async def client(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                 ) -> AsyncIterator[Client]:
    for name, value in {"INCIDENTD_API_TOKEN": ADMIN_TOKEN,
                        "INCIDENTD_API_READ_TOKEN": READ_TOKEN,
                        "INCIDENTD_GENERIC_TOKEN": GENERIC_TOKEN,
                        "INCIDENTD_SESSION_SECRET": "page-session-secret-5e9c"}.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "cmdb.yaml").write_text(yaml.safe_dump(CMDB))
    (tmp_path / "runbooks.yaml").write_text(yaml.safe_dump(CATALOG))
    config = example_config()
    config["cmdb"]["files"] = [str(tmp_path / "cmdb.yaml")]
    config["runbooks"]["files"] = [str(tmp_path / "runbooks.yaml")]
    path = tmp_path / "incidentd.yaml"
    path.write_text(yaml.safe_dump(config))
    loaded = load_config(path, environ={}, overrides=Overrides(database_url=database_url))
    await reset(database_url)
    components = await daemon_app.start(loaded)
    async with TestClient(TestServer(components.app)) as c:
        yield c
    await daemon_app.stop(components)


async def sign_in(client: Client, token: str) -> None:
    resp = await client.post("/ui/sign-in", data={"token": token}, allow_redirects=False)
    assert resp.status == 303, await resp.text()


async def api(client: Client, method: str, path: str, body: Any = None,
              expect: int = 200) -> Any:
    resp = await client.request(method, path, json=body, headers=ADMIN)
    data = await resp.json()
    assert resp.status == expect, data
    return data


async def open_incident(client: Client) -> int:
    """A change on the database first (a suspect), then alerts on it and on the web tier."""
    await api(client, "POST", "/api/v1/changes", {
        "summary": "Upgrade the orders database", "cis": ["db-01"], "state": "completed",
        "type": "normal"}, expect=201)
    resp = await client.post("/api/v1/alerts", headers={
        "Authorization": f"Bearer {GENERIC_TOKEN}"}, json=[
        {"summary": f"DB down {HOSTILE}", "severity": "critical", "ci": "db-01",
         "group": "shop", "fingerprint": "fp-db-down-0001",
         "labels": {"alertname": "DbDown", "instance": "db-01"}},
        {"summary": "Web errors", "severity": "error", "ci": "web-01", "group": "shop",
         "fingerprint": "fp-web-errors-0002", "labels": {"alertname": "WebErrors"}},
    ])
    assert resp.status in (200, 202), await resp.text()
    items = (await api(client, "GET", "/api/v1/incidents?status=open"))["items"]
    assert len(items) == 1, items
    incident: dict[str, Any] = items[0]
    assert incident["root_cause_ci"] == "db-01", incident
    return int(incident["id"])


class Page(HTMLParser):
    """The page's elements with their attributes and the text inside each id'd element."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def find(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.elements
                if t == tag and all(a.get(k) == v for k, v in attrs.items())]


def buttons(html: str) -> dict[str, bool]:
    """Button name → disabled, for every button (names repeat: the last wins)."""
    found = re.findall(r"<button([^>]*)>([^<]*)</button>", html)
    return {name.strip(): "disabled" in attrs for attrs, name in found}


async def test_the_page_shows_the_incident_and_keeps_hostile_text_text(
        client: Client) -> None:
    incident_id = await open_incident(client)
    await api(client, "POST", "/api/v1/problems", {
        "title": "Orders DB keeps falling over", "incidents": [incident_id],
        "known_error": True, "workaround": "Restart the <replica> by hand"}, expect=201)
    run = await api(client, "POST", "/api/v1/runbooks/failover-db/run",
                    {"incident": incident_id, "actor": "ann"}, expect=201)
    assert run["status"] == "pending_approval"

    await sign_in(client, ADMIN_TOKEN)
    resp = await client.get(f"/ui/incidents/{incident_id}")
    html = await resp.text()
    assert resp.status == 200, html
    assert resp.content_type == "text/html"

    key = f"INC-{incident_id:06d}"
    assert re.search(rf"<h1>.*{key}.*DB down", html, re.S)
    assert '<span id="incident-status" class="status-triggered">triggered</span>' in html
    priority = (await api(client, "GET", f"/api/v1/incidents/{incident_id}"))["priority"]
    assert f'<span class="badge badge-{priority}">{priority}</span>' in html
    # SLA clocks with a ticking countdown and their state in words.
    assert 'class="countdown"' in html
    assert re.search(r'<tr data-clock="response">.*?running', html, re.S)
    # Root cause, its owner group, impacted service, the drawing with alerting marks.
    assert 'href="/ui/cmdb/db-01"' in html
    assert "dba-team" in html
    assert 'href="/ui/cmdb/svc-shop"' in html
    svg = re.search(r'<svg id="topology".*?</svg>', html, re.S)
    assert svg is not None
    drawing = ET.fromstring(svg.group(0))
    assert drawing.get("role") == "img"
    assert (drawing.get("aria-label") or "").startswith("Dependencies around db-01")
    ns = "{http://www.w3.org/2000/svg}"
    marked = {a.get("data-ci") for a in drawing.iter(f"{ns}a")
              if "alerting" in (a.get("class") or "")}
    assert marked == {"db-01", "web-01"}
    # Alerts with their roles.
    assert re.search(r"fp-db-down-0.*?root cause", html, re.S)
    assert re.search(r"fp-web-error.*?symptom", html, re.S)
    # The timeline, newest first, one readable line per entry.
    page = Page(html)
    kinds = [a["data-kind"] for a in page.find("li") if "data-kind" in a]
    assert kinds[-1] == "opened" and "runbook_pending_approval" in kinds
    assert "problem_linked" in kinds and "change_suspected" in kinds
    assert page.find("ol", id="timeline")
    assert "Opened from generic with 2 alerts" in html
    # Suspected change, problem and its known-error workaround.
    assert "Upgrade the orders database" in html and 'href="/ui/changes#change-' in html
    assert re.search(r'href="/ui/problems/\d+"', html)
    assert "Restart the &lt;replica&gt; by hand" in html
    # The waiting run with Approve and Deny posting to the API.
    assert page.find("section", id="runbook-runs")
    assert page.find("form", **{"data-api": f"/api/v1/runbook-runs/{run['id']}/approve",
                                "data-method": "POST"})
    assert page.find("form", **{"data-api": f"/api/v1/runbook-runs/{run['id']}/deny",
                                "data-method": "POST"})
    # Actions for a triggered incident, enabled for an admin session.
    assert buttons(html) | {"Sign out": False} == {
        "Sign out": False, "Acknowledge": False, "Resolve": False, "Escalate": False,
        "Set priority": False, "Approve": False, "Deny": False}
    assert page.find("select", id="priority", name="priority")
    assert page.find("form", **{"data-api": f"/api/v1/incidents/{incident_id}",
                                "data-method": "PATCH"})
    assert "Read-only session" not in html
    # Hostile text from alerts and the CMDB is escaped everywhere.
    assert "<script>" not in html
    assert "<b>front</b>" not in html
    assert "DB down &lt;script&gt;" in html
    # The key works as well as the id.
    resp = await client.get(f"/ui/incidents/{key}")
    assert resp.status == 200


async def test_read_only_sessions_see_disabled_buttons(client: Client) -> None:
    incident_id = await open_incident(client)
    await api(client, "POST", "/api/v1/runbooks/failover-db/run",
              {"incident": incident_id, "actor": "ann"}, expect=201)
    await sign_in(client, READ_TOKEN)
    html = await (await client.get(f"/ui/incidents/{incident_id}")).text()
    assert "Read-only session" in html
    found = buttons(html)
    for name in ("Acknowledge", "Resolve", "Escalate", "Set priority", "Approve", "Deny"):
        assert found.get(name) is True, (name, found)
    # And the API refuses the session's change anyway.
    csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', html)
    assert csrf is not None
    resp = await client.post(f"/api/v1/incidents/{incident_id}/acknowledge", json={},
                             headers={"X-CSRF-Token": csrf.group(1)})
    assert resp.status == 403


async def test_the_live_part_follows_an_acknowledgement_made_elsewhere(
        client: Client) -> None:
    incident_id = await open_incident(client)
    await sign_in(client, ADMIN_TOKEN)
    page = await (await client.get(f"/ui/incidents/{incident_id}")).text()
    assert (f'data-live-src="/ui/incidents/{incident_id}/live" '
            f'data-live-incident="{incident_id}"') in page

    await api(client, "POST", f"/api/v1/incidents/{incident_id}/acknowledge",
              {"actor": "bob", "note": "on it"})
    resp = await client.get(f"/ui/incidents/{incident_id}/live")
    live = await resp.text()
    assert resp.status == 200
    assert "<html" not in live  # the fragment alone
    assert '<span id="incident-status" class="status-acknowledged">acknowledged</span>' in live
    assert re.search(r'<li data-kind="acknowledged">.*?bob.*?Acknowledged; note: on it',
                     live, re.S)
    found = buttons(live)
    assert "Acknowledge" not in found  # no acknowledging twice
    assert {"Resolve", "Escalate", "Set priority"} <= set(found)

    await api(client, "POST", f"/api/v1/incidents/{incident_id}/resolve", {"actor": "bob"})
    live = await (await client.get(f"/ui/incidents/{incident_id}/live")).text()
    found = buttons(live)
    assert not {"Acknowledge", "Resolve", "Escalate"} & set(found)
    assert re.search(r'<tr data-clock="response">.*?met', live, re.S)


async def test_unknown_incidents_and_signed_out_visitors(client: Client) -> None:
    resp = await client.get("/ui/incidents/999", allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"].startswith("/ui/sign-in?next=")
    resp = await client.get("/ui/incidents/999/live")
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "unauthorized"

    await sign_in(client, ADMIN_TOKEN)
    resp = await client.get("/ui/incidents/999")
    html = await resp.text()
    assert resp.status == 404
    assert resp.content_type == "text/html"
    assert "No such incident" in html and "999" in html
    resp = await client.get("/ui/incidents/INC-000999/live")
    assert resp.status == 404
    # The list's live part is not taken for an incident id.
    resp = await client.get("/ui/incidents/rows")
    assert resp.status == 200
