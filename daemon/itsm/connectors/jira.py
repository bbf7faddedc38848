"""Jira Service Management (Jira Cloud platform REST API v3), API-token basic auth.

Outbound, per incident:

- find: `GET /rest/api/3/search/jql?jql=project = "OPS" AND labels = "incidentd-INC-000123"
  &fields=key&maxResults=1` (the issue carries the incident key as a label).
- create: `POST /rest/api/3/issue` with `fields`: `project.key`, `issuetype.name`,
  `summary`, `description` (Atlassian Document Format), `labels` (configured ones
  and the key label), `priority.name` (mapped from ours), plus configured fields.
  Answer: `201 {"id": "10001", "key": "OPS-12", "self": ...}`.
- every event: `POST /rest/api/3/issue/{key}/comment` with an ADF `body`;
  acknowledge / resolve / reopen: `GET /rest/api/3/issue/{key}/transitions`, the
  first transition whose name (or target status) is among the configured names, then
  `POST /rest/api/3/issue/{key}/transitions {"transition": {"id": ...}}`; a new
  priority: `PUT /rest/api/3/issue/{key} {"fields": {"priority": {"name": ...}}}`.

Inbound: Jira's own webhook (admin webhook with a secret: `X-Hub-Signature:
sha256=<hex>`): `jira:issue_updated` with a changelog (`status` → acknowledge /
resolve / reopen by the configured status names; `assignee` → a timeline note) or
a comment, and `comment_created`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import orjson
import structlog

from daemon.config import JiraConnector
from daemon.errors import InvalidInput
from daemon.itsm.connectors.base import (
    Change,
    Connector,
    ConnectorError,
    EventView,
    Http,
    InboundUpdate,
    Ticket,
    text_of,
)
from daemon.itsm.connectors.mapping import adf, adf_text, render, render_json
from daemon.itsm.inbound_webhook import incident_ref

log = structlog.get_logger("incidentd.connectors")

ISSUE_UPDATED = "jira:issue_updated"
COMMENT_CREATED = "comment_created"


class Jira(Connector):
    def __init__(self, config: JiraConnector) -> None:
        super().__init__(config.name, url=config.url.rstrip("/"), auth=config.auth,
                         rate_limit_per_minute=config.rate_limit_per_minute,
                         ignore_users=config.inbound.ignore_users)
        self.config = config
        self.mapping = config.mapping
        self._statuses = {k.lower(): v for k, v in config.mapping.inbound_statuses.items()}
        self._transitions = {str(k): [n.lower() for n in v]
                             for k, v in config.mapping.transitions.items()}

    def key_label(self, incident_key: str) -> str:
        return f"{self.mapping.key_label_prefix}{incident_key}"

    # -- outbound ----------------------------------------------------------------------

    async def find_ticket(self, http: Http, event: EventView) -> Ticket | None:
        jql = (f'project = "{self.mapping.project}" AND labels = '
               f'"{self.key_label(event.key)}" ORDER BY created ASC')
        reply = await http.call("GET", "/rest/api/3/search/jql", params={
            "jql": jql, "fields": "key", "maxResults": "1"})
        answer = reply.json()
        issues = answer.get("issues") if isinstance(answer, dict) else None
        found = [i for i in issues if isinstance(i, dict) and i.get("id")] if isinstance(
            issues, list) else []
        return self._ticket(found[0]) if found else None

    async def create_ticket(self, http: Http, event: EventView) -> Ticket:
        context = event.context()
        m = self.mapping
        fields: dict[str, Any] = {
            "project": {"key": m.project},
            "issuetype": {"name": m.issue_type},
            "summary": render(m.summary, context, path=f"{self.name}.mapping.summary")[:255],
            "description": adf(render(m.description, context,
                                      path=f"{self.name}.mapping.description")),
            "labels": [*m.labels, self.key_label(event.key)],
        }
        priority = self._priority(event)
        if priority:
            fields["priority"] = priority
        fields |= render_json(m.fields, context, path=f"{self.name}.mapping.fields")
        reply = await http.call("POST", "/rest/api/3/issue", json={"fields": fields})
        answer = reply.json()
        if not isinstance(answer, dict) or not answer.get("id") or not answer.get("key"):
            raise ConnectorError(f"{self.name}: the create answer has no id and key",
                                 retryable=True, status=reply.status)
        return self._ticket(answer)

    async def update_ticket(self, http: Http, ticket: Ticket, event: EventView,
                            change: Change) -> None:
        if change is Change.PRIORITY:
            priority = self._priority(event)
            if priority:
                await http.call("PUT", self._issue(ticket), json={"fields": {
                    "priority": priority}})
        else:
            await self._transition(http, ticket, change.value)
        await self.add_work_note(http, ticket, event)

    async def close_ticket(self, http: Http, ticket: Ticket, event: EventView) -> None:
        await self._transition(http, ticket, "resolve")
        await self.add_work_note(http, ticket, event)

    async def add_work_note(self, http: Http, ticket: Ticket, event: EventView) -> None:
        text = render(self.mapping.comment, event.context(), path=f"{self.name}.mapping.comment")
        await http.call("POST", f"{self._issue(ticket)}/comment", json={"body": adf(text)})

    async def _transition(self, http: Http, ticket: Ticket, action: str) -> None:
        """Move the issue by the first configured transition it offers now. None offered:
        it is there already, or the workflow differs; the comment says what happened."""
        wanted = self._transitions.get(action, [])
        reply = await http.call("GET", f"{self._issue(ticket)}/transitions")
        answer = reply.json()
        offered = answer.get("transitions") if isinstance(answer, dict) else None
        chosen = _choose(offered if isinstance(offered, list) else [], wanted)
        if chosen is None:
            log.warning("jira: no configured transition offered; left as it is",
                        connector=self.name, issue=ticket.key, action=action)
            return
        await http.call("POST", f"{self._issue(ticket)}/transitions",
                        json={"transition": {"id": chosen}})

    def _priority(self, event: EventView) -> dict[str, str] | None:
        priority = str(event.incident.get("priority"))
        name = next((v for k, v in self.mapping.priorities.items() if k == priority), None)
        return {"name": name} if name else None

    def _issue(self, ticket: Ticket) -> str:
        return f"/rest/api/3/issue/{quote(ticket.key or ticket.id, safe='')}"

    def _ticket(self, issue: Mapping[str, Any]) -> Ticket:
        key = text_of(issue.get("key"))
        return Ticket(id=str(issue["id"]), key=key,
                      url=f"{self.url}/browse/{key}" if key else None)

    # -- inbound -------------------------------------------------------------------------

    def parse_inbound(self, body: bytes, headers: Mapping[str, str]) -> list[InboundUpdate]:
        try:
            msg = orjson.loads(body or b"null")
        except orjson.JSONDecodeError:
            raise _invalid("(body)", "invalid JSON") from None
        if not isinstance(msg, dict):
            raise _invalid("(body)", "must be a JSON object")
        issue = msg.get("issue")
        if not isinstance(issue, dict) or not issue.get("id"):
            raise _invalid("issue", "a Jira webhook names its issue (issue.id)")
        kind = msg.get("webhookEvent")
        common = {"ticket_id": str(issue["id"]), "ticket_key": text_of(issue.get("key")),
                  "incident": self._incident_of(issue)}
        delivery = headers.get("X-Atlassian-Webhook-Identifier") or str(msg.get("timestamp", ""))
        updates: list[InboundUpdate] = []
        if kind == ISSUE_UPDATED:
            updates += self._changes(msg, common, delivery)
        comment = msg.get("comment")
        if kind in (ISSUE_UPDATED, COMMENT_CREATED) and isinstance(comment, dict) and not (
                self._own(comment.get("updateAuthor") or comment.get("author"))):
            updates += _comment(comment, common)
        return updates

    def _own(self, user: Any) -> bool:
        """Made by the integration's own account (`inbound.ignore_users`: an accountId,
        a display name or an email address): our own change coming back."""
        if not isinstance(user, dict):
            return False
        return any(self.ignored(str(user.get(k))) for k in ("accountId", "displayName",
                                                            "emailAddress", "name")
                   if user.get(k))

    def _changes(self, msg: Mapping[str, Any], common: dict[str, Any], delivery: str
                 ) -> list[InboundUpdate]:
        if self._own(msg.get("user")):
            return []
        user = _user(msg.get("user"))
        changelog = _obj(msg.get("changelog"))
        items = _list(changelog.get("items"))
        ref = f"changelog:{changelog.get('id') or delivery}"
        out: list[InboundUpdate] = []
        for i, item in enumerate(x for x in items if isinstance(x, dict)):
            field = str(item.get("field") or "").lower()
            to = text_of(item.get("toString"))
            if field == "status" and to and (action := self._statuses.get(to.lower())):
                out.append(InboundUpdate(action=action, user=user,
                                         note=f"moved to {to} in Jira", **common))
            elif field == "assignee":
                out.append(InboundUpdate(action="note", user=user, ref=f"{ref}:{i}",
                                         note=f"Assigned to {to or 'nobody'} in Jira",
                                         detail={"assignee": to}, **common))
        return out

    def _incident_of(self, issue: Mapping[str, Any]) -> int | None:
        """Our incident, from the key label the issue carries."""
        labels = _list(_obj(issue.get("fields")).get("labels"))
        prefix = self.mapping.key_label_prefix
        for label in labels:
            if isinstance(label, str) and label.startswith(prefix):
                try:
                    return incident_ref(label[len(prefix):])
                except ValueError:
                    continue
        return None


def _choose(offered: list[Any], wanted: list[str]) -> str | None:
    """The id of the first wanted name a transition has (its own or its target's)."""
    for name in wanted:
        for t in offered:
            if not isinstance(t, dict) or not t.get("id"):
                continue
            target = _obj(t.get("to"))
            if name in (str(t.get("name", "")).lower(), str(target.get("name", "")).lower()):
                return str(t["id"])
    return None


def _comment(comment: Mapping[str, Any], common: dict[str, Any]) -> list[InboundUpdate]:
    text = text_of(adf_text(comment.get("body")))
    if not text:
        return []
    author = _user(comment.get("updateAuthor") or comment.get("author"))
    return [InboundUpdate(action="note", user=author, note=text,
                          ref=f"comment:{comment.get('id')}", **common)]


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _user(value: Any) -> str:
    if not isinstance(value, dict):
        return "jira"
    return str(value.get("displayName") or value.get("accountId") or value.get("name")
               or "jira")[:200]


def _invalid(field: str, reason: str) -> InvalidInput:
    return InvalidInput(f"invalid Jira webhook: {field}: {reason}",
                        [{"field": field, "reason": reason}])
