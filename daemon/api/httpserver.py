"""The listening socket's defences: slow clients, too many connections, malformed HTTP.

aiohttp has no deadline of its own for a request's headers (its keep-alive timer
closes a silent connection after an hour, and a client that sends a byte a second
is not silent), no cap on open connections, and it answers a malformed request
with a text body that echoes up to 100 bytes of the offending line (an
`Authorization` header, say) and logs it with a traceback. `GuardedSite` serves
the app through `GuardedRequestHandler`, which:

- closes a connection whose request headers are not complete within
  `read_timeout` seconds of the connection opening, or of the first byte of a
  later request on a kept-alive connection (408 when some bytes came, silence
  when none did); `daemon.receivers.endpoint.read_body` holds a body to the same
  deadline, counted from its headers;
- answers 503 and closes at once when `max_connections` are open already;
- answers a malformed request (line too long, too many headers, bad framing) in
  JSON (431 or 400), without echoing any of it, and logs only the kind of fault.

The handler reads three private fields of aiohttp's `RequestHandler`
(`_request_count`, `_messages`, `_request_in_progress`); aiohttp is pinned <4,
and `tests/e2e/test_hostile_requests.py` fails if their meaning changes.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import orjson
import structlog
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from yarl import URL

log = structlog.get_logger("incidentd.http")

# aiohttp waits this long at most for the rest of a body no handler read, before it
# closes the connection; never longer than the read deadline itself.
_LINGER_SECONDS = 10.0
_TOO_MANY_HEADERS = "Too many headers received"


@dataclass(frozen=True, slots=True)
class ServerLimits:
    read_timeout: float
    max_connections: int


def handler_options(limits: ServerLimits) -> dict[str, Any]:
    """Keyword arguments for `web.AppRunner` that belong with these limits."""
    return {"lingering_time": min(_LINGER_SECONDS, limits.read_timeout)}


class _Gate:
    """Counts one site's open connections."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0


class GuardedRequestHandler(RequestHandler):
    def __init__(self, manager: web.Server, *, limits: ServerLimits, gate: _Gate,
                 **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        # Read by `read_body` as the deadline for a request's body.
        self.read_timeout = limits.read_timeout
        self._gate = gate
        self._counted = False
        self._header_timer: asyncio.TimerHandle | None = None
        self._partial = False  # bytes of a request whose headers are not complete yet
        self._body: StreamReader | None = None  # the body of the last request parsed

    # -- connection life --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._gate.open >= self._gate.limit:
            self._answer_and_close(503, "too_many_connections",
                                   "too many open connections; retry shortly",
                                   extra_headers="Retry-After: 5\r\n")
            return
        self._gate.open += 1
        self._counted = True
        self._arm()  # a new connection owes its first request's headers

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        if self._counted:
            self._gate.open -= 1
            self._counted = False
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if data and self._between_requests():
            if self._header_timer is None:
                self._arm()
            self._partial = True
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:  # a request's headers are complete
            self._disarm()
            self._partial = False
            self._body = self._messages[-1][1] if self._messages else None

    # -- the header deadline ----------------------------------------------------

    def _between_requests(self) -> bool:
        """No request is being received or answered: new bytes start a new request."""
        body_done = self._body is None or self._body.is_eof()
        return body_done and not self._messages and not self._request_in_progress

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self._loop.call_later(self.read_timeout, self._headers_overdue)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_overdue(self) -> None:
        self._header_timer = None
        if self.transport is None:
            return
        if self._messages or self._request_in_progress:
            # A pipelined request trickles in while the previous one is answered:
            # writing now would cut into that answer. Look again later.
            self._arm()
            return
        if self._partial:
            self._answer_and_close(
                408, "request_timeout",
                f"request headers not complete within {self.read_timeout:g} s")
        else:
            self.force_close()  # nothing sent at all: no answer is owed

    def _answer_and_close(self, status: int, code: str, message: str, *,
                          extra_headers: str = "") -> None:
        """Write a whole response straight to the socket and close it: used only
        when no request is being answered on this connection."""
        body = orjson.dumps({"error": {"code": code, "message": message}})
        head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n{extra_headers}Connection: close\r\n\r\n")
        if self.transport is not None:
            with contextlib.suppress(OSError, RuntimeError):
                self.transport.write(head.encode() + body)
        self.force_close()

    # -- malformed requests -----------------------------------------------------

    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None, message: str | None = None
                     ) -> web.StreamResponse:
        """JSON, and nothing of the request echoed: a line too long may be a credential."""
        status, code, text = self._describe(status, exc)
        if status >= 500:
            log.error("error outside any handler", status=status,
                      kind=type(exc).__name__ if exc else None, exc_info=exc)
        else:
            log.info("malformed HTTP request refused", status=status,
                     kind=type(exc).__name__ if exc else None)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send an error")
        resp = web.Response(status=status, content_type="application/json",
                            body=orjson.dumps({"error": {"code": code, "message": text}}))
        resp.force_close()
        return resp

    def _describe(self, status: int, exc: BaseException | None) -> tuple[int, str, str]:
        if isinstance(exc, LineTooLong):
            return (431, "request_header_fields_too_large",
                    f"a request line or header field is longer than {self.max_field_size} "
                    "bytes")
        if isinstance(exc, BadHttpMessage) and exc.message == _TOO_MANY_HEADERS:
            return (431, "request_header_fields_too_large",
                    f"more than {self.max_headers} header fields")
        if isinstance(exc, HttpProcessingError) or status == 400:
            return 400, "bad_request", f"malformed HTTP request ({type(exc).__name__})"
        if status == 504:
            return 504, "timeout", "the request took too long"
        return 500, "internal", "internal error; see the daemon log"


class GuardedSite(web.BaseSite):
    """A TCP site like `web.TCPSite` whose connections are `GuardedRequestHandler`s."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *,
                 limits: ServerLimits) -> None:
        # A burst of new connections beyond the accept queue is dropped by the kernel
        # and retried by the client with exponential backoff: its first bytes can then
        # arrive seconds late. Size the queue for the connections we mean to serve
        # (the kernel caps it at net.core.somaxconn).
        super().__init__(runner, backlog=max(128, limits.max_connections))
        self._host = host
        self._port = port
        self._limits = limits

    @property
    def name(self) -> str:
        return str(URL.build(scheme="http", host=self._host, port=self._port))

    async def start(self) -> None:
        await super().start()  # registers the site with its runner
        server = self._runner.server
        assert server is not None, "runner.setup() first"
        gate = _Gate(self._limits.max_connections)
        loop = asyncio.get_running_loop()
        # What `web.Server.__call__` passes, so AppRunner's options (access_log,
        # lingering_time, ...) reach our handler as they would aiohttp's own.
        options: dict[str, Any] = dict(getattr(server, "_kwargs", {}))

        def connection() -> GuardedRequestHandler:
            return GuardedRequestHandler(server, loop=loop, limits=self._limits, gate=gate,
                                         **options)

        self._server = await loop.create_server(connection, self._host, self._port,
                                                backlog=self._backlog)
