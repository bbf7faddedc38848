"""The ServiceNow connector against a fake Table API, on SQLite and PostgreSQL.

The fake implements the documented subset (`tests/itsm_suites.py`); every request
the connector makes is asserted field by field, with its basic-auth header. The
outbox is the real one: retries fall due when the test moves the clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

from daemon.models import incident_key
from tests.integration.connector_desk import PUBLIC, Desk, alert, desks_fixture  # noqa: F401
from tests.itsm_suites import FakeServiceNow, FakeTool, basic, running

AUTH = basic("incidentd.integration", "sn-password")
INBOUND = basic("servicenow.rule", "rule-password")


def servicenow(url: str, **extra: Any) -> dict[str, Any]:
    return {"name": "snow", "type": "servicenow", "url": url,
            "auth": {"basic": {"username": "incidentd.integration",
                               "password": {"value": "sn-password"}}},
            "inbound": {"basic": [{"username": "servicenow.rule",
                                   "password": {"value": "rule-password"}}],
                        "hmac": {"secrets": [{"value": "sn-hmac-secret"}]},
                        "ignore_users": ["incidentd.integration"]},
            **extra}


def rule_body(record: dict[str, Any], **fields: Any) -> bytes:
    """What the documented business rule posts."""
    return json.dumps({"sys_id": record["sys_id"], "number": record["number"],
                       "correlation_id": record["correlation_id"], "sys_mod_count": "3",
                       **fields}).encode()


async def test_ticket_follows_the_incident_field_by_field(desks: Callable[..., Desk]) -> None:
    sn = FakeServiceNow(authorization=AUTH)
    async with running(sn):
        ci = sn.add("cmdb_ci", name="Orders DB")
        group = sn.add("sys_user_group", name="dba")
        sn.add("cmdb_ci", name="Another DB")
        desk = desks(connectors=[servicenow(sn.url)])
        inc = await desk.open(alert("orders-db-down"))
        key = incident_key(inc)
        assert await desk.drain() == 1

        # find by correlation id first, the two CMDB lookups, then the create
        assert [(s.method, s.path) for s in sn.seen] == [
            ("GET", "/api/now/table/incident"), ("GET", "/api/now/table/cmdb_ci"),
            ("GET", "/api/now/table/sys_user_group"), ("POST", "/api/now/table/incident")]
        find, ci_lookup, group_lookup, create = sn.seen
        assert find.query == {"sysparm_query": f"correlation_id={key}^ORDERBYsys_created_on",
                              "sysparm_fields": "sys_id,number", "sysparm_limit": "1"}
        assert ci_lookup.query == {"sysparm_query": "name=Orders DB", "sysparm_fields": "sys_id",
                                   "sysparm_limit": "1"}
        assert group_lookup.query == {"sysparm_query": "name=dba", "sysparm_fields": "sys_id",
                                      "sysparm_limit": "1"}
        assert all(s.headers["Authorization"] == AUTH for s in sn.seen)
        assert create.headers["Content-Type"] == "application/json"
        assert create.headers["User-Agent"].startswith("incidentd/")
        body = create.json()
        assert body == {
            "short_description": f"[{key}] orders-db-down firing",
            "description": body["description"],
            "correlation_id": key, "correlation_display": "incidentd",
            "impact": "1", "urgency": "1",  # P1
            "cmdb_ci": ci, "assignment_group": group,
        }
        assert f"{PUBLIC}/api/v1/incidents/{inc}" in body["description"]
        assert "Root-cause CI: db-1" in body["description"]
        [record] = sn.incidents
        detail = await desk.incident(inc)
        assert detail["priority"] == "P1"
        assert detail["external_tickets"] == [{
            "connector": "snow", "id": record["sys_id"], "key": record["number"],
            "url": f"{sn.url}/nav_to.do?uri=incident.do?sys_id={record['sys_id']}"}]
        listed = await desk.get("/api/v1/incidents")
        assert listed["items"][0]["external_tickets"] == detail["external_tickets"]

        # acknowledge → state 2 with a work note; priority → impact/urgency; resolve → 6
        sn.seen.clear()
        await desk.move(inc, "acknowledge", actor="ann")
        await desk.priority(inc, "P3")
        await desk.move(inc, "resolve", actor="bob")
        assert await desk.drain() == 3
        patches = sn.requests("PATCH")
        assert [s.path for s in sn.seen] == [f"/api/now/table/incident/{record['sys_id']}"] * 3
        assert [p.json() for p in patches] == [
            {"state": "2", "work_notes": "[incidentd] Acknowledged in incidentd (by ann)"},
            {"impact": "2", "urgency": "2", "work_notes": "[incidentd] Priority changed from "
                                                          "P1 to P3 (by ann): business impact"},
            {"state": "6", "close_code": "Solution provided",
             "close_notes": "Resolved in incidentd: Resolved in incidentd (by bob)",
             "work_notes": "[incidentd] Resolved in incidentd (by bob)"},
        ]
        assert record["state"] == "6"
        assert len(sn.incidents) == 1


async def test_429_and_500_are_retried_in_order_and_400_is_dead(
        desks: Callable[..., Desk]) -> None:
    sn = FakeServiceNow(authorization=AUTH)
    async with running(sn):
        desk = desks(connectors=[servicenow(sn.url)])
        sn.fail("POST", 429, headers={"Retry-After": "30"})
        sn.fail("POST", 500)
        inc = await desk.open(alert("checkout-5xx"))
        await desk.move(inc, "acknowledge")  # queued behind the create
        assert await desk.drain() == 1  # the create, refused with 429
        [create, ack] = await desk.pending("snow")
        assert (create.attempts, create.last_status) == (1, 429)
        assert "answered 429" in (create.last_error or "")
        assert ack.attempts == 0  # not tried: the incident's earlier event is pending
        assert create.next_attempt_at is not None
        assert (create.next_attempt_at - desk.clock.now()).total_seconds() >= 30
        assert not sn.requests("PATCH")

        assert await desk.wait_due() >= 30
        assert await desk.drain() == 1  # 500 this time
        [create, ack] = await desk.pending("snow")
        assert (create.attempts, create.last_status, ack.attempts) == (2, 500, 0)

        await desk.wait_due()
        assert await desk.drain() == 2  # created, then the acknowledgement
        assert not await desk.pending()
        assert [(s.method, s.status) for s in sn.seen if s.path.endswith("incident")
                or "/incident/" in s.path] == [
            ("GET", 200), ("POST", 429), ("GET", 200), ("POST", 500), ("GET", 200),
            ("POST", 201), ("PATCH", 200)]
        assert len(sn.incidents) == 1 and sn.incidents[0]["state"] == "2"

        # a refusal (400) is not retried: dead, and visible through the API
        sn.fail("PATCH", 400, body='{"error": {"message": "Invalid state"}}')
        await desk.move(inc, "resolve")
        assert await desk.drain() == 1
        dead = await desk.get("/api/v1/notifications?state=dead")
        [row] = dead["items"]
        assert (row["target"], row["event_type"], row["last_status"]) == (
            "snow", "incident.resolved", 400)
        assert "Invalid state" in row["last_error"]
        assert "sn-password" not in json.dumps(dead)


async def test_a_create_whose_answer_is_lost_is_found_not_made_again(
        desks: Callable[..., Desk]) -> None:
    sn = FakeServiceNow(authorization=AUTH)
    async with running(sn):
        retry = {"max_attempts": 5, "initial_seconds": 1, "max_seconds": 5,
                 "timeout_seconds": 1}
        desk = desks(connectors=[servicenow(sn.url)], retry=retry)
        sn.hold_creates()  # the ticket is made, the answer never comes in time
        inc = await desk.open(alert("payments-timeouts"))
        assert await desk.drain() == 1
        assert sn.held.is_set() and len(sn.incidents) == 1
        [row] = await desk.pending("snow")
        assert row.attempts == 1
        assert "within 1s" in (row.last_error or "") or "timed out" in (row.last_error or "")
        sn.release()
        await desk.wait_due()
        assert await desk.drain() == 1
        assert len(sn.incidents) == 1  # found by correlation id, not created twice
        assert len(sn.requests("POST")) == 1
        [record] = sn.incidents
        assert (await desk.incident(inc))["external_tickets"][0]["id"] == record["sys_id"]


async def test_inbound_updates_move_the_incident_and_are_not_echoed(
        desks: Callable[..., Desk]) -> None:
    sn = FakeServiceNow(authorization=AUTH)
    tool = FakeTool()
    async with running(sn, tool):
        desk = desks(connectors=[servicenow(sn.url)],
                     targets=[{"name": "ops", "type": "webhook", "url": f"{tool.url}/tickets"}])
        inc = await desk.open(alert("disk-full"))
        assert await desk.drain() == 2
        [record] = sn.incidents
        sn.seen.clear()

        # re-assigned in ServiceNow, with a work note: two timeline notes, no move
        body = rule_body(record, assigned_to="Beth Anglin", assigned_to_changed=True,
                         assignment_group="Database", work_note="looking at it",
                         updated_by="beth.anglin")
        status, answer = await desk.post_update("snow", body, {"Authorization": INBOUND})
        assert status == 200, answer
        assert answer == {"incident": incident_key(inc), "results": [
            {"action": "note", "outcome": "applied"}, {"action": "note", "outcome": "applied"}]}
        # the same request again (ServiceNow retries): nothing recorded twice
        status, again = await desk.post_update("snow", body, {"Authorization": INBOUND})
        assert status == 200 and [r["outcome"] for r in again["results"]] == [
            "unchanged", "unchanged"]
        notes = [e for e in (await desk.incident(inc))["timeline"] if e["kind"] == "note"]
        assert [(n["actor"], n["detail"]["note"], n["detail"]["origin"]) for n in notes] == [
            ("snow:beth.anglin", "Assigned to Beth Anglin / Database in ServiceNow", "snow"),
            ("snow:beth.anglin", "looking at it", "snow")]

        # resolved in ServiceNow (state 6), signed with the HMAC the rule computes (base64)
        body = rule_body(record, state="6", state_changed=True, close_notes="replaced disk",
                         updated_by="beth.anglin")
        mac = base64.b64encode(hmac.new(b"sn-hmac-secret", body, hashlib.sha256).digest())
        status, answer = await desk.post_update("snow", body,
                                                {"X-Incidentd-Signature": mac.decode()})
        assert status == 200, answer
        assert answer["results"] == [{"action": "resolve", "outcome": "applied",
                                      "status": "resolved"}]
        detail = await desk.incident(inc)
        assert detail["status"] == "resolved"
        resolved = [e for e in detail["timeline"] if e["kind"] == "resolved"]
        assert resolved[-1]["actor"] == "snow:beth.anglin"
        assert resolved[-1]["detail"] == {"note": "replaced disk", "origin": "snow"}

        # the other target hears of it; ServiceNow does not get its own change back
        assert await desk.drain() == 1
        assert [e["event"]["event_type"] for e in tool.envelopes()][-1] == "incident.resolved"
        assert not sn.seen
        assert [r.event_type for r in await desk.rows("snow")] == ["incident.triggered"]

        # a replay of the resolution changes nothing
        status, again = await desk.post_update("snow", body, {"Authorization": INBOUND})
        assert status == 200 and again["results"][0]["outcome"] == "unchanged"

        # the integration user's own updates are ignored (our change coming back)
        own = rule_body(record, state="2", state_changed=True,
                        updated_by="incidentd.integration")
        status, answer = await desk.post_update("snow", own, {"Authorization": INBOUND})
        assert status == 200 and answer["results"] == []


async def test_inbound_refusals(desks: Callable[..., Desk]) -> None:
    sn = FakeServiceNow(authorization=AUTH)
    async with running(sn):
        desk = desks(connectors=[servicenow(sn.url)])
        inc = await desk.open(alert("dns-down"))
        assert await desk.drain() == 1
        [record] = sn.incidents
        good = rule_body(record, state="2", state_changed=True, updated_by="ann")

        status, answer = await desk.post_update("snow", good, {})
        assert status == 401 and answer["error"]["code"] == "unauthorized"
        status, answer = await desk.post_update("snow", good,
                                                {"Authorization": basic("x", "y")})
        assert status == 401
        status, answer = await desk.post_update(
            "snow", good, {"X-Incidentd-Signature": base64.b64encode(b"forged").decode()})
        assert status == 401
        status, answer = await desk.post_update("nosuch", good, {"Authorization": INBOUND})
        assert status == 404

        unknown = json.dumps({"sys_id": "0" * 32, "number": "INC9999999",
                              "state": "6", "state_changed": True}).encode()
        status, answer = await desk.post_update("snow", unknown, {"Authorization": INBOUND})
        assert status == 404 and "INC9999999" in answer["error"]["message"]

        status, answer = await desk.post_update("snow", b'{"number": "x"}',
                                                {"Authorization": INBOUND})
        assert status == 400
        assert answer["error"]["errors"][0]["field"] == "sys_id"
        status, answer = await desk.post_update("snow", b"not json",
                                                {"Authorization": INBOUND})
        assert status == 400

        # acknowledged from ServiceNow (state 2)
        status, answer = await desk.post_update("snow", good, {"Authorization": INBOUND})
        assert status == 200 and answer["results"][0]["outcome"] == "applied"
        assert (await desk.incident(inc))["status"] == "acknowledged"


async def test_lookups_are_cached_and_unmatched_cis_are_left_out(
        desks: Callable[..., Desk]) -> None:
    sn = FakeServiceNow(authorization=AUTH)
    async with running(sn):
        sn.add("cmdb_ci", name="Orders DB")
        desk = desks(connectors=[servicenow(sn.url)])
        first = await desk.open(alert("a-1"))
        await desk.open(alert("b-2", ci=None))  # no CI: no lookups, no cmdb_ci
        await desk.drain()
        await desk.move(first, "resolve")  # so the next alert on db-1 opens another
        await desk.open(alert("c-3"))
        await desk.drain()
        assert len(sn.requests("GET", "/cmdb_ci")) == 1  # cached after the first
        assert len(sn.requests("GET", "/sys_user_group")) == 1  # a miss, also remembered
        creates = sorted((s.json() for s in sn.requests("POST")),
                         key=lambda c: c["correlation_id"])
        assert [(c["correlation_id"], "cmdb_ci" in c, "assignment_group" in c)
                for c in creates] == [("INC-000001", True, False),
                                      ("INC-000002", False, False),
                                      ("INC-000003", True, False)]
