"""The admin API token guard for `/api/v1/*` (alert ingest has its own per-integration auth)."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Middleware

from daemon.api.responses import Handler
from daemon.receivers.auth import Credentials

_INGEST_PREFIX = "/api/v1/alerts/"
_PROTECTED_PREFIX = "/api/v1/"


def api_token_middleware(credentials: Credentials) -> Middleware:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path.startswith(_PROTECTED_PREFIX) and not path.startswith(_INGEST_PREFIX):
            credentials.check(request.headers.get("Authorization"))
        return await handler(request)

    return guard
