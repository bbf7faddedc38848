"""`/healthz` (alive), `/readyz` (store reachable, schema current, not draining), `/metrics`."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from daemon.api.openapi import document
from daemon.api.responses import json_response
from daemon.metrics import REGISTRY
from daemon.store import Store, StoreUnavailable, migrate


class HealthRoutes:
    def __init__(self, *, store: Store) -> None:
        self._store = store
        self.draining = False

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/healthz", self.healthz),
            web.get("/readyz", self.readyz),
            web.get("/metrics", self.metrics),
            web.get("/api/v1/openapi.json", self.openapi),
        ]

    async def healthz(self, _: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def readyz(self, _: web.Request) -> web.Response:
        problems: list[str] = []
        if self.draining:
            problems.append("shutting down")
        try:
            if not await migrate.is_current(self._store):
                problems.append("database schema is not current; run `incidentd migrate`")
        except StoreUnavailable as err:
            problems.append(f"database unreachable: {err}")
        if problems:
            return json_response({"status": "unavailable", "problems": problems}, status=503)
        return json_response({"status": "ready"})

    async def openapi(self, _: web.Request) -> web.Response:
        return json_response(document())

    async def metrics(self, _: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest(REGISTRY))
        resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        resp.charset = "utf-8"
        return resp
