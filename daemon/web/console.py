"""Installs the console on the daemon's app: templates, static files, sign-in, the
session gate in front of every `/ui/` page, the event stream and every page module."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware
from yarl import URL

from daemon.api.auth import ApiGuard
from daemon.api.responses import Handler, error_response
from daemon.api.session import SESSION_KEY
from daemon.errors import UserError
from daemon.store import StoreUnavailable
from daemon.web import changes, cmdb, incident_page, incidents, problems, reports
from daemon.web.deps import ConsoleDeps
from daemon.web.events import EventStream
from daemon.web.render import render, setup_templates
from daemon.web.signin import SignIn

log = structlog.get_logger("incidentd.web")

STATIC = Path(__file__).parent / "static"
PAGES = (incidents, incident_page, cmdb, changes, problems, reports)
_SIGN_IN = "/ui/sign-in"
_PUBLIC = (_SIGN_IN, "/ui/sign-out")
# Live parts fetched by the page's script: a 401 it can act on, not a redirect.
_FRAGMENT = re.compile(r"^/ui/(events|.+/(rows|live))$")
_STATIC_FILE = re.compile(r"^[A-Za-z0-9_-]+\.(css|js|svg|png|ico)$")
_TYPES = {"css": "text/css", "js": "text/javascript", "svg": "image/svg+xml",
          "png": "image/png", "ico": "image/x-icon"}
# Pages load only their own files; style attributes and <style> blocks are allowed
# (a page may need a small one), scripts only from /ui/static/.
_SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; "
                                "style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                                "connect-src 'self'; base-uri 'none'; form-action 'self'; "
                                "frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def setup_console(app: web.Application, deps: ConsoleDeps, *, guard: ApiGuard) -> EventStream:
    """Everything under `/ui/`, and `/` sending browsers there. Call before the app
    starts (it adds a middleware). Returns the event stream (ended on shutdown)."""
    setup_templates(app, deps.clock)
    stream = EventStream(store=deps.store)
    signin = SignIn(guard=guard)
    app.middlewares.append(_gate(guard))
    app.add_routes([
        web.get("/", _home, allow_head=False),
        web.get("/ui/static/{file}", _static, allow_head=False),
        web.get("/ui/events", stream.handle, allow_head=False),
        *signin.routes(),
    ])
    for module in PAGES:
        app.add_routes(module.routes(deps))
    app.on_shutdown.append(stream.close)
    return stream


async def _home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/ui/incidents")


async def _static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["file"]
    if not _STATIC_FILE.match(name) or not (STATIC / name).is_file():
        raise web.HTTPNotFound()
    body = await asyncio.to_thread((STATIC / name).read_bytes)
    return web.Response(body=body, content_type=_TYPES[name.rsplit(".", 1)[1]],
                        headers={"Cache-Control": "no-cache"})


def _gate(guard: ApiGuard) -> Middleware:
    """Every `/ui/` page needs a valid session (sign-in and static files excepted):
    pages send the browser to sign in, fragments and the stream answer 401."""

    @web.middleware
    async def gate(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if not path.startswith("/ui/"):
            return await handler(request)
        static = path.startswith("/ui/static/")
        try:
            # Static files need no session: no sign-out lookup for them.
            session = None if static else await guard.session(request)
        except StoreUnavailable:
            # Whether the session was signed out cannot be told: neither signed in
            # nor sent to sign in, but the outage page (the sign-in form still shows).
            if path != _SIGN_IN:
                return _secured(_store_away(request))
            session = None
        if session is not None:
            request[SESSION_KEY] = session
        elif not (path in _PUBLIC or static):
            if _FRAGMENT.match(path):
                return error_response(401, "unauthorized", "sign in again",
                                      headers={"Cache-Control": "no-store"})
            return _to_sign_in(request)
        return _secured(await _page(request, handler))

    return gate


def _secured(response: web.StreamResponse) -> web.StreamResponse:
    response.headers.update({k: v for k, v in _SECURITY_HEADERS.items()
                             if k not in response.headers})
    return response


def _store_away(request: web.Request) -> web.StreamResponse:
    """The database is away: a page says so, a fragment or the stream get the API's
    JSON 503; the browser may try again in a few seconds."""
    log.warning("store unavailable", path=request.path)
    if _FRAGMENT.match(request.path):
        return error_response(503, "store_unavailable", "database unavailable; retry later",
                              headers={"Retry-After": "5", "Cache-Control": "no-store"})
    response = render(request, "error.html", {
        "status": 503, "message": "The database is unavailable; try again shortly."},
        status=503)
    response.headers["Retry-After"] = "5"
    return response


def _to_sign_in(request: web.Request) -> web.Response:
    target = request.rel_url.path_qs if request.method == "GET" else "/ui/incidents"
    location = str(URL("/ui/sign-in").with_query(next=target))
    return web.Response(status=303, headers={"Location": location,
                                             "Cache-Control": "no-store"})


async def _page(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A user's mistake (an unknown incident, a bad filter) or an away database on a
    page is told as a page; fragments and the stream keep the API's JSON errors."""
    if _FRAGMENT.match(request.path) or request.method != "GET":
        return await handler(request)
    try:
        return await handler(request)
    except UserError as err:
        return render(request, "error.html", {"status": err.status, "message": err.message},
                      status=err.status)
    except StoreUnavailable:
        return _store_away(request)
    except web.HTTPNotFound:
        return render(request, "error.html", {"status": 404, "message": "No such page."},
                      status=404)
