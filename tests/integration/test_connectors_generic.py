"""The generic connector (a webhook target with a ticket id) and its inbound update
endpoint, on SQLite and PostgreSQL; plus what every connector shares: the
configuration's checks, one incident's events in order, loops prevented."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import pytest

from daemon.config import Config
from daemon.models import incident_key
from tests.integration.connector_desk import Desk, alert, desks_fixture  # noqa: F401
from tests.itsm_suites import FakeServiceNow, FakeTool, basic, running

SIGNING = "generic-outbound-secret"
INBOUND = "generic-inbound-secret"


def generic(url: str, **extra: Any) -> dict[str, Any]:
    return {"name": "helpdesk", "type": "generic", "url": url,
            "secrets": [{"value": SIGNING}], "headers": {"X-Tenant": "acme"},
            "auth": {"bearer": {"value": "tool-token"}},
            "inbound": {"hmac": {"secrets": [{"value": INBOUND}]}}, **extra}


def signed(body: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    return raw, {"X-Incidentd-Signature":
                 "v1=" + hmac.new(INBOUND.encode(), raw, hashlib.sha256).hexdigest()}


async def test_envelopes_signed_and_the_ticket_id_kept(desks: Callable[..., Desk]) -> None:
    tool = FakeTool(authorization="Bearer tool-token")
    async with running(tool):
        desk = desks(connectors=[generic(f"{tool.url}/tickets")])
        inc = await desk.open(alert("login-errors"))
        await desk.move(inc, "acknowledge", actor="ann")
        assert await desk.drain() == 2
        first, second = tool.requests("POST")
        for hit, event_type in ((first, "incident.triggered"), (second, "incident.acknowledged")):
            assert hit.headers["X-Incidentd-Event-Type"] == event_type
            assert hit.headers["X-Tenant"] == "acme"
            assert hit.headers["Authorization"] == "Bearer tool-token"
            assert hit.headers["X-Incidentd-Signature"] == "v1=" + hmac.new(
                SIGNING.encode(), hit.body, hashlib.sha256).hexdigest()
            envelope = hit.json()
            assert envelope["event"]["id"] == hit.headers["X-Incidentd-Event-Id"]
            assert envelope["event"]["incident"]["key"] == incident_key(inc)
        assert "ticket" not in first.json()
        assert second.json()["ticket"] == {"id": "T-1", "key": None,
                                           "url": f"{tool.url}/t/{incident_key(inc)}"}
        assert (await desk.incident(inc))["external_tickets"] == [{
            "connector": "helpdesk", "id": "T-1", "key": None,
            "url": f"{tool.url}/t/{incident_key(inc)}"}]


async def test_generic_updates_and_no_echo(desks: Callable[..., Desk]) -> None:
    tool = FakeTool(authorization="Bearer tool-token")
    sn = FakeServiceNow(authorization=basic("u", "p"))
    async with running(tool, sn):
        desk = desks(connectors=[
            generic(f"{tool.url}/tickets"),
            {"name": "snow", "type": "servicenow", "url": sn.url,
             "auth": {"basic": {"username": "u", "password": {"value": "p"}}}}])
        inc = await desk.open(alert("cert-expiry"))
        assert await desk.drain() == 2
        tool.seen.clear()

        # acknowledged in the tool, naming its ticket
        body, headers = signed({"external_id": "T-1", "action": "acknowledge",
                                "actor": "carol", "note": "on it"})
        status, answer = await desk.post_update("helpdesk", body, headers)
        assert status == 200, answer
        assert answer == {"incident": incident_key(inc), "results": [
            {"action": "acknowledge", "outcome": "applied", "status": "acknowledged"}]}
        detail = await desk.incident(inc)
        [ack] = [e for e in detail["timeline"] if e["kind"] == "acknowledged"]
        assert (ack["actor"], ack["detail"]) == ("helpdesk:carol",
                                                 {"note": "on it", "origin": "helpdesk"})
        assert await desk.drain() == 1  # ServiceNow only
        assert not tool.seen
        assert sn.incidents[0]["state"] == "2"

        # again: already acknowledged, nothing moves
        status, again = await desk.post_update("helpdesk", body, headers)
        assert status == 200
        assert again["results"][0]["outcome"] == "unchanged"
        assert "carol" in again["results"][0]["reason"]

        # a note naming the incident by key, with an id: recorded once
        body, headers = signed({"incident": incident_key(inc), "action": "note",
                                "actor": "carol", "note": "customer informed", "id": "n-1"})
        for outcome in ("applied", "unchanged"):
            status, answer = await desk.post_update("helpdesk", body, headers)
            assert status == 200 and answer["results"][0]["outcome"] == outcome

        # resolved in incidentd by a person: both get it (it did not come from either)
        await desk.move(inc, "resolve", actor="dave")
        assert await desk.drain() == 2
        assert [e["event"]["event_type"] for e in tool.envelopes()] == ["incident.resolved"]

        # refusals: bad body (400 naming the field), unknown ticket (404), bad signature
        for bad, field in (({"action": "acknowledge", "actor": "x"}, "(body)"),
                           ({"incident": "INC-1", "action": "explode", "actor": "x"}, "action"),
                           ({"incident": "INC-1", "action": "note", "actor": "incidentd"},
                            "actor")):
            body, headers = signed(bad)
            status, answer = await desk.post_update("helpdesk", body, headers)
            assert status == 400, answer
            assert answer["error"]["errors"][0]["field"] == field
        body, headers = signed({"external_id": "T-404", "action": "resolve", "actor": "x"})
        status, answer = await desk.post_update("helpdesk", body, headers)
        assert status == 404
        body, headers = signed({"incident": 999, "action": "resolve", "actor": "x"})
        status, answer = await desk.post_update("helpdesk", body, headers)
        assert status == 404
        status, answer = await desk.post_update("helpdesk", body,
                                                {"X-Incidentd-Signature": "v1=00"})
        assert status == 401


async def test_a_connector_is_rate_limited_like_a_target(desks: Callable[..., Desk]) -> None:
    tool = FakeTool(authorization="Bearer tool-token")
    async with running(tool):
        desk = desks(connectors=[generic(f"{tool.url}/tickets", rate_limit_per_minute=1)])
        await desk.open(alert("first", ci=None))
        await desk.open(alert("second", ci=None))
        assert await desk.drain() == 1
        [waiting] = await desk.pending("helpdesk")
        assert waiting.attempts == 0  # put off, not an attempt
        assert waiting.next_attempt_at is not None
        assert (waiting.next_attempt_at - desk.clock.now()).total_seconds() >= 59
        desk.clock.advance(60)
        assert await desk.drain() == 1
        assert len(tool.envelopes()) == 2


async def test_a_connector_without_inbound_credentials_takes_no_updates(
        desks: Callable[..., Desk]) -> None:
    tool = FakeTool()
    async with running(tool):
        desk = desks(connectors=[{"name": "quiet", "type": "generic",
                                  "url": f"{tool.url}/tickets"}])
        body, headers = signed({"incident": 1, "action": "resolve", "actor": "x"})
        status, answer = await desk.post_update("quiet", body, headers)
        assert status == 401 and "takes no updates" in answer["error"]["message"]


@pytest.mark.parametrize(("config", "problem"), [
    ({"connectors": [{"name": "a", "type": "servicenow", "url": "https://x"}]},
     "connectors.0.servicenow.auth: Field required"),
    ({"connectors": [{"name": "a", "type": "servicenow", "url": "https://x",
                      "auth": {"basic": {"username": "u", "password": {"env": "P"}},
                               "bearer": {"env": "T"}}}]},
     "connectors.0.servicenow.auth: give exactly one of basic or bearer"),
    ({"connectors": [{"name": "a", "type": "jira", "url": "https://x",
                      "auth": {"bearer": {"env": "T"}}, "mapping": {"project": "OPS",
                                                                    "summary": "{{ alert }}"}}]},
     "connectors.0.jira.mapping.summary: unknown variable alert"),
    ({"connectors": [{"name": "a", "type": "jira", "url": "https://x",
                      "auth": {"bearer": {"env": "T"}}, "mapping": {"project": "OPS",
                                                                    "labels": ["two words"]}}]},
     "connectors.0.jira.mapping.labels: Jira labels cannot be empty or hold spaces"),
    ({"connectors": [{"name": "a", "type": "zendesk", "url": "https://x"}]},
     "connectors.0: Input tag 'zendesk' found using 'type' does not match"),
    ({"connectors": [{"name": "a", "type": "generic", "url": "ftp://x"}]},
     "connectors.0.generic.url: must be an http:// or https:// URL"),
    ({"connectors": [{"name": "ops", "type": "generic", "url": "https://x"}],
      "notifications": {"targets": [{"name": "ops", "type": "webhook", "url": "https://y"}]}},
     "connector names must be unique among connectors and notification targets; "
     "repeated: ops"),
])
def test_configuration_errors_name_the_key_path(config: dict[str, Any], problem: str,
                                                tmp_path: Any) -> None:
    from daemon.config import ConfigError, load_config

    path = tmp_path / "incidentd.yaml"
    path.write_text(json.dumps(config))
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert any(problem in p for p in caught.value.problems), caught.value.problems


def test_defaults_that_work() -> None:
    config = Config.model_validate({"connectors": [
        {"name": "snow", "type": "servicenow", "url": "https://acme.service-now.com",
         "auth": {"bearer": {"env": "SN_TOKEN"}}},
        {"name": "jira", "type": "jira", "url": "https://acme.atlassian.net",
         "auth": {"basic": {"username": "bot@acme.com", "password": {"env": "JIRA_TOKEN"}}},
         "mapping": {"project": "OPS"}}]})
    snow, jira = config.connectors
    assert snow.type == "servicenow" and jira.type == "jira"
    assert snow.mapping.states.model_dump() == {"acknowledge": "2", "resolve": "6",
                                                "reopen": "1"}
    assert snow.mapping.impact_urgency["P1"] == (1, 1)
    assert jira.mapping.transitions["resolve"][0] == "Resolve"
    assert jira.mapping.priorities["P3"] == "Medium"
