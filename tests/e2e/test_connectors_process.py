"""ITSM suites kept in step by the daemon as a process: ServiceNow, Jira and a generic
tool as fake servers on loopback (`tests/itsm_suites.py`), alerts over real HTTP,
the suites' updates posted back as the suites post them, and a `kill -9` between the
suite making a ticket and the daemon storing its id."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.itsm_suites import (
    FakeJira,
    FakeServiceNow,
    FakeTool,
    basic,
    hub_signature,
    jira_webhook,
    running,
)

from .harness import (
    DaemonProcess,
    IncidentdClient,
    alertmanager_group,
    constant,
    example_config,
    poll,
)

pytestmark = pytest.mark.e2e

SN_AUTH = basic("incidentd.integration", "sn-pass")
SN_RULE = basic("sn.rule", "rule-pass")
JIRA_AUTH = basic("bot@example.com", "jira-token")
JIRA_SECRET = "e2e-jira-webhook-secret"
TOOL_SECRET = "e2e-tool-inbound-secret"


def suites_config(sn: FakeServiceNow, jira: FakeJira, tool: FakeTool) -> dict[str, Any]:
    config = example_config()
    config["notifications"]["retry"] = {"initial_seconds": 0.2, "max_seconds": 1,
                                        "timeout_seconds": 2, "max_attempts": 20}
    config["notifications"]["poll_interval_seconds"] = 0.1
    # The example's escalation ladder pages at once; the suites take the lifecycle only.
    routes = [{"events": ["incident.triggered", "incident.acknowledged", "incident.resolved",
                          "incident.reopened", "incident.priority_updated"]}]
    config["connectors"] = [
        {"name": "snow", "type": "servicenow", "url": sn.url,
         "auth": {"basic": {"username": "incidentd.integration",
                            "password": {"value": "sn-pass"}}},
         "inbound": {"basic": [{"username": "sn.rule", "password": {"value": "rule-pass"}}],
                     "ignore_users": ["incidentd.integration"]}, "routes": routes},
        {"name": "jira", "type": "jira", "url": jira.url,
         "auth": {"basic": {"username": "bot@example.com", "password": {"value": "jira-token"}}},
         "mapping": {"project": "OPS"},
         "inbound": {"hmac": {"secrets": [{"value": JIRA_SECRET}]}}, "routes": routes},
        {"name": "helpdesk", "type": "generic", "url": f"{tool.url}/tickets",
         "inbound": {"hmac": {"secrets": [{"value": TOOL_SECRET}]}}, "routes": routes},
    ]
    return config


class Api:
    """The daemon's API as the test needs it."""

    def __init__(self, client: IncidentdClient) -> None:
        self.client = client

    async def open(self, group: str) -> dict[str, Any]:
        status, text = await self.client.post_alertmanager(
            alertmanager_group(group=group, fingerprints=[uuid.uuid4().hex[:16]]))
        assert 200 <= status < 300, f"alert refused: {status} {text[:300]}"
        incidents = await poll(f"the incident of {group}", self.client.all_incidents,
                               lambda items: [i for i in items if i["title"].startswith(group)],
                               within=20, diagnostics=self.logs)
        return incidents[0]  # type: ignore[no-any-return]

    async def notifications(self, **params: str) -> list[dict[str, Any]]:
        page = await self.client._json("GET", "/api/v1/notifications",
                                       params={"limit": 200, **params},
                                       headers=self.client.admin_headers())
        return page["items"]  # type: ignore[no-any-return]

    async def update(self, connector: str, body: bytes, headers: dict[str, str]) -> Any:
        return await self.client._json(
            "POST", f"/api/v1/connectors/{connector}/updates", data=body,
            headers={"Content-Type": "application/json", **headers})

    async def tickets(self, incident_id: int, count: int) -> dict[str, dict[str, Any]]:
        found = await poll(f"{count} external tickets on incident {incident_id}",
                           lambda: self.client.incident(incident_id),
                           lambda i: len(i["external_tickets"]) == count and i,
                           within=30, diagnostics=self.logs)
        return {t["connector"]: t for t in found["external_tickets"]}

    async def status(self, incident_id: int, status: str) -> dict[str, Any]:
        return await poll(  # type: ignore[no-any-return]
            f"incident {incident_id} {status}", lambda: self.client.incident(incident_id),
            lambda i: i["status"] == status and i, within=20, diagnostics=self.logs)

    def logs(self) -> str:
        return self.client.daemon.describe(80)


def tool_signed(body: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    return raw, {"X-Incidentd-Signature":
                 "v1=" + hmac.new(TOOL_SECRET.encode(), raw, hashlib.sha256).hexdigest()}


async def test_three_suites_in_step_both_ways(
    daemon_factory: Callable[..., DaemonProcess],
    make_client: Callable[[DaemonProcess], IncidentdClient],
) -> None:
    sn, jira, tool = (FakeServiceNow(authorization=SN_AUTH), FakeJira(authorization=JIRA_AUTH),
                      FakeTool())
    async with running(sn, jira, tool):
        daemon = await daemon_factory(config=suites_config(sn, jira, tool)).start()
        api = Api(make_client(daemon))

        # ServiceNow answers 429 (Retry-After) then 500; Jira 500: retried, then made once
        sn.fail("POST", 429, headers={"Retry-After": "1"})
        sn.fail("POST", 500)
        jira.fail("POST", 500, path_part="/rest/api/3/issue")
        first = await api.open("E2EConnA")
        tickets = await api.tickets(first["id"], 3)
        [record] = sn.incidents
        assert tickets["snow"]["id"] == record["sys_id"]
        assert record["correlation_id"] == first["key"] == "INC-000001"
        assert tickets["jira"]["key"] == "OPS-1"
        assert tickets["helpdesk"]["id"] == "T-1"
        assert [s.status for s in sn.requests("POST")] == [429, 500, 201]
        assert all(s.headers["Authorization"] == SN_AUTH for s in sn.seen)
        assert [s.status for s in jira.requests("POST", "/rest/api/3/issue")] == [500, 201]
        [row] = await api.notifications(target="snow")
        assert (row["state"], row["attempts"]) == ("delivered", 3)

        # resolved in ServiceNow by a person: the incident resolves; Jira and the tool are
        # told; ServiceNow is not told of its own change
        body = json.dumps({"sys_id": record["sys_id"], "number": record["number"],
                           "correlation_id": record["correlation_id"], "state": "6",
                           "state_changed": True, "close_notes": "restarted the pod",
                           "updated_by": "beth.anglin", "sys_mod_count": "4"}).encode()
        answer = await api.update("snow", body, {"Authorization": SN_RULE})
        assert answer["results"][0]["outcome"] == "applied"
        await api.status(first["id"], "resolved")
        await poll("Jira's issue Done", lambda: constant(jira.issues["OPS-1"]["status"]),
                   lambda s: s == "Done", within=20, diagnostics=api.logs)
        await poll("the tool told of the resolution", lambda: constant(tool.envelopes()),
                   lambda es: [e for e in es if e["event"]["event_type"] == "incident.resolved"],
                   within=20, diagnostics=api.logs)
        assert [r["event_type"] for r in await api.notifications(target="snow")] == [
            "incident.triggered"]
        assert not sn.requests("PATCH")

        # Jira: moved to Done by a person → resolved; ServiceNow told, Jira not
        second = await api.open("E2EConnB")
        tickets = await api.tickets(second["id"], 3)
        issue = jira.issues[tickets["jira"]["key"]]
        hook = json.dumps(jira_webhook(issue, user={"accountId": "5b1", "displayName": "Ann"},
                                       status="Done")).encode()
        answer = await api.update("jira", hook, {"X-Hub-Signature": hub_signature(
            JIRA_SECRET, hook)})
        assert answer["results"][0]["status"] == "resolved"
        sn_second = next(r for r in sn.incidents if r["correlation_id"] == second["key"])
        await poll("ServiceNow's second ticket resolved", lambda: constant(sn_second["state"]),
                   lambda s: s == "6", within=20, diagnostics=api.logs)
        assert [r["event_type"] for r in await api.notifications(
            target="jira", incident=str(second["id"]))] == ["incident.triggered"]

        # the generic tool acknowledges; ServiceNow refuses that change (400): dead, visible
        sn.fail("PATCH", 400, body='{"error": {"message": "state is read-only"}}')
        third = await api.open("E2EConnC")
        await api.tickets(third["id"], 3)
        body, headers = tool_signed({"incident": third["key"], "action": "acknowledge",
                                     "actor": "carol"})
        answer = await api.update("helpdesk", body, headers)
        assert answer["results"][0]["status"] == "acknowledged"
        dead = await poll("the dead ServiceNow delivery",
                          lambda: api.notifications(state="dead"),
                          lambda items: items, within=20, diagnostics=api.logs)
        assert [(d["target"], d["event_type"], d["last_status"]) for d in dead] == [
            ("snow", "incident.acknowledged", 400)]
        assert "read-only" in dead[0]["last_error"]
        jira_third = jira.issues[(await api.tickets(third["id"], 3))["jira"]["key"]]
        await poll("Jira's third issue In Progress", lambda: constant(jira_third["status"]),
                   lambda s: s == "In Progress", within=20, diagnostics=api.logs)
        assert [r["event_type"] for r in await api.notifications(
            target="helpdesk", incident=str(third["id"]))] == ["incident.triggered"]


async def test_kill9_between_ticket_creation_and_storing_its_id(
    daemon_factory: Callable[..., DaemonProcess],
    make_client: Callable[[DaemonProcess], IncidentdClient],
) -> None:
    sn, jira, tool = (FakeServiceNow(authorization=SN_AUTH), FakeJira(authorization=JIRA_AUTH),
                      FakeTool())
    async with running(sn, jira, tool):
        config = suites_config(sn, jira, tool)
        config["connectors"] = config["connectors"][:1]  # ServiceNow alone
        daemon = await daemon_factory(config=config).start()
        api = Api(make_client(daemon))
        sn.hold_creates()  # ServiceNow makes the ticket, then holds its answer
        incident = await api.open("E2EKillCreate")
        await poll("ServiceNow holding its answer to the create", lambda: constant(sn.held),
                   lambda held: held.is_set(), within=20, diagnostics=api.logs)
        assert len(sn.incidents) == 1
        await daemon.kill9()
        sn.release()

        await daemon.restart()
        tickets = await api.tickets(incident["id"], 1)  # once the lease has run out
        [record] = sn.incidents
        assert tickets["snow"]["id"] == record["sys_id"]
        assert len(sn.requests("POST")) == 1  # found by correlation id, never made twice
        finds = [s for s in sn.requests("GET", "/table/incident")]
        assert finds[-1].query["sysparm_query"].startswith(f"correlation_id={incident['key']}")
        [row] = await api.notifications(target="snow")
        assert row["state"] == "delivered"
