"""The console's event stream on the daemon as a process: it tells of an incident opened
through the real receiver, and an open stream does not hold SIGTERM's drain (the
example config waits up to 30 s for handlers; the stream must end at once)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from http.cookies import SimpleCookie

import aiohttp
import pytest

from .harness import (
    ADMIN_TOKEN,
    STOP_TIMEOUT,
    DaemonProcess,
    IncidentdClient,
    alertmanager_group,
)

pytestmark = pytest.mark.e2e


async def read_block(stream: aiohttp.StreamReader) -> str:
    """The next SSE block (an event, a comment or `retry:`); "" at the stream's end."""
    return (await asyncio.wait_for(stream.readuntil(b"\n\n"), 30)).decode()


async def test_an_open_event_stream_does_not_delay_sigterm(
        daemon: DaemonProcess, client: IncidentdClient, http: aiohttp.ClientSession) -> None:
    resp = await http.post(f"{daemon.base_url}/ui/sign-in", data={"token": ADMIN_TOKEN},
                           allow_redirects=False)
    assert resp.status == 303, await resp.text()
    cookie = SimpleCookie(resp.headers["Set-Cookie"])["incidentd_session"].value
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as own:
        stream = await own.get(f"{daemon.base_url}/ui/events",
                               headers={"Cookie": f"incidentd_session={cookie}"})
        assert stream.status == 200, await stream.text()
        assert (await read_block(stream.content)).startswith("retry:")

        fingerprint = uuid.uuid4().hex[:16]
        status, text = await client.post_alertmanager(
            alertmanager_group(group="E2EConsole", fingerprints=[fingerprint]))
        assert 200 <= status < 300, text
        block = await read_block(stream.content)
        while block.startswith(":"):  # keep-alives
            block = await read_block(stream.content)
        assert "event: change" in block and '"kind":"opened"' in block, block

        daemon.send_signal(signal.SIGTERM)
        # The stream ends (cleanly, or cut) and the process exits 0 within the harness's
        # deadline, which is half the example's 30 s drain: a held stream would exceed it.
        with contextlib.suppress(aiohttp.ClientPayloadError):  # cut rather than ended
            while await read_block(stream.content):
                pass
        rc = await daemon.wait_exit(STOP_TIMEOUT)
        assert rc == 0, f"exit code after SIGTERM: {rc}\n{daemon.describe(60)}"
