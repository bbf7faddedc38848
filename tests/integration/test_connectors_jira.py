"""The Jira Service Management connector against a fake Jira Cloud REST v3, on SQLite
and PostgreSQL: issue fields in ADF, labels, priorities, comments, transitions by
name, and Jira's own signed webhook coming back."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from daemon.models import incident_key
from tests.integration.connector_desk import PUBLIC, Desk, alert, desks_fixture  # noqa: F401
from tests.itsm_suites import (
    FakeJira,
    FakeTool,
    adf_plain,
    basic,
    hub_signature,
    jira_webhook,
    running,
)

AUTH = basic("bot@example.com", "jira-api-token")
SECRET = "jira-webhook-secret"
BOT = {"accountId": "557058:bot", "displayName": "incidentd bot"}
ANN = {"accountId": "5b10ac8d82e05b22cc7d4ef5", "displayName": "Ann Admin"}


def jira(url: str, **mapping: Any) -> dict[str, Any]:
    return {"name": "jira", "type": "jira", "url": url,
            "auth": {"basic": {"username": "bot@example.com",
                               "password": {"value": "jira-api-token"}}},
            "mapping": {"project": "OPS", "issue_type": "Incident", **mapping},
            "inbound": {"hmac": {"secrets": [{"value": SECRET}]},
                        "ignore_users": [BOT["accountId"]]}}


def comments(fake: FakeJira, key: str) -> list[str]:
    return [adf_plain(c) for c in fake.comments.get(key, [])]


async def test_issue_follows_the_incident_field_by_field(desks: Callable[..., Desk]) -> None:
    fake = FakeJira(authorization=AUTH)
    async with running(fake):
        desk = desks(connectors=[jira(fake.url, labels=["incidentd", "sre"],
                                      fields={"components": [{"name": "{{ ci.name }}"}]})])
        inc = await desk.open(alert("orders-db-down"))
        key = incident_key(inc)
        assert await desk.drain() == 1
        search, create = fake.seen
        assert (search.method, search.path) == ("GET", "/rest/api/3/search/jql")
        assert search.query == {
            "jql": f'project = "OPS" AND labels = "incidentd-{key}" ORDER BY created ASC',
            "fields": "key", "maxResults": "1"}
        assert (create.method, create.path) == ("POST", "/rest/api/3/issue")
        assert all(s.headers["Authorization"] == AUTH for s in fake.seen)
        assert create.headers["Content-Type"] == "application/json"
        fields = create.json()["fields"]
        assert set(fields) == {"project", "issuetype", "summary", "description", "labels",
                               "priority", "components"}
        assert fields["project"] == {"key": "OPS"}
        assert fields["issuetype"] == {"name": "Incident"}
        assert fields["summary"] == f"[{key}] orders-db-down firing"
        assert fields["labels"] == ["incidentd", "sre", f"incidentd-{key}"]
        assert fields["priority"] == {"name": "Highest"}  # P1
        assert fields["components"] == [{"name": "Orders DB"}]
        description = fields["description"]
        assert (description["type"], description["version"]) == ("doc", 1)
        text = adf_plain(description)
        assert text.startswith("orders-db-down firing\n\nOpened by incidentd: "
                               f"{PUBLIC}/api/v1/incidents/{inc}\nPriority: P1")
        assert (await desk.incident(inc))["external_tickets"] == [{
            "connector": "jira", "id": "10001", "key": "OPS-1",
            "url": f"{fake.url}/browse/OPS-1"}]

        # acknowledge: transition by target status ("Start Progress" → In Progress) + comment
        fake.seen.clear()
        await desk.move(inc, "acknowledge", actor="ann")
        assert await desk.drain() == 1
        assert [(s.method, s.path) for s in fake.seen] == [
            ("GET", "/rest/api/3/issue/OPS-1/transitions"),
            ("POST", "/rest/api/3/issue/OPS-1/transitions"),
            ("POST", "/rest/api/3/issue/OPS-1/comment")]
        assert fake.seen[1].json() == {"transition": {"id": "11"}}
        assert fake.issues["OPS-1"]["status"] == "In Progress"
        assert comments(fake, "OPS-1") == ["[incidentd] Acknowledged in incidentd (by ann)"]

        # priority: PUT the mapped name; resolve: the "Done" transition
        fake.seen.clear()
        await desk.priority(inc, "P4")
        await desk.move(inc, "resolve", actor="bob")
        assert await desk.drain() == 2
        assert [(s.method, s.path) for s in fake.seen] == [
            ("PUT", "/rest/api/3/issue/OPS-1"), ("POST", "/rest/api/3/issue/OPS-1/comment"),
            ("GET", "/rest/api/3/issue/OPS-1/transitions"),
            ("POST", "/rest/api/3/issue/OPS-1/transitions"),
            ("POST", "/rest/api/3/issue/OPS-1/comment")]
        assert fake.seen[0].json() == {"fields": {"priority": {"name": "Low"}}}
        assert fake.seen[3].json() == {"transition": {"id": "31"}}
        assert fake.issues["OPS-1"]["status"] == "Done"
        assert comments(fake, "OPS-1")[1:] == [
            "[incidentd] Priority changed from P1 to P4 (by ann): business impact",
            "[incidentd] Resolved in incidentd (by bob)"]

        # reopened in incidentd: "Reopen Issue" is found by its target status (To Do)
        fake.seen.clear()
        await desk.move(inc, "reopen", actor="bob")
        assert await desk.drain() == 1
        assert fake.issues["OPS-1"]["status"] == "To Do"
        assert len(fake.issues) == 1


async def test_a_retried_create_finds_the_issue_by_its_label(desks: Callable[..., Desk]) -> None:
    fake = FakeJira(authorization=AUTH)
    async with running(fake):
        retry = {"max_attempts": 5, "initial_seconds": 1, "max_seconds": 5,
                 "timeout_seconds": 1}
        desk = desks(connectors=[jira(fake.url)], retry=retry)
        fake.hold_creates()
        await desk.open(alert("queue-backlog"))
        assert await desk.drain() == 1
        assert len(fake.issues) == 1 and len(await desk.pending("jira")) == 1
        fake.release()
        await desk.wait_due()
        assert await desk.drain() == 1
        assert len(fake.issues) == 1
        assert len(fake.requests("POST", "/rest/api/3/issue")) == 1
        assert len(fake.requests("GET", "/search/jql")) == 2


async def test_429_with_retry_after_then_delivered(desks: Callable[..., Desk]) -> None:
    fake = FakeJira(authorization=AUTH)
    async with running(fake):
        desk = desks(connectors=[jira(fake.url)])
        fake.fail("POST", 429, headers={"Retry-After": "12"}, path_part="/comment")
        inc = await desk.open(alert("api-latency"))
        await desk.move(inc, "acknowledge")
        assert await desk.drain() == 2  # created; the acknowledgement's comment got 429
        [ack] = await desk.pending("jira")
        assert (ack.event_type, ack.last_status) == ("incident.acknowledged", 429)
        assert await desk.wait_due() >= 12
        assert await desk.drain() == 1
        # the transition was already made: the retry finds none to make, and comments
        assert fake.issues["OPS-1"]["status"] == "In Progress"
        assert comments(fake, "OPS-1") == ["[incidentd] Acknowledged in incidentd (by ann)"]


async def test_jira_webhook_moves_the_incident_and_is_not_echoed(
        desks: Callable[..., Desk]) -> None:
    fake = FakeJira(authorization=AUTH)
    tool = FakeTool()
    async with running(fake, tool):
        desk = desks(connectors=[
            jira(fake.url),
            {"name": "desk", "type": "generic", "url": f"{tool.url}/tickets"}])
        inc = await desk.open(alert("cache-evictions"))
        assert await desk.drain() == 2
        issue = fake.issues["OPS-1"]
        fake.seen.clear()

        # Ann moves the issue to Done in Jira: Jira posts its signed webhook
        body = json.dumps(jira_webhook(issue, user=ANN, status="Done")).encode()
        headers = {"X-Hub-Signature": hub_signature(SECRET, body),
                   "X-Atlassian-Webhook-Identifier": "hook-1"}
        status, answer = await desk.post_update("jira", body, headers)
        assert status == 200, answer
        assert answer == {"incident": incident_key(inc), "results": [
            {"action": "resolve", "outcome": "applied", "status": "resolved"}]}
        detail = await desk.incident(inc)
        [resolved] = [e for e in detail["timeline"] if e["kind"] == "resolved"]
        assert resolved["actor"] == "jira:Ann Admin"
        assert resolved["detail"] == {"note": "moved to Done in Jira", "origin": "jira"}

        # the generic connector hears of it; Jira does not get its own change back
        assert await desk.drain() == 1
        assert [e["event"]["event_type"] for e in tool.envelopes()] == [
            "incident.triggered", "incident.resolved"]
        assert tool.envelopes()[1]["ticket"]["id"] == "T-1"
        assert not fake.seen

        # Jira redelivers the same webhook: harmless
        status, again = await desk.post_update("jira", body, headers)
        assert status == 200 and again["results"][0]["outcome"] == "unchanged"

        # assignee change and a comment: timeline notes (a redelivery records nothing more)
        body = json.dumps(jira_webhook(issue, user=ANN, assignee="Bob Builder")).encode()
        sig = {"X-Hub-Signature": hub_signature(SECRET, body)}
        for _ in range(2):
            status, answer = await desk.post_update("jira", body, sig)
            assert status == 200, answer
        comment = {"timestamp": 1, "webhookEvent": "comment_created",
                   "issue": {"id": issue["id"], "key": issue["key"],
                             "fields": {"labels": issue["fields"]["labels"]}},
                   "comment": {"id": "10050", "author": ANN, "body": "root cause: a bad deploy"}}
        body = json.dumps(comment).encode()
        status, answer = await desk.post_update("jira", body,
                                                {"X-Hub-Signature": hub_signature(SECRET, body)})
        assert status == 200 and answer["results"] == [{"action": "note", "outcome": "applied"}]
        notes = [(e["actor"], e["detail"]["note"]) for e in
                 (await desk.incident(inc))["timeline"] if e["kind"] == "note"]
        assert notes == [("jira:Ann Admin", "Assigned to Bob Builder in Jira"),
                         ("jira:Ann Admin", "root cause: a bad deploy")]

        # the bot's own transition coming back is ignored
        own = json.dumps(jira_webhook(issue, user=BOT, status="In Progress")).encode()
        status, answer = await desk.post_update("jira", own,
                                                {"X-Hub-Signature": hub_signature(SECRET, own)})
        assert status == 200 and answer["results"] == []

        # a wrong or missing signature is refused
        status, answer = await desk.post_update("jira", own, {
            "X-Hub-Signature": hub_signature("not-the-secret", own)})
        assert status == 401
        status, answer = await desk.post_update("jira", own, {})
        assert status == 401 and "X-Hub-Signature" in answer["error"]["message"]


async def test_webhook_for_an_issue_that_is_not_ours_is_404(desks: Callable[..., Desk]) -> None:
    fake = FakeJira(authorization=AUTH)
    async with running(fake):
        desk = desks(connectors=[jira(fake.url)])
        stranger = {"id": "99999", "key": "OPS-999", "status": "To Do",
                    "fields": {"labels": ["other"], "summary": "not ours"}}
        body = json.dumps(jira_webhook(stranger, user=ANN, status="Done")).encode()
        status, answer = await desk.post_update("jira", body,
                                                {"X-Hub-Signature": hub_signature(SECRET, body)})
        assert status == 404 and "OPS-999" in answer["error"]["message"]
