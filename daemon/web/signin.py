"""Sign-in (an API token for a session cookie) and sign-out."""

from __future__ import annotations

import time

import structlog
from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from daemon.api.auth import ApiGuard
from daemon.api.session import (
    NAME_MAX,
    SESSION_KEY,
    clean_name,
    clear_cookie,
    csrf_ok,
    same_origin,
    set_cookie,
)
from daemon.store import StoreUnavailable
from daemon.web.render import render

log = structlog.get_logger("incidentd.web")

HOME = "/ui/incidents"
_FORM_LIMIT = 16 * 1024


class RateLimit:
    """A token bucket per client address: `burst` attempts at once, refilled at
    `per_minute`. In memory and per replica: it slows guessing, it is not a lockout."""

    def __init__(self, *, burst: int = 10, per_minute: float = 10.0,
                 max_clients: int = 10_000) -> None:
        self._burst = float(burst)
        self._rate = per_minute / 60.0
        self._max = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}  # address → (tokens, at)

    def allow(self, client: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        tokens, at = self._buckets.get(client, (self._burst, now))
        tokens = min(self._burst, tokens + (now - at) * self._rate)
        if len(self._buckets) >= self._max and client not in self._buckets:
            self._forget_full(now)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            return False
        self._buckets[client] = (tokens - 1.0, now)
        return True

    def _forget_full(self, now: float) -> None:
        """Drop clients whose bucket has refilled: they are no different from new ones."""
        refill = self._burst / self._rate
        self._buckets = {c: v for c, v in self._buckets.items() if now - v[1] < refill}
        if len(self._buckets) >= self._max:  # a flood of addresses: start afresh
            self._buckets.clear()


class SignIn:
    def __init__(self, *, guard: ApiGuard, limit: RateLimit | None = None) -> None:
        self.guard = guard
        self.limit = limit or RateLimit()

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/ui/sign-in", self.form, allow_head=False),
                web.post("/ui/sign-in", self.sign_in),
                web.post("/ui/sign-out", self.sign_out)]

    async def form(self, request: web.Request) -> web.StreamResponse:
        next_path = safe_next(request.query.get("next"))
        return render(request, "sign_in.html", {"next": next_path, "error": None,
                                                "name_max": NAME_MAX, "name": ""})

    async def sign_in(self, request: web.Request) -> web.StreamResponse:
        client = request.remote or "unknown"
        if not same_origin(request):
            return _refused(request, 403, "This form must be sent from this site.", HOME)
        if not self.limit.allow(client):
            log.info("console sign-in rate-limited", client=client)
            response = _refused(request, 429, "Too many sign-in attempts; wait a minute.",
                                HOME)
            response.headers["Retry-After"] = "60"
            return response
        form = await _form(request)
        next_path = safe_next(form.get("next"))
        token = str(form.get("token") or "").strip()
        access = self.guard.access
        sessions = self.guard.sessions
        scope = (sessions.scope_of(token, access.admin, access.read_only)
                 if sessions is not None and token else None)
        if scope is None or sessions is None:
            log.info("console sign-in refused", client=client)
            return _refused(request, 401, "That token is not valid.", next_path,
                            name=form.get("name"))
        raw_name = form.get("name")
        try:
            name = clean_name(raw_name if isinstance(raw_name, str) else None)
        except ValueError as err:
            return _refused(request, 400, str(err), next_path, field="name", name=raw_name)
        value, session = sessions.issue(scope, token, name)
        log.info("console sign-in", client=client, scope=scope)
        response = web.Response(status=303, headers={"Location": next_path,
                                                     "Cache-Control": "no-store"})
        set_cookie(response, request, value, session)
        return response

    async def sign_out(self, request: web.Request) -> web.StreamResponse:
        session = request.get(SESSION_KEY)
        if session is not None:
            form = await _form(request)
            given = form.get("csrf_token")
            if not csrf_ok(session, given if isinstance(given, str) else None) \
                    or not same_origin(request):
                return render(request, "error.html", {
                    "status": 403, "message": "Sign-out refused: reload the page and "
                    "try again."}, status=403)
            sessions = self.guard.sessions
            try:
                # Recorded for every replica: a copy of the cookie opens nothing now.
                if sessions is not None:
                    await sessions.revoke(session)
            except StoreUnavailable:
                log.warning("console sign-out not recorded: store unavailable")
                response = render(request, "error.html", {
                    "status": 503, "message": "The database is unavailable, so signing "
                    "out could not be recorded; try again shortly."}, status=503)
                response.headers["Retry-After"] = "5"
                return response
            log.info("console sign-out", client=request.remote or "unknown")
        response = web.Response(status=303, headers={"Location": "/ui/sign-in",
                                                     "Cache-Control": "no-store"})
        clear_cookie(response, request)
        return response


def safe_next(raw: str | object | None) -> str:
    """Where to go after signing in: a local `/ui/` path only, never another site
    (`//evil.example`, `http://…`, `/\\evil`)."""
    if not isinstance(raw, str) or not raw.startswith("/ui/") or len(raw) > 2000:
        return HOME
    if "\\" in raw or "//" in raw or any(ord(c) < 33 or ord(c) == 127 for c in raw):
        return HOME
    if raw.startswith("/ui/sign-"):
        return HOME
    return raw


async def _form(request: web.Request) -> MultiDictProxy[str | bytes | bytearray | web.FileField]:
    if request.content_length is not None and request.content_length > _FORM_LIMIT:
        raise web.HTTPRequestEntityTooLarge(max_size=_FORM_LIMIT,
                                            actual_size=request.content_length)
    if request.content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return MultiDictProxy(MultiDict())
    return await request.post()


def _refused(request: web.Request, status: int, message: str, next_path: str, *,
             field: str = "token", name: object = None) -> web.Response:
    """The form again with `message`; the field it is about is marked invalid. The
    name typed is given back (never the token)."""
    return render(request, "sign_in.html", {
        "next": next_path, "error": message, "error_field": field, "name_max": NAME_MAX,
        "name": name[:1000] if isinstance(name, str) else ""}, status=status)
