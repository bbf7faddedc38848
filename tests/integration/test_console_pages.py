"""The console's CMDB, changes, problems and reports pages, in process on a real store
(SQLite and PostgreSQL), signed in through the real sign-in form; data made through the
real API."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from markupsafe import escape

from daemon import app as daemon_app
from daemon.config import Overrides, load_config
from tests.conftest import reset

EXAMPLE = Path(__file__).parents[2] / "config" / "incidentd.example.yaml"
ADMIN = {"Authorization": "Bearer admin-token"}
AM = {"Authorization": "Bearer am-token"}
HOSTILE = '<script>alert("x")</script>&<b>'


@pytest.fixture
async def client(database_url: str, monkeypatch: pytest.MonkeyPatch
                 ) -> AsyncIterator[TestClient]:
    monkeypatch.setenv("INCIDENTD_API_TOKEN", "admin-token")
    monkeypatch.setenv("INCIDENTD_ALERTMANAGER_TOKEN", "am-token")
    monkeypatch.setenv("INCIDENTD_SESSION_SECRET", "s" * 40)
    config = load_config(EXAMPLE, environ={}, overrides=Overrides(database_url=database_url))
    await reset(database_url)
    components = await daemon_app.start(config)
    async with TestClient(TestServer(components.app)) as c:
        resp = await c.post("/ui/sign-in", data={"token": "admin-token"},
                            allow_redirects=False)
        assert resp.status == 303, await resp.text()
        yield c
    await daemon_app.stop(components)


async def page(client: TestClient, path: str, status: int = 200) -> str:
    resp = await client.get(path, allow_redirects=False)
    body = await resp.text()
    assert resp.status == status, body
    assert resp.content_type == "text/html"
    # the page's own nav entry is marked current, whatever its query or sub-path
    section = path.split("?")[0].split("/")[2]
    assert f'<a href="/ui/{section}" aria-current="page">' in body
    return body


def rows(body: str, attribute: str) -> list[str]:
    """The values of `attribute` on the page's table rows, in order."""
    return [html.unescape(v) for v in re.findall(rf'<tr {attribute}="([^"]*)"', body)]


def assert_escaped(body: str) -> None:
    assert HOSTILE not in body
    assert "<script>alert" not in body
    assert str(escape(HOSTILE)) in body


async def api(client: TestClient, method: str, path: str, body: Any = None,
              status: int = 200) -> Any:
    resp = await client.request(method, path, json=body, headers=ADMIN)
    text = await resp.text()
    assert resp.status == status, text
    return orjson.loads(text) if text else None


async def fire(client: TestClient, ci: str, name: str) -> None:
    payload = {
        "version": "4", "status": "firing", "receiver": "r", "groupLabels": {},
        "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
        "groupKey": "{}", "truncatedAlerts": 0,
        "alerts": [{"status": "firing", "labels": {"alertname": name, "ci": ci,
                                                   "severity": "critical"},
                    "annotations": {"summary": f"{name} on {ci}"},
                    "startsAt": datetime.now(UTC).isoformat(), "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "http://prom", "fingerprint": f"fp-{name}-{ci}"}],
    }
    resp = await client.post("/api/v1/alerts/alertmanager", json=payload, headers=AM)
    assert resp.status == 200, await resp.text()


async def test_signed_out_pages_send_to_sign_in(client: TestClient) -> None:
    client.session.cookie_jar.clear()
    for path in ("/ui/cmdb", "/ui/cmdb/pg-orders", "/ui/changes", "/ui/problems",
                 "/ui/problems/1", "/ui/reports?days=7"):
        resp = await client.get(path, allow_redirects=False)
        assert resp.status == 303, path
        assert resp.headers["Location"].startswith("/ui/sign-in?next=")


async def test_cmdb_list_search_and_filters(client: TestClient) -> None:
    body = await page(client, "/ui/cmdb")
    listed = rows(body, "data-ci-id")
    assert listed == sorted(listed)
    assert {"pg-orders", "svc-checkout", "checkout-api"} <= set(listed)
    assert '<label for="cmdb-q">Search</label>' in body
    assert 'class="table-wrap"' in body
    assert '<a href="/ui/cmdb/pg-orders">pg-orders</a>' in body

    # id, name, type and service, ignoring case
    assert rows(await page(client, "/ui/cmdb?q=ORDERS"), "data-ci-id") == ["pg-orders"]
    by_type = rows(await page(client, "/ui/cmdb?q=Database"), "data-ci-id")
    assert "pg-orders" in by_type and "checkout-api" not in by_type
    by_service = rows(await page(client, "/ui/cmdb?q=svc-catalog"), "data-ci-id")
    assert {"svc-catalog", "catalog-api", "redis-catalog"} <= set(by_service)
    assert "pg-orders" not in by_service
    # the list API's own filters, exact
    services = rows(await page(client, "/ui/cmdb?type=service"), "data-ci-id")
    assert services == ["svc-catalog", "svc-checkout"]
    assert rows(await page(client, "/ui/cmdb?service=svc-checkout&q=pg"),
                "data-ci-id") == ["pg-orders"]
    # LIKE wildcards are text, not patterns
    assert rows(await page(client, "/ui/cmdb?q=%25"), "data-ci-id") == []

    empty = await page(client, "/ui/cmdb?q=no-such-thing")
    assert 'id="no-cis"' in empty and "No CI matches this search." in empty
    assert 'value="no-such-thing"' in empty


async def test_cmdb_pages_through_many_cis(client: TestClient) -> None:
    await api(client, "POST", "/api/v1/cmdb/import?mode=merge", {"cis": [
        {"id": f"bulk-{n:03d}", "name": f"Bulk {n}", "type": "host"} for n in range(60)]})
    first = await page(client, "/ui/cmdb?q=bulk")
    assert rows(first, "data-ci-id") == [f"bulk-{n:03d}" for n in range(50)]
    match = re.search(r'<a href="([^"]+)" rel="next">', first)
    assert match is not None
    second = await page(client, html.unescape(match.group(1)))
    assert rows(second, "data-ci-id") == [f"bulk-{n:03d}" for n in range(50, 60)]
    assert 'rel="next"' not in second
    assert "First page" in second


async def test_ci_page_shows_neighbours_service_and_open_incidents(client: TestClient) -> None:
    await fire(client, "pg-orders", "PgDown")
    [incident] = (await api(client, "GET", "/api/v1/incidents"))["items"]
    assert incident["root_cause_ci"] == "pg-orders"

    body = await page(client, "/ui/cmdb/pg-orders")
    assert "<h1>" in body and "pg-orders" in body
    upstream = body.split('id="upstream"')[1].split("</section>")[0]
    downstream = body.split('id="downstream"')[1].split("</section>")[0]
    assert 'href="/ui/cmdb/db-01.prod.example.com"' in upstream
    assert 'href="/ui/cmdb/checkout-api"' in downstream
    # checkout-api, and what depends on it: svc-checkout
    assert re.search(r"1 directly; 2 in all", downstream), downstream
    assert 'id="ci-service"><a href="/ui/cmdb/svc-checkout">' in body
    incidents = body.split('id="ci-incidents"')[1]
    assert f'<a href="/ui/incidents/{incident["id"]}">{incident["key"]}</a>' in incidents

    # not only the root cause: a CI it impacts (downstream) lists it too
    assert "checkout-api" in incident["impacted_cis"]
    impacted = (await page(client, "/ui/cmdb/checkout-api")).split('id="ci-incidents"')[1]
    assert f'<a href="/ui/incidents/{incident["id"]}">' in impacted

    quiet = await page(client, "/ui/cmdb/redis-catalog")
    assert "No open incident involves this CI." in quiet

    await api(client, "POST", f"/api/v1/incidents/{incident['id']}/resolve", {})
    assert "No open incident involves this CI." in await page(client, "/ui/cmdb/pg-orders")


async def test_ci_page_escapes_and_addresses_awkward_ids(client: TestClient) -> None:
    await api(client, "PUT", "/api/v1/cmdb/cis/host%2F1",
              {"name": HOSTILE, "type": "host", "attributes": {"note": HOSTILE, "n": 3},
               "depends_on": ["pg-orders"]}, status=201)
    listed = await page(client, "/ui/cmdb?q=host/1")
    assert rows(listed, "data-ci-id") == ["host/1"]
    assert '<a href="/ui/cmdb/host%2F1">host/1</a>' in listed
    assert_escaped(listed)

    body = await page(client, "/ui/cmdb/host%2F1")
    assert_escaped(body)
    assert "<th scope=\"row\">n</th><td>3</td>" in body
    # the new CI shows among pg-orders' dependents
    assert 'href="/ui/cmdb/host%2F1"' in await page(client, "/ui/cmdb/pg-orders")


async def test_unknown_ci_is_a_404_page(client: TestClient) -> None:
    body = await page(client, "/ui/cmdb/no-such-ci", status=404)
    assert "No such CI" in body and "no-such-ci" in body
    body = await page(client, "/ui/cmdb/%3Cscript%3E", status=404)
    assert "<script>" not in body and "&lt;script&gt;" in body


async def test_changes_and_maintenance_windows(client: TestClient) -> None:
    empty = await page(client, "/ui/changes")
    assert 'id="no-windows"' in empty and 'id="no-changes"' in empty
    now = datetime.now(UTC)

    def at(hours: float) -> str:
        return (now + timedelta(hours=hours)).isoformat()

    active = await api(client, "POST", "/api/v1/changes", {
        "summary": f"Patch {HOSTILE}", "type": "standard", "cis": ["pg-orders"],
        "planned_start": at(-1), "planned_end": at(1)}, status=201)
    coming = await api(client, "POST", "/api/v1/changes", {
        "summary": "Upgrade the cache", "type": "normal", "state": "approved",
        "cis": ["redis-catalog"], "planned_start": at(24), "planned_end": at(26)}, status=201)
    asked = await api(client, "POST", "/api/v1/changes", {
        "summary": "Not yet approved", "cis": ["lb-edge-1"],
        "planned_start": at(-1), "planned_end": at(1)}, status=201)
    over = await api(client, "POST", "/api/v1/changes", {
        "summary": "Done last week", "type": "standard",
        "planned_start": at(-200), "planned_end": at(-199)}, status=201)
    assert active["state"] == "approved" and asked["state"] == "requested"

    body = await page(client, "/ui/changes")
    assert_escaped(body)
    windows = body.split('id="windows"')[1].split("</table>")[0]
    assert rows(windows, "data-change-id") == [str(active["id"]), str(coming["id"])]
    active_row = windows.split(f'data-change-id="{active["id"]}"')[1].split("</tr>")[0]
    coming_row = windows.split(f'data-change-id="{coming["id"]}"')[1].split("</tr>")[0]
    assert "Active now" in active_row and "Active now" not in coming_row
    assert "Starts in 1 d 0 h" in coming_row or "Starts in 23 h" in coming_row
    assert '<a href="/ui/cmdb/pg-orders">pg-orders</a>' in active_row
    records = body.split('id="changes"')[1].split("</table>")[0]
    assert rows(records, "data-change-id") == [
        str(c["id"]) for c in (over, asked, coming, active)]

    requested = await page(client, "/ui/changes?state=requested")
    assert rows(requested.split('id="changes"')[1], "data-change-id") == [str(asked["id"])]
    assert "No change record is rejected." in await page(client, "/ui/changes?state=rejected")
    # an unknown state is no filter, not an error
    await page(client, "/ui/changes?state=bogus&cursor=x")


async def test_problems_list_and_page(client: TestClient) -> None:
    assert 'id="no-problems"' in await page(client, "/ui/problems")
    await fire(client, "checkout-api", "ApiDown")
    [incident] = (await api(client, "GET", "/api/v1/incidents"))["items"]
    made = await api(client, "POST", "/api/v1/problems", {
        "title": HOSTILE, "description": "Line one\n" + HOSTILE, "workaround": "Restart it",
        "root_cause_ci": "checkout-api", "known_error": True,
        "incidents": [incident["key"]]}, status=201)
    plain = await api(client, "POST", "/api/v1/problems", {"title": "Slow disks"}, status=201)

    body = await page(client, "/ui/problems")
    assert_escaped(body)
    assert rows(body, "data-problem-id") == [str(plain["id"]), str(made["id"])]
    made_row = body.split(f'data-problem-id="{made["id"]}"')[1].split("</tr>")[0]
    assert "<td>1</td>" in made_row and "Yes, with a workaround" in made_row
    plain_row = body.split(f'data-problem-id="{plain["id"]}"')[1].split("</tr>")[0]
    assert "<td>0</td>" in plain_row and "<td>No</td>" in plain_row
    assert rows(await page(client, "/ui/problems?status=open"),
                "data-problem-id") == [str(plain["id"])]

    detail = await page(client, f"/ui/problems/{made['id']}")
    assert_escaped(detail)
    assert "Restart it" in detail and "Line one" in detail
    assert 'href="/ui/cmdb/checkout-api"' in detail
    assert f'<a href="/ui/incidents/{incident["id"]}">{incident["key"]}</a>' in detail
    # by key too, as the API takes it
    assert "Restart it" in await page(client, f"/ui/problems/{made['key']}")
    bare = await page(client, f"/ui/problems/{plain['id']}")
    assert "No workaround recorded." in bare and "No incident is linked" in bare

    for unknown in ("999999", "PRB-999999", "abc", "99999999999999999999999"):
        body = await page(client, f"/ui/problems/{unknown}", status=404)
        assert "No such problem" in body


async def test_reports_page(client: TestClient) -> None:
    empty = await page(client, "/ui/reports")
    assert 'id="no-report-incidents"' in empty
    assert '<option value="30" selected>' in empty
    assert '<label for="report-days">Period</label>' in empty
    assert empty.count('role="img"') == 3

    await fire(client, "pg-orders", "PgDown")
    await fire(client, "redis-catalog", "CacheDown")
    items = (await api(client, "GET", "/api/v1/incidents"))["items"]
    assert len(items) == 2
    await api(client, "POST", f"/api/v1/incidents/{items[0]['id']}/acknowledge", {})
    summary = await api(client, "GET", "/api/v1/reports/summary")

    body = await page(client, "/ui/reports?days=7")
    assert '<option value="7" selected>' in body
    assert 'id="no-report-incidents"' not in body
    svgs = re.findall(r'<svg [^>]*role="img" aria-label="([^"]*)"', body)
    assert len(svgs) == 3
    by_priority = summary["incidents"]["by_priority"]
    for name, count in by_priority.items():
        assert f"{name} {count}" in html.unescape(svgs[0])
        assert f'<th scope="row">{name}</th><td>{count}</td>' in body
    assert "Noise reduction" in svgs[2]
    mtta = body.split('id="mtta">')[1].split("</p>")[0]
    assert mtta != "" and "no data" not in mtta
    assert "no data" in body.split('id="mttr">')[1].split("</p>")[0]
    assert "2 alerts in incidents and 0 held back by maintenance became 2 incidents" in body

    odd = await page(client, "/ui/reports?days=13")
    assert "Periods are 7, 30 or 90 days; showing 30." in odd
