"""Helpers for the console's browser tests: the daemon the browser talks to,
alerts to feed it, and a watch over a page's console errors and failed requests.

The daemon is `tests/e2e/harness.py`'s real process; this module only adds
what a browser test needs on top of it.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Request,
    Response,
    ViewportSize,
)

from tests.e2e.harness import (
    ADMIN_TOKEN,
    INTEGRATION_TOKEN,
    REPO_ROOT,
    DaemonProcess,
    alertmanager_bytes,
    fixture_json,
    short_json,
)

READ_TOKEN = "browser-read-only-token-6a1d09"
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 360, "height": 780}
# Playwright's wait for an element or a navigation; a failure names what it waited for.
WAIT_MS = 10_000
# Shown in the sign-in form's alert when a token is refused (console contract).
WRONG_TOKEN_MESSAGE = "That token is not valid."


# --------------------------------------------------------------------------
# alerts


def firing_alert(
    alertname: str,
    *,
    ci: str,
    service: str = "svc-checkout",
    severity: str = "critical",
    fingerprint: str,
    summary: str,
    extra: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One firing alert as Alertmanager 0.25 sends it, bound to CMDB CI `ci`."""
    template = fixture_json("prometheus_firing.json")["alerts"][0]
    alert: dict[str, Any] = copy.deepcopy(template)
    alert["fingerprint"] = fingerprint
    alert["labels"] = {"alertname": alertname, "ci": ci, "service": service,
                       "severity": severity, "job": "browser", **(extra or {})}
    alert["annotations"] = {"summary": summary}
    return alert


def webhook(alerts: list[dict[str, Any]], group: str) -> dict[str, Any]:
    """An Alertmanager webhook body carrying `alerts` as alert group `group`."""
    body = fixture_json("prometheus_firing.json")
    common = {"alertname": group}
    body.update(alerts=alerts, groupLabels=common, commonLabels=common, commonAnnotations={},
                groupKey=f'{{}}:{{alertname="{group}"}}')
    return body


def outage_alerts() -> list[dict[str, Any]]:
    """A database outage seen from above: the orders database is down and the
    checkout API that needs it is slow (which the example runbook catalog
    answers with `scale-deployment`, waiting for approval)."""
    return [
        firing_alert("PostgresDown", ci="pg-orders", fingerprint="3f9a1c0d5e7b2a61",
                     summary="Orders PostgreSQL is not accepting connections"),
        firing_alert("HighRequestLatency", ci="checkout-api", fingerprint="8c2e4b7d1f0a9e35",
                     summary="Checkout API p99 latency above 2 s",
                     extra={"namespace": "shop", "deployment": "checkout-api"}),
    ]


# --------------------------------------------------------------------------
# the daemon, over its API


@dataclass
class ConsoleSite:
    """The daemon under test and an HTTP session (in the browser tests' loop) for its API."""

    daemon: DaemonProcess
    http: aiohttp.ClientSession

    @property
    def base(self) -> str:
        return self.daemon.base_url

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    async def post_alerts(self, body: Mapping[str, Any]) -> None:
        headers = {"Authorization": f"Bearer {INTEGRATION_TOKEN}",
                   "Content-Type": "application/json", "User-Agent": "Alertmanager/0.25.0"}
        async with self.http.post(self.daemon.alertmanager_webhook_url,
                                  data=alertmanager_bytes(body), headers=headers) as resp:
            text = await resp.text()
            assert resp.status in (200, 202), (
                f"webhook answered {resp.status}: {text[:1000]}\n{self.daemon.describe(40)}")

    async def api(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with self.http.request(method, self.url(path), json=body, headers=headers) as resp:
            text = await resp.text()
            assert resp.status < 300, (
                f"{method} {path} answered {resp.status}: {text[:1000]}\n"
                f"{self.daemon.describe(40)}")
            return json.loads(text) if text else None

    async def incidents(self) -> list[dict[str, Any]]:
        page = await self.api("GET", "/api/v1/incidents?limit=100")
        items: list[dict[str, Any]] = page["items"]
        return items

    async def wait_incident(self, fingerprint: str, *, alerts: int = 1,
                            within: float = 20.0) -> dict[str, Any]:
        """The incident holding the alert `fingerprint`, once it holds `alerts` alerts."""
        deadline = time.monotonic() + within
        last: Any = None
        while True:
            for item in await self.incidents():
                incident = await self.api("GET", f"/api/v1/incidents/{item['id']}")
                held = [a["fingerprint"] for a in incident.get("alerts", [])]
                if fingerprint in held:
                    last = incident
                    if len(held) >= alerts:
                        return dict(incident)
            if time.monotonic() >= deadline:
                pytest.fail(f"no incident with alert {fingerprint} and {alerts} alert(s) after "
                            f"{within:.0f} s; last: {short_json(last)}\n"
                            f"{self.daemon.describe(60)}", pytrace=False)
            await asyncio.sleep(0.2)

    async def wait_runbook_waiting(self, incident_id: int, within: float = 20.0) -> None:
        """Until the incident has a runbook run waiting for approval (best effort:
        the screenshot is nicer with one, no test depends on it)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            runs = await self.api(
                "GET", f"/api/v1/runbook-runs?incident={incident_id}&status=pending_approval")
            if runs["items"]:
                return
            await asyncio.sleep(0.2)


# --------------------------------------------------------------------------
# a page's errors


# Leaving a page aborts its EventSource stream; that is the browser closing
# it, not a failed request.
_ABORTED_STREAM = re.compile(r"/ui/events\b.*net::ERR_ABORTED")


@dataclass
class PageWatch:
    """Every console error, uncaught exception, failed request and 4xx/5xx answer
    a page met. `allow(regex)` lists the ones a test causes on purpose."""

    page: Page
    errors: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)
    checked: bool = False

    def attach(self) -> PageWatch:
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        self.page.on("requestfailed", self._failed)
        self.page.on("response", self._response)
        return self

    def allow(self, pattern: str) -> None:
        self.allowed.append(re.compile(pattern))

    def _console(self, msg: ConsoleMessage) -> None:
        if msg.type in ("error", "assert"):
            where = msg.location.get("url", "") if msg.location else ""
            self.errors.append(f"console.{msg.type}: {msg.text} ({where})")

    def _failed(self, request: Request) -> None:
        text = f"request failed: {request.method} {request.url}: {request.failure}"
        if not _ABORTED_STREAM.search(text):
            self.errors.append(text)

    def _response(self, response: Response) -> None:
        if response.status >= 400:
            self.errors.append(
                f"HTTP {response.status}: {response.request.method} {response.url}")

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.allowed)]

    def assert_clean(self) -> None:
        self.checked = True
        bad = self.unexpected()
        assert not bad, "the page met errors:\n" + "\n".join(bad)


# --------------------------------------------------------------------------
# pages and where their screenshots go


def artifacts_dir() -> Path:
    """Where screenshots go: $INCIDENTD_TEST_ARTIFACTS or test-artifacts/ (gitignored)."""
    path = Path(os.environ.get("INCIDENTD_TEST_ARTIFACTS", "test-artifacts"))
    path = path if path.is_absolute() else REPO_ROOT / path
    path.mkdir(parents=True, exist_ok=True)
    return path


class Pages:
    """Opens pages, each in its own browser context (own cookies), each watched."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.contexts: list[BrowserContext] = []
        self.watches: list[PageWatch] = []

    async def open(self, *, phone: bool = False) -> tuple[Page, PageWatch]:
        options: dict[str, Any] = (
            {"viewport": PHONE, "is_mobile": True, "has_touch": True, "device_scale_factor": 2}
            if phone else {"viewport": DESKTOP})
        context = await self.browser.new_context(**options)
        context.set_default_timeout(WAIT_MS)
        self.contexts.append(context)
        page = await context.new_page()
        watch = PageWatch(page).attach()
        self.watches.append(watch)
        return page, watch

    async def close(self) -> None:
        for context in self.contexts:
            await context.close()


# --------------------------------------------------------------------------
# page actions


async def sign_in(page: Page, site: ConsoleSite, token: str, path: str = "/ui/sign-in", *,
                  name: str | None = None) -> None:
    """Sign in through the form, as a person would: label, field, button; `name`
    is the optional name the timeline shows for what this session does."""
    await page.goto(site.url(path))
    await page.get_by_label("API token").fill(token)
    if name is not None:
        await page.get_by_label("Your name (shown in the timeline)").fill(name)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_load_state()
