"""Reading a request body: its media type, its size and its deadline.

Which `Content-Type` each endpoint takes (the README repeats this):

- JSON endpoints (alert ingest, PagerDuty events, the inbound action webhook and
  every JSON body of the admin API) take `application/json`, any
  `application/*+json` and `text/json`; also the types senders use when they do
  not say: none at all, `application/x-www-form-urlencoded` (`curl -d`, Python's
  urllib), `application/octet-stream` (clients posting bytes) and `text/plain`
  (JavaScript's fetch with a string). The body is parsed as JSON whatever they
  say. A `charset` other than UTF-8 (or ASCII) is refused: JSON is UTF-8. What is
  refused is a body that says it is something else (XML, YAML, HTML, a form
  upload, ...).
- Slack interactivity takes `application/x-www-form-urlencoded` only (Slack
  always sends it).
- The CMDB import picks its parser by type (JSON, YAML, CSV) and checks itself.

Anything else is a 415 whose JSON body says what is expected. An empty body
(`Content-Length: 0`) is never refused for its type.
"""

from __future__ import annotations

import asyncio
from typing import Final

from aiohttp import web

from daemon.errors import InvalidInput, PayloadTooLarge, UserError

JSON: Final = "json"
FORM: Final = "form"
ANY: Final = "any"

_JSON_TYPES = frozenset({"application/json", "text/json"})
# Sent with JSON bodies by senders that do not say: curl -d, urllib, byte posters, fetch.
_SLOPPY_TYPES = frozenset({"", "application/x-www-form-urlencoded",
                           "application/octet-stream", "text/plain"})
_FORM_TYPE = "application/x-www-form-urlencoded"
_UTF8 = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})
_CHUNK = 64 * 1024


class UnsupportedMediaType(InvalidInput):
    status = 415
    code = "unsupported_media_type"


class RequestTimeout(UserError):
    status = 408
    code = "request_timeout"


def media_type_error(given: str, expected: str) -> UnsupportedMediaType:
    return UnsupportedMediaType(
        f"Content-Type {given or '(none)'} is not accepted here; send {expected}",
        [{"field": "Content-Type", "reason": f"expected {expected}"}])


def check_media_type(request: web.Request, accept: str) -> None:
    """415 unless the request's `Content-Type` suits `accept` (JSON, FORM or ANY)."""
    if accept == ANY or request.content_length == 0:
        return
    # aiohttp reports a missing header as application/octet-stream; look at the header.
    raw = request.headers.get("Content-Type", "")
    given = request.content_type.lower() if raw.strip() else ""
    charset = (request.charset or "utf-8").lower()
    if accept == FORM:
        if given != _FORM_TYPE:
            raise media_type_error(given, _FORM_TYPE)
        return
    is_json = given in _JSON_TYPES or (given.startswith("application/")
                                       and given.endswith("+json"))
    if not (is_json or given in _SLOPPY_TYPES):
        raise media_type_error(given, "application/json")
    if charset not in _UTF8:
        raise UnsupportedMediaType(
            f"charset {charset} is not accepted; JSON is UTF-8",
            [{"field": "Content-Type", "reason": "expected charset utf-8"}])


def read_timeout(request: web.Request) -> float | None:
    """The body deadline of the connection (`server.request_read_timeout_seconds`);
    None when the app runs without `daemon.api.httpserver` (tests in process)."""
    value = getattr(request.protocol, "read_timeout", None)
    return value if isinstance(value, int | float) else None


async def read_body(request: web.Request, limit: int, *, accept: str = JSON) -> bytes:
    """The request body: 415 for a media type `accept` does not take, 413 as soon as
    it passes `limit` bytes, 408 when it is not all there by the read deadline."""
    check_media_type(request, accept)
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"body of {request.content_length} bytes is over the {limit} limit")
    try:
        async with asyncio.timeout(read_timeout(request)):
            return await _read(request, limit)
    except TimeoutError:
        raise RequestTimeout(
            f"request body not complete within {read_timeout(request):g} s") from None


async def _read(request: web.Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body is over the {limit} byte limit")
        chunks.append(chunk)
    return b"".join(chunks)
