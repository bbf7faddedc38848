"""Fixtures for the console's browser tests: Debian's chromium driven by
Playwright (async API) against the daemon as a real process.

Playwright's objects belong to the event loop that made them, and one
browser serves the whole session, so these tests and fixtures run in the
session's loop (`loop_scope="session"`). The daemon comes from the e2e
fixtures (`daemon_factory`, its process registry and log tails on failure),
imported here rather than copied.

Under CI=true a missing chromium fails the tests; elsewhere it skips them.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from playwright.async_api import Browser, async_playwright, expect

import tests.e2e.conftest as e2e
from tests.conftest import require
from tests.e2e.harness import DaemonProcess, example_config

from .site import READ_TOKEN, WAIT_MS, ConsoleSite, Pages

# The e2e tests' daemon fixtures and their log-tail-on-failure hook, reused as they are.
procs = e2e.procs
daemon_factory = e2e.daemon_factory
pytest_runtest_makereport = e2e.pytest_runtest_makereport

CHROMIUM = Path(os.environ.get("INCIDENTD_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_PRESENT = CHROMIUM.exists()
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
# `expect(...)` waits this long too (Playwright's default, 5 s, is short on a busy CI box).
expect.set_options(timeout=WAIT_MS)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    require(CHROMIUM_PRESENT, f"{CHROMIUM} is missing (Debian: apt-get install chromium)")
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """The test's own HTTP client (in the browser's loop; the e2e `http` is in another)."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=30)
    ) as session:
        yield session


@pytest_asyncio.fixture(loop_scope="session")
async def site(daemon_factory: Callable[..., DaemonProcess],
               http: aiohttp.ClientSession) -> ConsoleSite:
    """The daemon on the example config plus a read-only token (`READ_TOKEN`)."""
    config = example_config()
    config["api"]["read_only_tokens"] = [{"env": "INCIDENTD_API_READ_TOKEN"}]
    daemon = daemon_factory(config=config, env={"INCIDENTD_API_READ_TOKEN": READ_TOKEN})
    await daemon.start()
    return ConsoleSite(daemon=daemon, http=http)


@pytest_asyncio.fixture(loop_scope="session")
async def pages(request: pytest.FixtureRequest, browser: Browser) -> AsyncIterator[Pages]:
    """Page factory; at the end every page the test did not check itself must have
    met no unexpected error (unless the test failed already: one report is enough)."""
    failed_before = request.session.testsfailed
    opened = Pages(browser)
    try:
        yield opened
    finally:
        await opened.close()
    if request.session.testsfailed > failed_before:
        return
    problems = [e for w in opened.watches if not w.checked for e in w.unexpected()]
    assert not problems, "console errors or failed requests:\n" + "\n".join(problems)
