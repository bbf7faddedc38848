"""The HTTP face of an integration: authenticate, read, parse, hand to the sink, answer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import orjson
from aiohttp import web

from daemon import metrics
from daemon.errors import Overloaded, PayloadTooLarge, UserError
from daemon.models import Alert
from daemon.receivers import Parser
from daemon.receivers.auth import Credentials


class AlertSink(Protocol):
    """Where parsed alerts go; returns once they are committed."""

    async def submit(self, alerts: Sequence[Alert], *, overload_status: int) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    name: str
    parser: Parser
    credentials: Credentials
    sink: AlertSink
    max_body_bytes: int
    # Alertmanager retries only 5xx, so overload must be 503 for it.
    overload_status: int = 503

    async def handle(self, request: web.Request) -> web.Response:
        source = self.parser.source
        try:
            self.credentials.check(request.headers.get("Authorization"))
            body = await read_body(request, self.max_body_bytes)
            alerts = self.parser.parse(body)
            await self.sink.submit(alerts, overload_status=self.overload_status)
        except UserError as err:
            metrics.ALERTS_REJECTED.labels(source, _reason(err)).inc()
            raise
        return web.Response(
            status=200,
            body=orjson.dumps({"status": "success", "alerts": len(alerts)}),
            content_type="application/json",
        )


def _reason(err: UserError) -> str:
    if isinstance(err, Overloaded):
        return err.reason
    return {401: "unauthorized", 413: "too_large"}.get(err.status, "invalid")


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"body of {request.content_length} bytes is over the {limit} limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body is over the {limit} byte limit")
        chunks.append(chunk)
    return b"".join(chunks)
