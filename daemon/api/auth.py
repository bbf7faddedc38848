"""The admin API token guard for `/api/v1/*` (alert ingest has its own per-integration auth)."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Middleware

from daemon.api.responses import Handler
from daemon.receivers.auth import Credentials

_PROTECTED_PREFIX = "/api/v1/"


# Signed by their senders instead (Slack's signing secret, the inbound webhook's
# HMAC); `/actions/{token}` links are outside /api/ and carry their own signature.
_SIGNED = ("/api/v1/integrations/slack/actions", "/api/v1/webhooks/actions")


def _is_ingest(request: web.Request) -> bool:
    """Alert ingestion authenticates per integration, not with the admin token;
    chat buttons and bots sign their requests."""
    path = request.path
    return request.method == "POST" and (
        path == "/api/v1/alerts" or path.startswith("/api/v1/alerts/") or path in _SIGNED
    )


def api_token_middleware(credentials: Credentials) -> Middleware:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if (request.path.startswith(_PROTECTED_PREFIX) and not _is_ingest(request)
                and request.path != "/api/v1/openapi.json"):
            credentials.check(request.headers.get("Authorization"))
        return await handler(request)

    return guard
