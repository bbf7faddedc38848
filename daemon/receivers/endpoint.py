"""The HTTP face of the integrations: authenticate, read, parse, hand to the sink, answer.

Routes:
- `POST /api/v1/alerts/{name}`: any integration by name.
- `POST /api/v1/alerts`: the generic integrations; the credentials pick which.
- `POST /v2/enqueue`, `POST /v2/change/enqueue`: PagerDuty Events API v2;
  the body's `routing_key` picks the integration.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import orjson
from aiohttp import web

from daemon import metrics
from daemon.clock import Clock
from daemon.errors import (
    InvalidInput,
    NotFound,
    Overloaded,
    Unauthorized,
    UserError,
)
from daemon.models import AlertEvent, ChangeRecord
from daemon.receivers import Parser, pagerduty
from daemon.receivers.auth import Credentials, matches_any
from daemon.receivers.body import read_body
from daemon.receivers.normalize import Defaults
from daemon.receivers.validation import reject_nul


class AlertSink(Protocol):
    """Where parsed alerts go; returns once they are committed."""

    async def submit(self, alerts: Sequence[AlertEvent], *, overload_status: int) -> None: ...


class ChangeSink(Protocol):
    """Where change events go; returns once committed."""

    async def record(self, change: ChangeRecord) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Integration:
    """One configured integration, ready to take requests."""

    name: str
    type: str
    credentials: Credentials
    max_body_bytes: int
    defaults: Defaults
    parser: Parser | None = None  # None for pagerduty: its events are routed by key
    routing_keys: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Routing:
    """The integrations by the ways requests find them; replaced whole on a reload."""

    all: tuple[Integration, ...]
    by_name: Mapping[str, Integration]
    generic: tuple[Integration, ...]
    pagerduty: tuple[Integration, ...]

    @classmethod
    def of(cls, integrations: Sequence[Integration]) -> _Routing:
        return cls(all=tuple(integrations), by_name={i.name: i for i in integrations},
                   generic=tuple(i for i in integrations if i.type == "generic"),
                   pagerduty=tuple(i for i in integrations if i.type == "pagerduty"))


class Intake:
    def __init__(self, *, integrations: Sequence[Integration], alerts: AlertSink,
                 changes: ChangeSink, clock: Clock) -> None:
        self._routing = _Routing.of(integrations)
        self._alerts = alerts
        self._changes = changes
        self._clock = clock

    @property
    def integrations(self) -> tuple[Integration, ...]:
        return self._routing.all

    def reconfigure(self, integrations: Sequence[Integration]) -> None:
        """A configuration reload: requests from now on see only these integrations.

        Each handler reads the routing once, so a request in flight finishes with the
        integration it started with."""
        self._routing = _Routing.of(integrations)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/api/v1/alerts", self.generic),
            web.post("/api/v1/alerts/{integration}", self.named),
            web.post("/v2/enqueue", self.pagerduty_enqueue),
            web.post("/v2/change/enqueue", self.pagerduty_change),
        ]

    async def named(self, request: web.Request) -> web.StreamResponse:
        integration = self._routing.by_name.get(request.match_info["integration"])
        if integration is None:
            raise NotFound(f"no integration named {request.match_info['integration']!r}")
        if integration.type == "pagerduty":
            return await self._pagerduty_flow(request, [integration])
        return await self._flow(request, integration)

    async def generic(self, request: web.Request) -> web.StreamResponse:
        generic = self._routing.generic
        if not generic:
            raise NotFound("no generic integration is configured")
        limit = max(i.max_body_bytes for i in generic)
        body = await read_body(request, limit)
        for integration in generic:
            try:
                integration.credentials.check_request(request.headers, body)
            except Unauthorized:
                continue
            return await self._flow(request, integration, body=body)
        metrics.ALERTS_REJECTED.labels("generic", "unauthorized").inc()
        raise Unauthorized("credentials match no generic integration")

    async def _flow(self, request: web.Request, integration: Integration,
                    body: bytes | None = None) -> web.Response:
        assert integration.parser is not None
        source = integration.parser.source
        creds = integration.credentials
        signature = None
        try:
            if body is None:
                if not creds.needs_body:  # refuse a stranger before reading a large body
                    creds.check(request.headers.get("Authorization"))
                body = await read_body(request, integration.max_body_bytes)
            signature = creds.check_request(request.headers, body)
            reject_nul(body)
            events = integration.defaults.apply(integration.parser.parse(body))
            await self._alerts.submit(events, overload_status=503)
        except UserError as err:
            if signature is not None:
                creds.forget(signature)  # the sender's retry of a failed request is no replay
            metrics.ALERTS_REJECTED.labels(source, _reason(err)).inc()
            raise
        fingerprints = [e.fingerprint for e in events]
        status = 202 if integration.type == "generic" else 200
        return _json({"status": "success", "alerts": len(events), "fingerprints": fingerprints},
                     status)

    async def pagerduty_enqueue(self, request: web.Request) -> web.StreamResponse:
        return await self._pagerduty_flow(request, self._routing.pagerduty)

    async def _pagerduty_flow(self, request: web.Request,
                              candidates: Sequence[Integration]) -> web.Response:
        """PagerDuty answers in its own shape, and clients retry 429, so overload is 429."""
        try:
            body = await read_body(request, _pd_limit(candidates))
            reject_nul(body)
            event = pagerduty.parse_event(body)
            integration = _by_routing_key(candidates, event.routing_key)
            dedup_key = event.dedup_key or pagerduty.new_dedup_key()
            alert = pagerduty.to_event(event, integration=integration.name, dedup_key=dedup_key,
                                       clock=self._clock)
            await self._alerts.submit(integration.defaults.apply([alert]), overload_status=429)
        except UserError as err:
            metrics.ALERTS_REJECTED.labels(pagerduty.SOURCE, _reason(err)).inc()
            return _pd_error(err)
        return _json({"status": "success", "message": "Event processed", "dedup_key": dedup_key},
                     202)

    async def pagerduty_change(self, request: web.Request) -> web.StreamResponse:
        candidates = self._routing.pagerduty
        try:
            body = await read_body(request, _pd_limit(candidates))
            reject_nul(body)
            event = pagerduty.parse_change(body)
            integration = _by_routing_key(candidates, event.routing_key)
            await self._changes.record(
                pagerduty.to_change(event, integration=integration.name, clock=self._clock))
        except UserError as err:
            return _pd_error(err)
        return _json({"status": "success", "message": "Change event processed"}, 202)


def _by_routing_key(candidates: Sequence[Integration], key: str) -> Integration:
    """PagerDuty answers an unknown routing key with 400, not 401; so do we."""
    # Every candidate is compared, in constant time, so timing reveals no key.
    matches = [i for i in candidates if matches_any(key, i.routing_keys)]
    if not matches:
        raise InvalidInput("Event object is invalid",
                           [{"field": "routing_key", "reason": "Invalid routing key"}])
    return matches[0]


def _pd_limit(candidates: Sequence[Integration]) -> int:
    return max((i.max_body_bytes for i in candidates), default=pagerduty.MAX_BODY_BYTES)


def _pd_error(err: UserError) -> web.Response:
    if isinstance(err, pagerduty.UnrecognizedEvent):
        body = {"status": "Unrecognized object", "message": err.message,
                "errors": ["JSON parse error"]}
    elif err.status == 400:
        reasons = [e["reason"] for e in getattr(err, "errors", [])] or [err.message]
        body = {"status": "invalid event", "message": "Event object is invalid",
                "errors": reasons}
    else:
        body = {"status": "error", "message": err.message, "errors": [err.message]}
    headers = {"Retry-After": str(err.retry_after)} if isinstance(err, Overloaded) else None
    return _json(body, err.status, headers)


def _json(data: object, status: int, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json",
                        headers=headers)


def _reason(err: UserError) -> str:
    if isinstance(err, Overloaded):
        return err.reason
    return {401: "unauthorized", 413: "too_large"}.get(err.status, "invalid")
