"""Hostile requests against a real daemon process over raw sockets: each is refused
cleanly (a JSON error, the right status, nothing echoed), and the daemon keeps serving
everyone else.

- oversized bodies: 413, on ingest and on the admin API, with or without a length;
- 100,000 levels of `[`: 400, no RecursionError, no 500;
- invalid UTF-8: 400; a media type the endpoint does not take: 415 saying which it
  does (the sloppy ones real senders use are accepted: none, and curl's form type);
- a header line far too long, or too many headers: 431, the header not echoed;
- slow-loris: 200 connections dribbling their headers a byte a second, a body
  dribbled after its headers, a connection that says nothing: each is closed within
  `server.request_read_timeout_seconds` (plus aiohttp's lingering for a body), while
  a normal request succeeds meanwhile;
- one connection over `server.max_connections`: 503 with Retry-After, then closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from .harness import ADMIN_TOKEN, INTEGRATION_TOKEN, LOOPBACK, DaemonProcess, fixture_bytes
from .secure_setup import ENV, GENERIC_TOKEN, GRAFANA_TOKEN, secure_config

pytestmark = pytest.mark.e2e

READ_TIMEOUT = 3.0
# How long a slow connection may live at most: the read deadline, aiohttp's lingering
# (never longer than the deadline), and generous room for a loaded machine.
CLOSED_WITHIN = READ_TIMEOUT * 2 + 20.0
BODY_LIMIT = 256 * 1024
ANSWER_WITHIN = 30.0
AM_PATH = "/api/v1/alerts/alertmanager"


async def _start(factory: Callable[..., DaemonProcess], **server: Any) -> DaemonProcess:
    config = secure_config(server={"request_read_timeout_seconds": READ_TIMEOUT,
                                   "max_body_bytes": BODY_LIMIT, **server})
    return await factory(config=config, env=ENV).start()


class Answer:
    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else 0
        self.headers = {k.strip().lower(): v.strip() for k, _, v in
                        (line.partition(":") for line in lines[1:])}

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<{self.status} {self.headers} {self.body[:300]!r}>"


async def raw_request(port: int, data: bytes) -> Answer:
    """Send `data` as is, read until the daemon closes (or the answer is complete)."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        writer.write(data)
        await writer.drain()
        raw = await asyncio.wait_for(_read_answer(reader), ANSWER_WITHIN)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return Answer(raw)


async def _read_answer(reader: asyncio.StreamReader) -> bytes:
    raw = b""
    while b"\r\n\r\n" not in raw:
        chunk = await reader.read(65536)
        if not chunk:
            return raw
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), None)
    while length is not None and len(body) < length:
        chunk = await reader.read(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def post(path: str, body: bytes, *, content_type: str | None = "application/json",
         token: str | None = ADMIN_TOKEN, extra: str = "") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: incidentd\r\nContent-Length: {len(body)}\r\n"
    if content_type is not None:
        head += f"Content-Type: {content_type}\r\n"
    if token is not None:
        head += f"Authorization: Bearer {token}\r\n"
    return (head + extra + "Connection: close\r\n\r\n").encode() + body


def assert_error(answer: Answer, status: int, code: str) -> dict[str, Any]:
    assert answer.status == status, answer
    assert answer.headers.get("content-type", "").startswith("application/json"), answer
    error: dict[str, Any] = answer.json()["error"]
    assert error["code"] == code, answer
    assert "Traceback" not in error["message"], answer
    return error


async def test_bad_bodies_are_refused_with_json(
    daemon_factory: Callable[..., DaemonProcess]
) -> None:
    daemon = await _start(daemon_factory)
    port = daemon.port
    am = INTEGRATION_TOKEN
    big = b'{"x":"' + b"a" * (BODY_LIMIT * 2) + b'"}'

    # Oversized: declared, and chunked without a length.
    assert_error(await raw_request(port, post(AM_PATH, big, token=am)), 413,
                 "payload_too_large")
    assert_error(await raw_request(port, post("/api/v1/changes", b"{" + b" " * 300_000 + b"}")),
                 413, "payload_too_large")  # the change API's own limit: 256 KiB
    chunked = (f"POST {AM_PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {am}\r\n"
               "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
               "Connection: close\r\n\r\n").encode()
    chunked += b"".join(b"%x\r\n%s\r\n" % (len(part), part)
                        for part in (big[i:i + 8192] for i in range(0, len(big), 8192)))
    assert_error(await raw_request(port, chunked + b"0\r\n\r\n"), 413, "payload_too_large")

    # 100,000 levels of nesting (under every size limit: the parsers must refuse it).
    deep = b"[" * 100_000
    for path, token in ((AM_PATH, am), ("/api/v1/alerts", GENERIC_TOKEN),
                        ("/api/v1/alerts/grafana", GRAFANA_TOKEN),
                        ("/api/v1/changes", ADMIN_TOKEN), ("/api/v1/cmdb/import", ADMIN_TOKEN)):
        assert_error(await raw_request(port, post(path, deep, token=token)), 400,
                     "invalid_input")
    pd = await raw_request(port, post("/v2/enqueue", deep, token=None))
    assert pd.status == 400 and pd.json()["status"] == "Unrecognized object", pd
    for yaml_type in ("application/yaml", "text/csv"):
        assert_error(await raw_request(port, post("/api/v1/cmdb/import", deep,
                                                  content_type=yaml_type)),
                     400, "invalid_input")

    # Invalid UTF-8 inside a JSON string.
    bad_utf8 = b'{"summary": "caf\xc3\x28 \xff\xfe", "labels": {"a": "\xed\xa0\x80"}}'
    for path, token in ((AM_PATH, am), ("/api/v1/alerts", GENERIC_TOKEN),
                        ("/api/v1/problems", ADMIN_TOKEN)):
        error = assert_error(await raw_request(port, post(path, bad_utf8, token=token)), 400,
                             "invalid_input")
        assert error["errors"][0]["field"] == "(body)"
    assert (await raw_request(port, post("/v2/enqueue", bad_utf8, token=None))).status == 400

    # Media types: what each endpoint takes, and a 415 that says so.
    firing = fixture_bytes("prometheus_firing.json")
    for wrong in ("text/xml", "multipart/form-data; boundary=x", "application/yaml",
                  "application/json; charset=latin-1"):
        error = assert_error(await raw_request(port, post(AM_PATH, firing, token=am,
                                                          content_type=wrong)),
                             415, "unsupported_media_type")
        assert "application/json" in error["message"] or "utf-8" in error["message"].lower()
    slack = await raw_request(port, post("/api/v1/integrations/slack/actions", b'{"a":1}',
                                         token=None))
    assert "application/x-www-form-urlencoded" in assert_error(
        slack, 415, "unsupported_media_type")["message"]
    pd_wrong = await raw_request(port, post("/v2/enqueue", b"{}", token=None,
                                            content_type="text/html"))
    assert pd_wrong.status == 415 and "application/json" in pd_wrong.json()["message"]
    # The types real senders use with JSON: none at all, curl -d's form type, bytes,
    # fetch's text, a vendor +json type, an explicit utf-8 charset.
    for sloppy in (None, "application/x-www-form-urlencoded", "application/octet-stream",
                   "text/plain;charset=UTF-8", "application/vnd.am+json",
                   "application/json; charset=UTF-8"):
        ok = await raw_request(port, post(AM_PATH, firing, token=am, content_type=sloppy))
        assert ok.status == 200, (sloppy, ok)

    assert daemon.alive, daemon.describe(60)
    await _no_traceback_in(daemon)


async def test_header_abuse_is_refused_without_echo(
    daemon_factory: Callable[..., DaemonProcess]
) -> None:
    daemon = await _start(daemon_factory)
    port = daemon.port
    marker = "hostile-header-value-3f9a"
    long_auth = (f"GET /api/v1/incidents HTTP/1.1\r\nHost: x\r\n"
                 f"Authorization: Bearer {marker}{'z' * 20_000}\r\n\r\n").encode()
    long_other = (f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-{marker}: {'y' * 20_000}\r\n"
                  "\r\n").encode()
    long_url = f"GET /healthz?{marker}={'u' * 20_000} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    many = ("GET /healthz HTTP/1.1\r\nHost: x\r\n"
            + "".join(f"X-{marker}-{i}: 1\r\n" for i in range(500)) + "\r\n").encode()
    for data in (long_auth, long_other, long_url, many):
        answer = await raw_request(port, data)
        assert_error(answer, 431, "request_header_fields_too_large")
        assert marker.encode() not in answer.body and b"zzzz" not in answer.body, answer
    garbage = await raw_request(port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" * 10)
    assert_error(garbage, 400, "bad_request")
    # A signature timestamp of non-ASCII digits ("²" passes str.isdigit, not int()).
    for path, headers in (
            ("/api/v1/integrations/slack/actions",
             "Content-Type: application/x-www-form-urlencoded\r\n"
             "X-Slack-Request-Timestamp: \u00b2\r\nX-Slack-Signature: v0=00\r\n"),
            ("/api/v1/webhooks/actions", "Content-Type: application/json\r\n"
             "X-Incidentd-Timestamp: \u00b2\r\nX-Incidentd-Signature: v1=00\r\n")):
        data = (f"POST {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: 2\r\n"
                "Connection: close\r\n\r\n{}").encode()
        assert_error(await raw_request(port, data), 401, "unauthorized")
    async with aiohttp.ClientSession() as s, s.get(f"{daemon.base_url}/healthz") as resp:
        assert resp.status == 200
    assert await daemon.stop() == 0
    log = daemon.log_path.read_text()
    assert marker not in log, "a refused header's value reached the log"
    assert "Traceback" not in log, daemon.describe(80)


async def test_slow_clients_are_cut_off_while_others_are_served(
    daemon_factory: Callable[..., DaemonProcess]
) -> None:
    daemon = await _start(daemon_factory)
    port = daemon.port
    request = (f"GET /api/v1/incidents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
               f"{ADMIN_TOKEN}\r\n\r\n").encode()
    loris = [asyncio.create_task(_dribble(port, b"", request)) for _ in range(200)]
    body_head = post(AM_PATH, b"", token=INTEGRATION_TOKEN).replace(
        b"Content-Length: 0", b"Content-Length: 5000")
    body_dribbler = asyncio.create_task(_dribble(port, body_head, b"{" + b" " * 4999))
    silent = asyncio.create_task(_dribble(port, b"", b""))
    try:
        # While 200 slow-loris connections are open, others are served.
        await _until_open(loris, at_least=150)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
            async with s.get(f"{daemon.base_url}/api/v1/incidents",
                             headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as resp:
                assert resp.status == 200, await resp.text()
            async with s.post(daemon.alertmanager_webhook_url,
                              data=fixture_bytes("prometheus_firing.json"),
                              headers={"Authorization": f"Bearer {INTEGRATION_TOKEN}",
                                       "Content-Type": "application/json"}) as resp:
                assert resp.status == 200, await resp.text()
        results = await asyncio.wait_for(
            asyncio.gather(*loris, body_dribbler, silent), CLOSED_WITHIN + 10)
    finally:
        for task in (*loris, body_dribbler, silent):
            task.cancel()
    for lived, _ in results:
        assert lived <= CLOSED_WITHIN, f"a slow connection lived {lived:.1f}s"
    header_answers = [Answer(a) for _, a in results[:200]]
    late = [(round(lived, 1), a) for (lived, _), a in
            zip(results[:200], header_answers, strict=True) if a.status != 408]
    assert not late, f"{len(late)} of 200 slow connections got no 408: {late[:5]}"
    assert header_answers[0].json()["error"]["code"] == "request_timeout"
    body_answer = Answer(results[200][1])
    assert_error(body_answer, 408, "request_timeout")
    assert results[201][1] == b"", "a connection that sent nothing gets no answer"
    assert daemon.alive, daemon.describe(60)
    await _no_traceback_in(daemon)


async def test_connections_over_the_cap_get_503(
    daemon_factory: Callable[..., DaemonProcess]
) -> None:
    daemon = await _start(daemon_factory, max_connections=20,
                          request_read_timeout_seconds=60)
    held = [await asyncio.open_connection(LOOPBACK, daemon.port) for _ in range(20)]
    try:
        # Connections count once accepted: wait until the daemon refuses the next one.
        deadline = time.monotonic() + 20
        while True:
            answer = await raw_request(daemon.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            if answer.status == 503 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        error = assert_error(answer, 503, "too_many_connections")
        assert answer.headers.get("retry-after") == "5", answer
        assert "retry" in error["message"]
    finally:
        for _, writer in held:
            writer.close()
    async def healthy() -> bool:
        answer = await raw_request(daemon.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
                                   b"Connection: close\r\n\r\n")
        return answer.status == 200

    deadline = time.monotonic() + 20
    while not await healthy():
        assert time.monotonic() < deadline, "the daemon never served again after the cap"
        await asyncio.sleep(0.1)


# -- helpers ------------------------------------------------------------------------


async def _dribble(port: int, head: bytes, slow: bytes) -> tuple[float, bytes]:
    """Send `head` at once, then `slow` one byte a second, until the daemon closes;
    return how long the connection lived and what the daemon answered."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    answer = b""
    try:
        writer.write(head)
        await writer.drain()
        read = asyncio.create_task(reader.read())  # until EOF
        for byte in slow:
            if read.done():
                break
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except (ConnectionError, OSError):
                break
            await asyncio.wait([read], timeout=1.0)
        answer = await asyncio.wait_for(read, CLOSED_WITHIN + 5)
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return time.monotonic() - started, answer


async def _until_open(tasks: list[asyncio.Task[Any]], *, at_least: int) -> None:
    """Give the dribbling clients a moment to connect (none should be done yet)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        if sum(not t.done() for t in tasks) >= at_least:
            return
    pytest.fail("the slow-loris clients did not stay connected")


async def _no_traceback_in(daemon: DaemonProcess) -> None:
    text = daemon.log_path.read_text()
    assert "Traceback" not in text and "RecursionError" not in text, daemon.describe(80)
