"""The admin API token guard for `/api/v1/*` (alert ingest has its own per-integration auth)."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Middleware

from daemon.api.responses import Handler
from daemon.errors import Forbidden
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


_READS = ("GET", "HEAD")


def api_token_middleware(admin: Credentials, read_only: Credentials | None = None, *,
                         protect_metrics: bool = False) -> Middleware:
    """Admin tokens open everything; read-only tokens open reads (GET) only."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        guarded = (path.startswith(_PROTECTED_PREFIX) and not _is_ingest(request)
                   and path != "/api/v1/openapi.json") or (protect_metrics and path == "/metrics")
        if guarded:
            _admit(request, admin, read_only)
        return await handler(request)

    return guard


def _admit(request: web.Request, admin: Credentials, read_only: Credentials | None) -> None:
    authorization = request.headers.get("Authorization")
    if admin.admits(authorization):
        return
    if read_only is not None and read_only.admits(authorization):
        if request.method not in _READS:
            raise Forbidden("this token is read-only; changes need an admin token")
        return
    admin.check(authorization)  # 401, saying whether the header was missing or wrong
