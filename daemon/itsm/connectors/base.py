"""The one small interface every ITSM suite connector implements, and its HTTP helper.

A connector knows one suite's API: how to find the ticket of an incident by our
correlation id, create one, update it (acknowledge, reopen, priority), add a work
note, resolve it, and how to read the suite's own updates posted back to us. It
holds no state of its own beyond caches: the sync engine (`sync.py`) decides what
to call for each outbox event, and the store keeps the ticket id.

Failures are `ConnectorError`s that say whether another attempt could succeed and
when (`Retry-After`); the outbox sender turns them into retries or dead letters.
"""

from __future__ import annotations

import abc
import base64
import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from daemon import __version__
from daemon.config import ConfigError, ConnectorAuth
from daemon.itsm.replies import parse_retry_after, read_capped
from daemon.models import ConfigurationItem
from daemon.secrets import resolve

_ERROR_CHARS = 300
_BODY_BYTES = 1024 * 1024  # a suite's answer larger than this is not one we asked for
_RETRYABLE_STATUS = frozenset({408, 429})


class ConnectorError(Exception):
    """One call to the suite failed; `retryable` says whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Ticket:
    """A ticket in the suite: its id (sys_id, issue id), human key (number, issue key)."""

    id: str
    key: str | None = None
    url: str | None = None


class Change(enum.StrEnum):
    """What `update_ticket` is asked to carry over."""

    ACKNOWLEDGE = "acknowledge"
    REOPEN = "reopen"
    PRIORITY = "priority"


@dataclass(frozen=True, slots=True, kw_only=True)
class EventView:
    """One outbox event as a connector sees it: the event, the incident snapshot taken
    when it happened, its root-cause CI from the CMDB, and the event said in one line."""

    payload: Mapping[str, Any]  # the outbox row's payload: {"event": {...}}
    ci: ConfigurationItem | None
    note: str

    @property
    def event(self) -> Mapping[str, Any]:
        event: Mapping[str, Any] = self.payload["event"]
        return event

    @property
    def type(self) -> str:
        return str(self.event["event_type"])

    @property
    def id(self) -> str:
        return str(self.event["id"])

    @property
    def incident(self) -> Mapping[str, Any]:
        incident: Mapping[str, Any] = self.event["incident"]
        return incident

    @property
    def key(self) -> str:
        return str(self.incident["key"])

    def context(self) -> dict[str, Any]:
        """What templates see."""
        ci = None
        if self.ci is not None:
            ci = {"id": self.ci.id, "name": self.ci.name, "type": self.ci.type,
                  "service": self.ci.service, "owner_group": self.ci.owner_group,
                  "criticality": self.ci.criticality, "environment": self.ci.environment,
                  "attributes": dict(self.ci.attributes)}
        event = {k: v for k, v in self.event.items() if k not in ("incident", "actions")}
        return {"incident": dict(self.incident), "event": event, "ci": ci, "note": self.note}


@dataclass(frozen=True, slots=True, kw_only=True)
class InboundUpdate:
    """One thing a person did in the suite, to be done to the incident.

    `action`: acknowledge, resolve, reopen, or note (a comment, a re-assignment).
    The ticket is named by the suite's id or key; `incident` is our id when the
    suite also sent our correlation id. `ref` makes a replayed note harmless.
    """

    action: str
    user: str
    note: str | None = None
    ticket_id: str | None = None
    ticket_key: str | None = None
    incident: int | None = None
    ref: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class Connector(abc.ABC):
    """One configured suite."""

    # True when creating is itself the delivery of the event (the generic connector
    # posts the event; a suite's create only opens the ticket).
    create_delivers_event = False

    def __init__(self, name: str, *, url: str, auth: ConnectorAuth | None,
                 rate_limit_per_minute: int, ignore_users: Sequence[str] = (),
                 headers: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.url = url
        self.rate_limit_per_minute = rate_limit_per_minute
        self.ignore_users = frozenset(u.lower() for u in ignore_users)
        self._auth = auth
        self._headers = dict(headers or {})

    def http(self, session: aiohttp.ClientSession, *, timeout: float,
             now: Callable[[], datetime]) -> Http:
        """The HTTP helper for one delivery, with this connector's base URL and auth."""
        headers = dict(self._headers)
        try:
            authorization = auth_header(self.name, self._auth)
            hidden = self.secrets()
        except ConfigError as err:  # a secret file unreadable now; it may be fixed
            raise ConnectorError(f"{self.name}: {err.problems[0]}", retryable=True) from None
        if authorization:
            headers["Authorization"] = authorization
        return Http(session, name=self.name, base_url=self.url, headers=headers,
                    timeout=timeout, now=now, hidden=hidden)

    def secrets(self) -> list[str]:
        """Every secret value this connector sends: kept out of errors and logs."""
        auth = self._auth
        refs = [] if auth is None else [auth.bearer, auth.basic.password if auth.basic else None]
        return [v for v in (resolve(r) for r in refs if r is not None) if v]

    @abc.abstractmethod
    async def find_ticket(self, http: Http, event: EventView) -> Ticket | None:
        """The ticket already made for the incident (by our correlation id), if any."""

    @abc.abstractmethod
    async def create_ticket(self, http: Http, event: EventView) -> Ticket | None:
        """Make the ticket; None when the suite names none (generic without an id)."""

    @abc.abstractmethod
    async def update_ticket(self, http: Http, ticket: Ticket, event: EventView,
                            change: Change) -> None:
        """Carry over an acknowledgement, a reopening or a new priority."""

    @abc.abstractmethod
    async def add_work_note(self, http: Http, ticket: Ticket, event: EventView) -> None:
        """Record the event on the ticket (a work note, a comment)."""

    @abc.abstractmethod
    async def close_ticket(self, http: Http, ticket: Ticket, event: EventView) -> None:
        """Resolve the ticket."""

    @abc.abstractmethod
    def parse_inbound(self, body: bytes, headers: Mapping[str, str]) -> list[InboundUpdate]:
        """The suite's update, as the moves to make (`InvalidInput` when malformed)."""

    def ignored(self, user: str) -> bool:
        """An update made by the integration's own account (our own change coming back)."""
        return user.lower() in self.ignore_users


# -- HTTP ---------------------------------------------------------------------------


def auth_header(name: str, auth: ConnectorAuth | None) -> str | None:
    """The `Authorization` value; ConnectorError when its secret has no value."""
    if auth is None:
        return None
    if auth.bearer is not None:
        token = resolve(auth.bearer)
        if not token:
            raise ConnectorError(f"{name}: the bearer token ({auth.bearer.describe()}) has no "
                                 "value", retryable=False)
        return f"Bearer {token}"
    assert auth.basic is not None
    password = resolve(auth.basic.password)
    if not password:
        raise ConnectorError(f"{name}: the password ({auth.basic.password.describe()}) has "
                             "no value", retryable=False)
    pair = f"{auth.basic.username}:{password}".encode()
    return "Basic " + base64.b64encode(pair).decode()


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    headers: Mapping[str, str]

    def json(self) -> Any:
        if not self.body:
            return None
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            raise ConnectorError(f"the answer ({self.status}) is not JSON", retryable=True,
                                 status=self.status) from None


class Http:
    """Requests to one suite within one delivery: auth, JSON, and every failure as a
    `ConnectorError` (network error, timeout, 408/429/5xx retryable; other 4xx not)."""

    def __init__(self, session: aiohttp.ClientSession, *, name: str, base_url: str,
                 headers: Mapping[str, str], timeout: float, now: Callable[[], datetime],
                 hidden: Sequence[str] = ()) -> None:
        self._session = session
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._headers = {"User-Agent": f"incidentd/{__version__}",
                         "Accept": "application/json"} | dict(headers)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._now = now
        self._hidden = [h for h in hidden if h]

    async def call(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
                   json: Any = None, data: bytes | None = None,
                   headers: Mapping[str, str] | None = None) -> Reply:
        url = path if path.startswith(("http://", "https://")) else self.base_url + path
        sent = dict(self._headers) | dict(headers or {})
        body = data
        if json is not None:
            body = orjson.dumps(json)
            sent["Content-Type"] = "application/json"
        try:
            async with self._session.request(method, url, params=params, data=body,
                                             headers=sent, allow_redirects=False,
                                             timeout=self._timeout) as resp:
                reply = Reply(resp.status, await read_capped(resp, _BODY_BYTES), dict(resp.headers))
        except TimeoutError:
            raise ConnectorError(f"{self.name}: {method} {_path(path)} timed out",
                                 retryable=True) from None
        except (aiohttp.ClientError, OSError) as err:
            reason = self.redact(f"{type(err).__name__}: {err}")[:_ERROR_CHARS]
            raise ConnectorError(f"{self.name}: {method} {_path(path)} failed: {reason}",
                                 retryable=True) from None
        if 200 <= reply.status < 300:
            return reply
        raise self._refused(method, path, reply)

    def _refused(self, method: str, path: str, reply: Reply) -> ConnectorError:
        text = self.redact(reply.body.decode("utf-8", "replace").strip())[:_ERROR_CHARS]
        retryable = reply.status in _RETRYABLE_STATUS or reply.status >= 500
        after = parse_retry_after(reply.headers.get("Retry-After"), self._now())
        return ConnectorError(f"{self.name}: {method} {_path(path)} answered {reply.status}: "
                              f"{text}", retryable=retryable, status=reply.status,
                              retry_after=after)

    def redact(self, text: str) -> str:
        for value in self._hidden:
            text = text.replace(value, "<secret>")
        return text


def _path(path: str) -> str:
    """The path alone: no host (a tool's URL may hold a token) and no query (it may
    carry names from the incident)."""
    return urlsplit(path).path or "/"


def text_of(value: Any, limit: int = 10_000) -> str | None:
    """A free-text value from a suite's JSON, cut to a sane length (None when empty)."""
    if value is None:
        return None
    text = str(value).strip()
    return text[:limit] if text else None
