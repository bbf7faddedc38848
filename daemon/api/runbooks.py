"""`/api/v1/runbooks` and `/api/v1/runbook-runs`: the catalog, its switches, and the runs.

- `GET /api/v1/runbooks`: every runbook with its guards and its breaker state, and
  `disabled_all` (the kill switch).
- `POST /api/v1/runbooks/disable-all` | `/enable-all` (`{actor, reason}`): the kill
  switch. While it is on, new runs are recorded as skipped.
- `POST /api/v1/runbooks/{name}/enable` (`{actor}`): close an open circuit breaker.
- `POST /api/v1/runbooks/{name}/run` (`{incident, actor}`): run it now on an incident;
  every guard but matching still holds (approval, rate limit, breaker, kill switch).
- `GET /api/v1/runbook-runs?status=&incident=&runbook=&limit=&cursor=`, `GET /{id}`.
- `POST /api/v1/runbook-runs/{id}/approve` | `/deny` (`{actor}`): 409 unless pending.

Thin: validate, call `Triggers` or the store, serialize. The admin token guards all
of it (`daemon.api.auth`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from daemon.api import params
from daemon.api.pages import page
from daemon.api.responses import json_response
from daemon.clock import Clock, timestamp
from daemon.errors import NotFound
from daemon.itsm.inbound_webhook import IncidentRef
from daemon.runbooks.catalog import CatalogHolder, Runbook
from daemon.runbooks.triggers import Triggers
from daemon.store import Store
from daemon.store import runbooks as run_store
from daemon.store.runbooks import KILL_SWITCH, RunbookState, RunView, run_json

log = structlog.get_logger("incidentd.api.runbooks")

_BODY_LIMIT = 16 * 1024
_Actor = Field(default="api", min_length=1, max_length=255)


class ActorBody(BaseModel):
    """Optional body of approve, deny and enable: who did it."""

    model_config = ConfigDict(extra="forbid")
    actor: str = _Actor


class KillSwitchBody(BaseModel):
    """Body of disable-all / enable-all: who, and why (shown with every skipped run)."""

    model_config = ConfigDict(extra="forbid")
    actor: str = _Actor
    reason: str | None = Field(default=None, max_length=1000)


class RunBody(BaseModel):
    """`POST /api/v1/runbooks/{name}/run`: the incident (id or key) to run it on."""

    model_config = ConfigDict(extra="forbid")
    incident: IncidentRef
    actor: str = _Actor


class RunbookRoutes:
    def __init__(self, *, store: Store, clock: Clock, catalog: CatalogHolder,
                 triggers: Triggers, executor_wake: Callable[[], None] | None,
                 dry_run_all: bool = False) -> None:
        self._store = store
        self._clock = clock
        self._catalog = catalog
        self._triggers = triggers
        self._wake = executor_wake
        # `runbooks.dry_run` of the config: shown as each runbook's effective dry_run.
        self._dry_run_all = dry_run_all

    def reconfigure(self, *, dry_run_all: bool) -> None:
        """A configuration reload changed `runbooks.dry_run`."""
        self._dry_run_all = dry_run_all

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/v1/runbooks", self.list_runbooks),
            web.post("/api/v1/runbooks/disable-all", self.disable_all),
            web.post("/api/v1/runbooks/enable-all", self.enable_all),
            web.post("/api/v1/runbooks/{name}/enable", self.enable),
            web.post("/api/v1/runbooks/{name}/run", self.run),
            web.get("/api/v1/runbook-runs", self.list_runs),
            web.get("/api/v1/runbook-runs/{id}", self.get_run),
            web.post("/api/v1/runbook-runs/{id}/approve", self.approve),
            web.post("/api/v1/runbook-runs/{id}/deny", self.deny),
        ]

    # -- the catalog ---------------------------------------------------------------

    async def list_runbooks(self, request: web.Request) -> web.Response:
        async with self._store.read() as conn:
            states = await run_store.states(conn)
        switch = states.get(KILL_SWITCH)
        catalog = self._catalog.current
        return json_response({
            "items": [self._runbook_json(rb, states.get(rb.name))
                      for rb in sorted(catalog.runbooks.values(), key=lambda r: r.name)],
            "disabled_all": bool(switch and switch.disabled),
            "disabled_all_reason": switch.reason if switch and switch.disabled else None,
            "dry_run_all": self._dry_run_all,
            "files": [str(f) for f in catalog.files],
        })

    async def disable_all(self, request: web.Request) -> web.Response:
        body = await params.json_body(request, KillSwitchBody, limit=_BODY_LIMIT, required=False)
        reason = f"{body.actor}: {body.reason}" if body.reason else f"by {body.actor}"
        return await self._switch(disabled=True, reason=reason, actor=body.actor)

    async def enable_all(self, request: web.Request) -> web.Response:
        body = await params.json_body(request, KillSwitchBody, limit=_BODY_LIMIT, required=False)
        return await self._switch(disabled=False, reason=None, actor=body.actor)

    async def _switch(self, *, disabled: bool, reason: str | None, actor: str
                      ) -> web.Response:
        now = self._clock.now()
        async with self._store.write() as conn:
            await run_store.set_disabled(conn, KILL_SWITCH, disabled=disabled, reason=reason,
                                         now=now)
        # WARNING, not INFO: switching all automation off or on is an operator event.
        log.warning("all runbooks disabled (kill switch)" if disabled
                    else "runbooks enabled again (kill switch off)", actor=actor,
                    reason=reason)
        if not disabled and self._wake is not None:
            self._wake()
        return json_response({"disabled_all": disabled, "disabled_all_reason": reason,
                              "updated_at": timestamp(now)})

    async def enable(self, request: web.Request) -> web.Response:
        runbook = self._runbook(request)
        body = await params.json_body(request, ActorBody, limit=_BODY_LIMIT, required=False)
        async with self._store.write() as conn:
            await run_store.set_disabled(conn, runbook.name, disabled=False, reason=None,
                                         now=self._clock.now())
            state = (await run_store.states(conn)).get(runbook.name)
        log.warning("runbook enabled (circuit breaker closed)", runbook=runbook.name,
                    actor=body.actor)
        return json_response(self._runbook_json(runbook, state))

    async def run(self, request: web.Request) -> web.Response:
        runbook = self._runbook(request)
        body = await params.json_body(request, RunBody, limit=_BODY_LIMIT)
        now = self._clock.now()
        async with self._store.write() as conn:
            run_id = await self._triggers.run_manually(conn, runbook.name, body.incident,
                                                       actor=body.actor, now=now)
            run = await run_store.get_run(conn, run_id)
        assert run is not None  # written in this very transaction
        self._wake_if(run)
        return json_response(run_json(run), status=201,
                             headers={"Location": f"/api/v1/runbook-runs/{run.id}"})

    def _runbook(self, request: web.Request) -> Runbook:
        name = request.match_info["name"]
        found = self._catalog.current.runbooks.get(name)
        if found is None:
            raise NotFound(f"no runbook {name!r}")
        return found

    def _runbook_json(self, rb: Runbook, state: RunbookState | None) -> dict[str, Any]:
        return {
            "name": rb.name,
            "description": rb.description,
            "match": rb.match.model_dump(mode="json"),
            "approval": rb.approval,
            "dry_run": rb.dry_run or self._dry_run_all,
            "rate_limit": rb.rate_limit.model_dump(mode="json") if rb.rate_limit else None,
            "circuit_breaker_failures": rb.circuit_breaker_failures,
            "timeout_seconds": rb.timeout_seconds,
            "params": sorted(rb.params),
            "steps": [{"type": s.type, "name": s.name} for s in rb.steps],
            "state": {
                "disabled": bool(state and state.disabled),
                "reason": state.reason if state else None,
                "consecutive_failures": state.consecutive_failures if state else 0,
                "updated_at": timestamp(state.updated_at) if state else None,
            },
        }

    # -- runs --------------------------------------------------------------------

    async def list_runs(self, request: web.Request) -> web.Response:
        q = request.query
        limit = params.limit(q.get("limit"))
        async with self._store.read() as conn:
            rows = await run_store.list_runs(
                conn, status=_statuses(q.get("status")),
                incident_id=params.incident_filter(q.get("incident")),
                runbook=q.get("runbook") or None, limit=limit + 1,
                before_id=params.cursor(q.get("cursor")))
        items, next_cursor = page(rows, limit)
        return json_response({"items": [run_json(r) for r in items],
                              "next_cursor": next_cursor})

    async def get_run(self, request: web.Request) -> web.Response:
        run_id = _run_id(request)
        async with self._store.read() as conn:
            run = await run_store.get_run(conn, run_id)
        if run is None:
            raise NotFound(f"no runbook run {run_id}")
        # The detail also shows what the templates saw: the alert, incident and CI.
        return json_response({**run_json(run), "context": run.context})

    async def approve(self, request: web.Request) -> web.Response:
        run_id = _run_id(request)
        body = await params.json_body(request, ActorBody, limit=_BODY_LIMIT, required=False)
        async with self._store.write() as conn:
            run = await self._triggers.approve(conn, run_id, actor=body.actor,
                                               now=self._clock.now())
        self._wake_if(run)
        return json_response(run_json(run))

    async def deny(self, request: web.Request) -> web.Response:
        run_id = _run_id(request)
        body = await params.json_body(request, ActorBody, limit=_BODY_LIMIT, required=False)
        async with self._store.write() as conn:
            run = await self._triggers.deny(conn, run_id, actor=body.actor,
                                            now=self._clock.now())
        return json_response(run_json(run))

    def _wake_if(self, run: RunView) -> None:
        """A queued run starts now rather than at the executor's next poll."""
        if run.status == run_store.QUEUED and self._wake is not None:
            self._wake()


def _run_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    value = params.number(raw)
    if value is None:
        raise NotFound(f"no runbook run {raw!r}")
    return value


def _statuses(raw: str | None) -> list[str] | None:
    """`status=pending_approval,queued`."""
    if not raw:
        return None
    wanted = raw.split(",")
    for status in wanted:
        if status not in run_store.STATUSES:
            raise params.bad("status", f"unknown status {status!r}; use "
                                       f"{', '.join(run_store.STATUSES)}")
    return wanted






# -- the OpenAPI document ------------------------------------------------------------

# Request bodies, by the schema name the paths below refer to.
OPENAPI_MODELS: dict[str, type[BaseModel]] = {
    "RunbookRunRequest": RunBody,
    "RunbookActor": ActorBody,
    "RunbookKillSwitch": KillSwitchBody,
}


def openapi_paths(error: dict[str, Any]) -> dict[str, Any]:
    """This module's paths for `daemon.api.openapi.document` (`error`: its Error response)."""

    def op(summary: str, ok: str, *, body: str | None = None, required: bool = False,
           codes: tuple[str, ...] = ("400",), method: str = "post") -> dict[str, Any]:
        spec: dict[str, Any] = {"summary": summary, "security": [{"apiToken": []}],
                                "responses": {ok: {"description": "OK"},
                                              **dict.fromkeys(codes, error)}}
        if body is not None:
            spec["requestBody"] = {"required": required, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{body}"}}}}
        return {method: spec}

    return {
        "/api/v1/runbooks": op("The runbook catalog, each with its guards and breaker state, "
                               "and the kill switch", "200", method="get", codes=()),
        "/api/v1/runbooks/disable-all": op("Kill switch on: every new run is skipped", "200",
                                           body="RunbookKillSwitch"),
        "/api/v1/runbooks/enable-all": op("Kill switch off", "200", body="RunbookKillSwitch"),
        "/api/v1/runbooks/{name}/enable": op("Enable a runbook: close its circuit breaker",
                                             "200", body="RunbookActor",
                                             codes=("400", "404")),
        "/api/v1/runbooks/{name}/run": op(
            "Run a runbook on an incident now (approval, rate limit, breaker and kill "
            "switch still apply)", "201", body="RunbookRunRequest", required=True,
            codes=("400", "404", "409")),
        "/api/v1/runbook-runs": op("List runbook runs, newest first (filters: status, "
                                   "incident, runbook)", "200", method="get"),
        "/api/v1/runbook-runs/{id}": op("One run: each step's rendered input, output and "
                                        "timing", "200", method="get", codes=("404",)),
        "/api/v1/runbook-runs/{id}/approve": op("Approve a run waiting for approval", "200",
                                                body="RunbookActor",
                                                codes=("400", "404", "409")),
        "/api/v1/runbook-runs/{id}/deny": op("Deny a run waiting for approval", "200",
                                             body="RunbookActor", codes=("400", "404", "409")),
    }
