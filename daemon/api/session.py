"""Console sessions: an API token exchanged for a signed cookie.

The cookie value is `payload.signature`, both base64url: the payload names the scope
("admin" or "read"), the expiry (Unix seconds), a fingerprint of the token that
signed in, a random nonce (the session's id) and the name the user gave (shown as
the actor of what they do); the signature is HMAC-SHA256 over the payload with the
session secret. Sessions work across replicas that share the secret. A session is
valid only while its token is still configured for its scope: the fingerprint is
checked against the tokens of the configuration in force, so a token removed by a
reload ends the sessions it opened. The one thing kept on the server is sign-outs
(`daemon.store.sessions`, in the shared database): a signed-out session's id is
refused until its cookie would have expired, so a copy of the cookie opens nothing.
That costs one primary-key lookup per console request; Bearer-token API calls never
pay it. The CSRF token is an HMAC of the cookie value: bound to the session, it needs
no cookie of its own.

Here, below the web layer, so that the API guard can admit the cookie too.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from aiohttp import web

from daemon.clock import Clock
from daemon.models import person_actor
from daemon.receivers.auth import Credentials
from daemon.sealed import b64url, seal, unseal
from daemon.store import Store
from daemon.store import sessions as signouts

COOKIE = "incidentd_session"
# The seal's domain: the same bytes `_sign(secret, "session", ...)` used to prefix.
_SESSION_DOMAIN = b"session\x00"
CSRF_HEADER = "X-CSRF-Token"
Scope = Literal["admin", "read"]
_SCOPES: tuple[Scope, ...] = ("admin", "read")
NAME_MAX = 64
# The actor of a change made from the console by someone who gave no name.
CONSOLE_ACTOR = "console"


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """A signed-in console user: what `request[SESSION_KEY]` holds."""

    scope: Scope
    expires_at: datetime
    csrf_token: str
    session_id: str = ""  # the payload's nonce; what a sign-out records
    name: str | None = None  # as given at sign-in, checked by `clean_name`

    @property
    def can_change(self) -> bool:
        return self.scope == "admin"

    @property
    def actor(self) -> str:
        """Who the timeline says did what this session changes."""
        return f"{self.name} ({CONSOLE_ACTOR})" if self.name else CONSOLE_ACTOR


def clean_name(raw: str | None) -> str | None:
    """The name given at sign-in, trimmed; None when blank. ValueError (a message for
    the user) when too long, not printable, or one only incidentd itself may use."""
    name = (raw or "").strip()
    if not name:
        return None
    if len(name) > NAME_MAX:
        raise ValueError(f"Your name can be at most {NAME_MAX} characters.")
    if not name.isprintable():
        raise ValueError("Your name can hold only printable characters.")
    try:
        person_actor(f"{name} ({CONSOLE_ACTOR})")
    except ValueError:
        raise ValueError("That name is reserved for incidentd itself.") from None
    return name


@dataclass(frozen=True, slots=True)
class SessionSettings:
    secret: str
    hours: float


class Sessions:
    """Issues and checks session cookies; a configuration reload replaces the settings."""

    def __init__(self, settings: SessionSettings, *, clock: Clock,
                 store: Store | None = None) -> None:
        self.settings = settings
        self._clock = clock
        # Where sign-outs are kept; None (tools, unit tests): sign-out only clears
        # the browser's cookie.
        self._store = store

    def reconfigure(self, settings: SessionSettings) -> None:
        self.settings = settings

    def scope_of(self, token: str, admin: Credentials, read_only: Credentials | None
                 ) -> Scope | None:
        """Which scope a token signs in with, or None. Every token is compared in
        constant time whatever matches first."""
        admin_ok = _any_equal(token, admin.bearer)
        read_ok = read_only is not None and _any_equal(token, read_only.bearer)
        return "admin" if admin_ok else "read" if read_ok else None

    def issue(self, scope: Scope, token: str, name: str | None = None
              ) -> tuple[str, ConsoleSession]:
        """A new cookie value and its session; `name` as `clean_name` returned it."""
        settings = self.settings  # one secret for the whole cookie
        expires = self._clock.now().astimezone(UTC) + timedelta(hours=settings.hours)
        nonce = secrets.token_hex(8)
        # The name goes last: `verify` splits off four fields, so it may hold "|".
        payload = "|".join((scope, str(int(expires.timestamp())),
                            _fingerprint(settings.secret, token), nonce, name or ""))
        value = seal(settings.secret.encode(), payload.encode(), domain=_SESSION_DOMAIN)
        return value, self._session(settings.secret, scope, expires, value, nonce, name)

    async def verify(self, value: str | None, admin: Credentials,
                     read_only: Credentials | None) -> ConsoleSession | None:
        """The session of a cookie value, or None: forged, expired, its token gone, or
        signed out. `StoreUnavailable` when the sign-outs cannot be read: the caller
        answers as for any database outage (neither signed in nor out)."""
        session = self.check(value, admin, read_only)
        if session is None or self._store is None:
            return session
        async with self._store.read() as conn:
            if await signouts.is_revoked(conn, session.session_id):
                return None
        return session

    def check(self, value: str | None, admin: Credentials, read_only: Credentials | None
              ) -> ConsoleSession | None:
        """The cookie's own checks, without the database: signature, expiry, token."""
        if not value or value.count(".") != 1 or len(value) > 1024:
            return None
        settings = self.settings
        payload = unseal(settings.secret.encode(), value, domain=_SESSION_DOMAIN)
        if payload is None:
            return None
        try:
            # Four fields in cookies from before names were asked for, five since.
            scope_raw, expiry_raw, fingerprint, nonce, *rest = (
                payload.decode().split("|", 4))
            expires = datetime.fromtimestamp(int(expiry_raw), UTC)
        except (ValueError, UnicodeDecodeError):
            return None
        scope = next((s for s in _SCOPES if s == scope_raw), None)
        if scope is None or expires <= self._clock.now():
            return None
        tokens = admin.bearer if scope == "admin" else (read_only.bearer if read_only else ())
        current = tuple(_fingerprint(settings.secret, t) for t in tokens)
        if not _any_equal(fingerprint, current):
            return None
        return self._session(settings.secret, scope, expires, value, nonce,
                             rest[0] if rest and rest[0] else None)

    async def revoke(self, session: ConsoleSession) -> None:
        """Sign `session` out on every replica (`StoreUnavailable` if it cannot be kept)."""
        if self._store is None:
            return
        async with self._store.write() as conn:
            await signouts.revoke(conn, session.session_id, session.expires_at,
                                  now=self._clock.now())

    @staticmethod
    def _session(secret: str, scope: Scope, expires: datetime, value: str, session_id: str,
                 name: str | None) -> ConsoleSession:
        csrf = b64url(_sign(secret, "csrf", value))
        return ConsoleSession(scope=scope, expires_at=expires, csrf_token=csrf,
                              session_id=session_id, name=name)


def csrf_ok(session: ConsoleSession, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(given.encode(),
                                                     session.csrf_token.encode())


def is_tls(request: web.Request) -> bool:
    """Whether the client reached us over TLS: directly, or through a proxy that says so."""
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.secure or forwarded == "https"


def same_origin(request: web.Request) -> bool:
    """An `Origin` header, when sent, must name this host (a cross-site form or fetch
    carries the other site's origin). Behind a proxy that rewrites `Host`, the host it
    forwards (`X-Forwarded-Host`) counts too: a cross-site page cannot set that header
    without a CORS preflight, which this daemon never grants."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    scheme, sep, rest = origin.partition("://")
    hosts = {request.headers.get("Host", ""),
             request.headers.get("X-Forwarded-Host", "").split(",")[0].strip()} - {""}
    return bool(sep) and scheme in ("http", "https") and rest in hosts


def set_cookie(response: web.StreamResponse, request: web.Request, value: str,
               session: ConsoleSession) -> None:
    response.set_cookie(COOKIE, value, path="/", httponly=True, samesite="Strict",
                        secure=is_tls(request), expires=_http_date(session.expires_at))


def clear_cookie(response: web.StreamResponse, request: web.Request) -> None:
    response.del_cookie(COOKIE, path="/", httponly=True, samesite="Strict",
                        secure=is_tls(request))


def _http_date(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")


def _fingerprint(secret: str, token: str) -> str:
    # Keyed: a cookie read off a screen tells nothing about the token.
    return _sign(secret, "token", token)[:16].hex()


def _sign(secret: str, purpose: str, message: str) -> bytes:
    return hmac.new(secret.encode(), f"{purpose}\x00{message}".encode(), hashlib.sha256).digest()


def _any_equal(given: str, accepted: tuple[str, ...]) -> bool:
    matched = False
    for candidate in accepted:
        matched |= hmac.compare_digest(given.encode(), candidate.encode())
    return matched


# Where the guard (API) and the page gate (console) leave the request's session.
SESSION_KEY = web.RequestKey("console_session", ConsoleSession)
