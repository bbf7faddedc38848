"""The admin API token guard for `/api/v1/*` and `/-/reload` (alert ingest has its own
per-integration auth).

The console's session cookie (`daemon.api.session`) stands in for a token: a request
without an `Authorization` header but with a valid cookie is admitted in the cookie's
scope. A cookie is sent by the browser on its own, so a change made with one must
also carry the session's CSRF token (`X-CSRF-Token`, which another site's page cannot
read) and, when the browser sends `Origin`, come from this host."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware

from daemon.api.responses import Handler
from daemon.api.session import (
    COOKIE,
    CSRF_HEADER,
    SESSION_KEY,
    ConsoleSession,
    Sessions,
    csrf_ok,
    same_origin,
)
from daemon.errors import Forbidden
from daemon.receivers.auth import Credentials

_PROTECTED_PREFIX = "/api/v1/"
# Outside /api/v1/ but admin-only all the same (Prometheus' and Alertmanager's name).
_ADMIN_PATHS = frozenset({"/-/reload"})


# Signed by their senders instead (Slack's signing secret, the inbound webhook's
# HMAC); `/actions/{token}` links are outside /api/ and carry their own signature.
_SIGNED = ("/api/v1/integrations/slack/actions", "/api/v1/webhooks/actions")
# ITSM suites post their updates with each connector's own credentials.
_CONNECTOR_UPDATES = ("/api/v1/connectors/", "/updates")


def _is_ingest(request: web.Request) -> bool:
    """Alert ingestion authenticates per integration, not with the admin token;
    chat buttons, bots and ITSM suites sign their requests."""
    path = request.path
    return request.method == "POST" and (
        path == "/api/v1/alerts" or path.startswith("/api/v1/alerts/") or path in _SIGNED
        or (path.startswith(_CONNECTOR_UPDATES[0]) and path.endswith(_CONNECTOR_UPDATES[1])
            and path.count("/") == 5)
    )


_READS = ("GET", "HEAD")


@dataclass(frozen=True, slots=True)
class ApiAccess:
    """Who may use the API: admin tokens, read-only tokens, and whether /metrics needs one."""

    admin: Credentials
    read_only: Credentials | None = None
    protect_metrics: bool = False


class ApiGuard:
    """The token guard; a configuration reload replaces its `access` whole."""

    def __init__(self, access: ApiAccess, sessions: Sessions | None = None) -> None:
        self.access = access
        self.sessions = sessions

    async def session(self, request: web.Request, access: ApiAccess | None = None
                      ) -> ConsoleSession | None:
        """The console session the request's cookie carries, if valid under `access`
        (default: the configuration in force) and not signed out. No cookie, no
        database lookup; `StoreUnavailable` when the sign-outs cannot be read."""
        value = request.cookies.get(COOKIE)
        if self.sessions is None or not value:
            return None
        access = access or self.access
        return await self.sessions.verify(value, access.admin, access.read_only)

    def reconfigure(self, access: ApiAccess) -> None:
        self.access = access

    def middleware(self) -> Middleware:
        """Admin tokens open everything; read-only tokens open reads (GET) only."""

        @web.middleware
        async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
            access = self.access  # read once: a request is judged by one configuration
            if _guarded(request, access.protect_metrics):
                # A Bearer token decides alone: API calls never pay the sign-out lookup.
                session = (await self.session(request, access)
                           if "Authorization" not in request.headers else None)
                if session is not None:
                    _admit_session(request, session)
                else:
                    _admit(request, access.admin, access.read_only)
            return await handler(request)

        return guard


def api_token_middleware(admin: Credentials, read_only: Credentials | None = None, *,
                         protect_metrics: bool = False) -> Middleware:
    """A guard whose tokens never change (tests, tools)."""
    return ApiGuard(ApiAccess(admin, read_only, protect_metrics)).middleware()


def _guarded(request: web.Request, protect_metrics: bool) -> bool:
    path = request.path
    return ((path.startswith(_PROTECTED_PREFIX) and not _is_ingest(request)
             and path != "/api/v1/openapi.json")
            or path in _ADMIN_PATHS or (protect_metrics and path == "/metrics"))


def _admit_session(request: web.Request, session: ConsoleSession) -> None:
    request[SESSION_KEY] = session
    if request.method in _READS:
        return
    if not csrf_ok(session, request.headers.get(CSRF_HEADER)):
        raise Forbidden(f"missing or wrong {CSRF_HEADER} header; reload the page")
    if not same_origin(request):
        raise Forbidden("cross-origin request refused")
    if not session.can_change:
        raise Forbidden("this session is read-only; changes need an admin token")


def _admit(request: web.Request, admin: Credentials, read_only: Credentials | None) -> None:
    authorization = request.headers.get("Authorization")
    if admin.admits(authorization):
        return
    if read_only is not None and read_only.admits(authorization):
        if request.method not in _READS:
            raise Forbidden("this token is read-only; changes need an admin token")
        return
    admin.check(authorization)  # 401, saying whether the header was missing or wrong
