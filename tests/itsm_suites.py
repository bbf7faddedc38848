"""Fake ITSM suites for the connector tests: real aiohttp servers on loopback that
implement the documented subset of each API (and nothing more), record every request,
check the credentials, and can be told to fail or to hold an answer.

- `FakeServiceNow`: Table API on `incident`, `cmdb_ci`, `sys_user_group`
  (`GET ?sysparm_query=field=value^...&sysparm_fields=...&sysparm_limit=...`,
  `POST`, `PATCH /{sys_id}`), answers `{"result": ...}`.
- `FakeJira`: REST v3 `POST /rest/api/3/issue`, `GET /rest/api/3/search/jql`,
  `GET|POST /rest/api/3/issue/{key}/transitions`, `POST .../comment`,
  `PUT /rest/api/3/issue/{key}`; a To Do → In Progress → Done workflow.
- `FakeTool`: a generic tool taking the notification envelope at `POST /tickets`,
  answering `{"id": ...}` once per incident.

`fail(method, status, headers=..., times=1)` makes the next matching requests fail
(after recording them); `hold_creates()` makes the next create store the ticket and
then wait for `release()` before answering (a daemon killed meanwhile never hears).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    status: int

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Failure:
    method: str
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: str = '{"error": {"message": "scripted failure"}}'
    path_part: str = ""


class FakeSuite:
    """What the three fakes share: a server, a request log, auth, scripted failures."""

    def __init__(self, *, authorization: str | None) -> None:
        self.authorization = authorization
        self.seen: list[Seen] = []
        self.failures: list[Failure] = []
        self.creates_held = False
        self.held = asyncio.Event()  # set: a held create was stored and waits
        self._release = asyncio.Event()
        self.port = 0
        self._runner: web.AppRunner | None = None

    # -- control -----------------------------------------------------------------------

    def fail(self, method: str, status: int, *, headers: dict[str, str] | None = None,
             times: int = 1, body: str | None = None, path_part: str = "") -> None:
        for _ in range(times):
            self.failures.append(Failure(method, status, headers or {},
                                         body or '{"error": {"message": "scripted failure"}}',
                                         path_part))

    def hold_creates(self) -> None:
        self.creates_held = True
        self._release.clear()

    def release(self) -> None:
        self.creates_held = False
        self._release.set()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def requests(self, method: str | None = None, path_part: str = "") -> list[Seen]:
        return [s for s in self.seen
                if (method is None or s.method == method) and path_part in s.path]

    # -- serving -----------------------------------------------------------------------

    def app(self) -> web.Application:
        raise NotImplementedError

    async def start(self) -> FakeSuite:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, LOOPBACK, self.port or 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def close(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.read()
        status = 0
        try:
            if self.authorization and request.headers.get("Authorization") != self.authorization:
                response: web.StreamResponse = web.json_response(
                    {"error": "wrong or missing credentials"}, status=401)
            elif (failure := self._failure(request)) is not None:
                response = web.Response(status=failure.status, text=failure.body,
                                        headers=failure.headers,
                                        content_type="application/json")
            else:
                response = await handler(request)
            status = response.status
            return response
        finally:
            self.seen.append(Seen(request.method, request.path, dict(request.query),
                                  dict(request.headers), body, status))

    def _failure(self, request: web.Request) -> Failure | None:
        for i, f in enumerate(self.failures):
            if f.method == request.method and f.path_part in request.path:
                return self.failures.pop(i)
        return None

    async def _after_create(self) -> None:
        """A held create: the ticket exists; the answer waits (for ever, if killed)."""
        if self.creates_held:
            self.held.set()
            await self._release.wait()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# -- ServiceNow ------------------------------------------------------------------------------


class FakeServiceNow(FakeSuite):
    def __init__(self, *, authorization: str | None) -> None:
        super().__init__(authorization=authorization)
        self.tables: dict[str, dict[str, dict[str, Any]]] = {
            "incident": {}, "cmdb_ci": {}, "sys_user_group": {}}
        self.work_notes: dict[str, list[str]] = {}
        self._number = 10000

    def add(self, table: str, **fields: Any) -> str:
        sys_id = uuid.uuid4().hex
        self.tables[table][sys_id] = {"sys_id": sys_id, **fields}
        return sys_id

    @property
    def incidents(self) -> list[dict[str, Any]]:
        return list(self.tables["incident"].values())

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/api/now/table/{table}", self._query)
        app.router.add_post("/api/now/table/{table}", self._create)
        app.router.add_patch("/api/now/table/{table}/{sys_id}", self._update)
        return app

    async def _query(self, request: web.Request) -> web.Response:
        table = self.tables.get(request.match_info["table"])
        if table is None:
            return web.json_response({"error": {"message": "Invalid table"}}, status=400)
        conditions = [c for c in request.query.get("sysparm_query", "").split("^")
                      if c and not c.startswith("ORDERBY")]
        wanted = dict(c.split("=", 1) for c in conditions)
        found = [r for r in table.values() if all(str(r.get(k)) == v for k, v in wanted.items())]
        fields = [f for f in request.query.get("sysparm_fields", "").split(",") if f]
        limit = int(request.query.get("sysparm_limit", "10000"))
        rows = [{k: r.get(k, "") for k in fields} if fields else r for r in found[:limit]]
        return web.json_response({"result": rows})

    async def _create(self, request: web.Request) -> web.Response:
        name = request.match_info["table"]
        body = await request.json()
        self._number += 1
        sys_id = uuid.uuid4().hex
        record = {"sys_id": sys_id, "number": f"INC{self._number:07d}", "state": "1", **body}
        self.tables[name][sys_id] = record
        await self._after_create()
        return web.json_response({"result": record}, status=201)

    async def _update(self, request: web.Request) -> web.Response:
        record = self.tables.get(request.match_info["table"], {}).get(
            request.match_info["sys_id"])
        if record is None:
            return web.json_response({"error": {"message": "No Record found"}}, status=404)
        body = await request.json()
        note = body.pop("work_notes", None)
        if note:
            self.work_notes.setdefault(record["sys_id"], []).append(note)
        record.update(body)
        return web.json_response({"result": record})


# -- Jira ------------------------------------------------------------------------------------

_JIRA_FLOW = {
    "To Do": [("11", "Start Progress", "In Progress"), ("31", "Done", "Done")],
    "In Progress": [("21", "Stop Progress", "To Do"), ("31", "Done", "Done")],
    "Done": [("41", "Reopen Issue", "To Do")],
}


class FakeJira(FakeSuite):
    def __init__(self, *, authorization: str | None, project: str = "OPS") -> None:
        super().__init__(authorization=authorization)
        self.project = project
        self.issues: dict[str, dict[str, Any]] = {}  # by key
        self.comments: dict[str, list[dict[str, Any]]] = {}

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        app.router.add_post("/rest/api/3/issue", self._create)
        app.router.add_get("/rest/api/3/search/jql", self._search)
        app.router.add_get("/rest/api/3/issue/{key}/transitions", self._transitions)
        app.router.add_post("/rest/api/3/issue/{key}/transitions", self._transition)
        app.router.add_post("/rest/api/3/issue/{key}/comment", self._comment)
        app.router.add_put("/rest/api/3/issue/{key}", self._edit)
        return app

    async def _create(self, request: web.Request) -> web.Response:
        fields = (await request.json())["fields"]
        if fields.get("project", {}).get("key") != self.project:
            return web.json_response({"errors": {"project": "valid project is required"}},
                                     status=400)
        number = len(self.issues) + 1
        issue = {"id": str(10000 + number), "key": f"{self.project}-{number}",
                 "status": "To Do", "fields": fields}
        self.issues[issue["key"]] = issue
        await self._after_create()
        return web.json_response({"id": issue["id"], "key": issue["key"],
                                  "self": f"{self.url}/rest/api/3/issue/{issue['id']}"},
                                 status=201)

    async def _search(self, request: web.Request) -> web.Response:
        jql = request.query.get("jql", "")
        label = jql.split('labels = "', 1)[1].split('"', 1)[0] if 'labels = "' in jql else None
        found = [{"id": i["id"], "key": i["key"]} for i in self.issues.values()
                 if label in i["fields"].get("labels", [])]
        return web.json_response({"issues": found[:int(request.query.get("maxResults", 50))]})

    def _issue(self, request: web.Request) -> dict[str, Any] | None:
        return self.issues.get(request.match_info["key"])

    async def _transitions(self, request: web.Request) -> web.Response:
        issue = self._issue(request)
        if issue is None:
            return web.json_response({"errorMessages": ["Issue does not exist"]}, status=404)
        return web.json_response({"transitions": [
            {"id": i, "name": n, "to": {"name": to}} for i, n, to in _JIRA_FLOW[issue["status"]]]})

    async def _transition(self, request: web.Request) -> web.Response:
        issue = self._issue(request)
        if issue is None:
            return web.json_response({"errorMessages": ["Issue does not exist"]}, status=404)
        wanted = (await request.json())["transition"]["id"]
        for i, _, to in _JIRA_FLOW[issue["status"]]:
            if i == wanted:
                issue["status"] = to
                return web.Response(status=204)
        return web.json_response({"errorMessages": ["Transition id is not valid"]}, status=400)

    async def _comment(self, request: web.Request) -> web.Response:
        issue = self._issue(request)
        if issue is None:
            return web.json_response({"errorMessages": ["Issue does not exist"]}, status=404)
        body = (await request.json())["body"]
        self.comments.setdefault(issue["key"], []).append(body)
        return web.json_response({"id": str(len(self.comments[issue["key"]])), "body": body},
                                 status=201)

    async def _edit(self, request: web.Request) -> web.Response:
        issue = self._issue(request)
        if issue is None:
            return web.json_response({"errorMessages": ["Issue does not exist"]}, status=404)
        issue["fields"].update((await request.json())["fields"])
        return web.Response(status=204)


def adf_plain(doc: dict[str, Any]) -> str:
    """The text of a simple ADF document (paragraphs of text and hard breaks)."""
    lines = []
    for para in doc["content"]:
        assert para["type"] == "paragraph", para
        lines.append("".join("\n" if n["type"] == "hardBreak" else n["text"]
                             for n in para["content"]))
    return "\n\n".join(lines)


def jira_webhook(issue: dict[str, Any], *, user: dict[str, Any], status: str | None = None,
                 assignee: str | None = None, changelog_id: str = "10100") -> dict[str, Any]:
    """A `jira:issue_updated` body as Jira Cloud sends it (the parts we read, and more)."""
    items: list[dict[str, Any]] = []
    if status:
        items.append({"field": "status", "fieldtype": "jira", "fieldId": "status",
                      "from": "3", "fromString": "In Progress", "to": "10001",
                      "toString": status})
    if assignee:
        items.append({"field": "assignee", "fieldtype": "jira", "fieldId": "assignee",
                      "from": None, "fromString": None, "to": "5b10a", "toString": assignee})
    return {"timestamp": 1764200000000, "webhookEvent": "jira:issue_updated",
            "issue_event_type_name": "issue_generic", "user": user,
            "issue": {"id": issue["id"], "key": issue["key"],
                      "self": f"https://example.atlassian.net/rest/api/2/{issue['id']}",
                      "fields": {"labels": issue["fields"]["labels"],
                                 "summary": issue["fields"]["summary"],
                                 "status": {"name": status or issue["status"]}}},
            "changelog": {"id": changelog_id, "items": items}}


def hub_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# -- a generic tool ----------------------------------------------------------------------------


class FakeTool(FakeSuite):
    def __init__(self, *, authorization: str | None = None) -> None:
        super().__init__(authorization=authorization)
        self.tickets: dict[str, str] = {}  # incident key → ticket id

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        app.router.add_post("/tickets", self._post)
        return app

    async def _post(self, request: web.Request) -> web.Response:
        envelope = await request.json()
        key = envelope["event"]["incident"]["key"]
        if key in self.tickets:
            return web.json_response({"ok": True})
        self.tickets[key] = f"T-{len(self.tickets) + 1}"
        return web.json_response({"id": self.tickets[key], "url": f"{self.url}/t/{key}"})

    def envelopes(self) -> list[dict[str, Any]]:
        return [s.json() for s in self.requests("POST", "/tickets") if 200 <= s.status < 300]


@contextlib.asynccontextmanager
async def running(*suites: FakeSuite) -> AsyncIterator[None]:
    for s in suites:
        await s.start()
    try:
        yield
    finally:
        for s in suites:
            await s.close()
