"""Console sign-in, sessions and their guard, in process on a real store: the cookie's
flags, expiry, CSRF and Origin checks on API changes made with it, read-only sessions,
sign-out, a token removed by a reload ending its sessions, open redirects refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from daemon import app as daemon_app
from daemon.app import Components
from daemon.config import Config, Overrides, load_config
from tests.conftest import FakeClock, fixture_bytes, reset

Client = TestClient  # type: ignore[type-arg]
ADMIN = "admin-token-5b1c"
SECOND = "second-admin-77d2"
READ = "read-token-90aa"
AM = {"Authorization": "Bearer am-token"}


@dataclass
class Console:
    client: Client
    components: Components
    clock: FakeClock
    path: Path

    def write(self, tokens: list[str]) -> None:
        self.path.write_text(yaml.safe_dump(config(tokens)))


def config(tokens: list[str]) -> dict[str, Any]:
    return {
        "api": {"tokens": [{"value": t} for t in tokens],
                "read_only_tokens": [{"value": READ}]},
        "console": {"session_secret": {"value": "session-secret-for-tests"},
                    "session_hours": 12},
        "integrations": [{"name": "alertmanager", "type": "alertmanager",
                          "auth": {"bearer_tokens": [{"value": "am-token"}]}}],
    }


@pytest.fixture
async def console(database_url: str, tmp_path: Path) -> AsyncIterator[Console]:
    path = tmp_path / "incidentd.yaml"
    path.write_text(yaml.safe_dump(config([ADMIN, SECOND])))

    def loader() -> Config:
        return load_config(path, environ={}, overrides=Overrides(database_url=database_url))

    clock = FakeClock()
    await reset(database_url)
    components = await daemon_app.start(loader(), clock=clock, loader=loader, source=str(path))
    try:
        async with TestClient(TestServer(components.app)) as client:
            yield Console(client, components, clock, path)
    finally:
        await daemon_app.stop(components)


@dataclass(frozen=True)
class Signed:
    cookie: str  # the cookie value
    csrf: str
    set_cookie: str  # the whole Set-Cookie header

    @property
    def headers(self) -> dict[str, str]:
        return {"Cookie": f"incidentd_session={self.cookie}"}

    def change(self, **extra: str) -> dict[str, str]:
        return self.headers | {"X-CSRF-Token": self.csrf} | extra


async def sign_in(client: Client, token: str, *, next_path: str = "/ui/incidents",
                  headers: dict[str, str] | None = None) -> Signed:
    resp = await client.post("/ui/sign-in", data={"token": token, "next": next_path},
                             headers=headers, allow_redirects=False)
    assert resp.status == 303, await resp.text()
    header = resp.headers["Set-Cookie"]
    client.session.cookie_jar.clear()  # each request below says which cookie it sends
    value = SimpleCookie(header)["incidentd_session"].value
    page = await client.get("/ui/incidents", headers={"Cookie": f"incidentd_session={value}"},
                            allow_redirects=False)
    assert page.status == 200, await page.text()
    text = await page.text()
    csrf = text.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
    return Signed(value, csrf, header)


async def open_incident(client: Client) -> None:
    resp = await client.post("/api/v1/alerts/alertmanager",
                             data=fixture_bytes("prometheus_firing.json"), headers=AM)
    assert resp.status == 200, await resp.text()


async def test_signing_in_sets_a_strict_http_only_cookie(console: Console) -> None:
    client = console.client
    signed = await sign_in(client, ADMIN, next_path="/ui/incidents?status=all")
    flags = [p.strip().lower() for p in signed.set_cookie.split(";")]
    assert "httponly" in flags and "samesite=strict" in flags and "path=/" in flags
    assert "secure" not in flags  # plain HTTP: a Secure cookie would never come back
    assert ADMIN not in signed.set_cookie

    resp = await client.post("/ui/sign-in", data={"token": ADMIN, "next": "/ui/cmdb"},
                             headers={"X-Forwarded-Proto": "https"}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/ui/cmdb"
    assert "secure" in [p.strip().lower() for p in resp.headers["Set-Cookie"].split(";")]

    # the session reads the API too, in place of a token
    resp = await client.get("/api/v1/incidents", headers=signed.headers)
    assert resp.status == 200


async def test_a_wrong_token_gets_the_form_again_and_is_logged_without_it(
        console: Console) -> None:
    with capture_logs() as logs:
        resp = await console.client.post("/ui/sign-in", data={"token": "not-a-token-3f"},
                                         allow_redirects=False)
    text = await resp.text()
    assert resp.status == 401
    assert 'role="alert"' in text and "That token is not valid." in text
    assert "Set-Cookie" not in resp.headers
    refused = [e for e in logs if e["event"] == "console sign-in refused"]
    assert len(refused) == 1 and refused[0]["log_level"] == "info"
    assert refused[0]["client"] == "127.0.0.1"
    assert "not-a-token-3f" not in repr(logs)


async def test_sign_in_attempts_are_rate_limited_per_client(console: Console) -> None:
    statuses = []
    for _ in range(12):
        resp = await console.client.post("/ui/sign-in", data={"token": "guess"},
                                         allow_redirects=False)
        statuses.append(resp.status)
    assert statuses[:10] == [401] * 10
    assert statuses[10:] == [429, 429]
    # even the right token waits now
    resp = await console.client.post("/ui/sign-in", data={"token": ADMIN},
                                     allow_redirects=False)
    assert resp.status == 429


async def test_pages_need_a_session_and_remember_where_they_were(console: Console) -> None:
    client = console.client
    resp = await client.get("/ui/incidents?status=all", allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == "/ui/sign-in?next=/ui/incidents?status%3Dall"
    resp = await client.get("/", allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (303, "/ui/incidents")
    for fragment in ("/ui/incidents/rows", "/ui/events"):
        resp = await client.get(fragment, allow_redirects=False)
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "unauthorized"
    forged = {"Cookie": "incidentd_session=YWRtaW58OTk5OTk5OTk5OXx4fHk.c2lnbmF0dXJl"}
    resp = await client.get("/ui/incidents", headers=forged, allow_redirects=False)
    assert resp.status == 303
    resp = await client.get("/api/v1/incidents", headers=forged)
    assert resp.status == 401
    # public: the form and the static files
    assert (await client.get("/ui/sign-in")).status == 200
    resp = await client.get("/ui/static/console.css")
    assert resp.status == 200 and resp.content_type == "text/css"
    assert (await client.get("/ui/static/..%2Fconsole.py")).status == 404


@pytest.mark.parametrize("target", ["//evil.example/x", "http://evil.example/ui/",
                                    "/\\evil.example", "/ui//evil.example", "ui/incidents",
                                    "/api/v1/incidents", "/ui/sign-in"])
async def test_next_never_leaves_the_console(console: Console, target: str) -> None:
    resp = await console.client.post("/ui/sign-in", data={"token": ADMIN, "next": target},
                                     allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (303, "/ui/incidents")
    resp = await console.client.get("/ui/sign-in", params={"next": target})
    assert 'name="next" value="/ui/incidents"' in await resp.text()


async def test_sessions_expire(console: Console) -> None:
    signed = await sign_in(console.client, ADMIN)
    console.clock.advance(11.9 * 3600)
    resp = await console.client.get("/ui/incidents", headers=signed.headers,
                                    allow_redirects=False)
    assert resp.status == 200
    console.clock.advance(0.2 * 3600)
    resp = await console.client.get("/ui/incidents", headers=signed.headers,
                                    allow_redirects=False)
    assert resp.status == 303
    assert (await console.client.get("/api/v1/incidents", headers=signed.headers)).status == 401


async def test_changes_with_a_session_need_the_csrf_token_and_this_origin(
        console: Console) -> None:
    client = console.client
    await open_incident(client)
    signed = await sign_in(client, ADMIN)
    ack = "/api/v1/incidents/1/acknowledge"
    for headers in (signed.headers, signed.headers | {"X-CSRF-Token": "wrong"},
                    signed.change(Origin="https://evil.example"),
                    signed.change(Origin="null")):
        resp = await client.post(ack, json={"actor": "alice"}, headers=headers)
        assert resp.status == 403, headers
        assert (await resp.json())["error"]["code"] == "forbidden"
    detail = await (await client.get("/api/v1/incidents/1", headers=signed.headers)).json()
    assert detail["status"] == "triggered"

    host = f"{client.host}:{client.port}"
    resp = await client.post(ack, json={"actor": "alice"},
                             headers=signed.change(Origin=f"http://{host}"))
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["status"] == "acknowledged"
    # behind a proxy that rewrites Host, the host it forwards is this origin
    resp = await client.post("/api/v1/incidents/1/hold", headers=signed.change(
        Origin="https://incidents.example.com", **{"X-Forwarded-Host": "incidents.example.com"}))
    assert resp.status == 200, await resp.text()
    # a CSRF token of another session is no good either
    other = await sign_in(client, ADMIN)
    resp = await client.post("/api/v1/incidents/1/resolve",
                             headers=signed.headers | {"X-CSRF-Token": other.csrf})
    assert resp.status == 403


async def test_a_read_only_session_reads_everything_and_changes_nothing(
        console: Console) -> None:
    client = console.client
    await open_incident(client)
    signed = await sign_in(client, READ)
    page = await (await client.get("/ui/incidents", headers=signed.headers)).text()
    assert "read-only" in page and "INC-000001" in page
    assert (await client.get("/api/v1/incidents/1", headers=signed.headers)).status == 200
    resp = await client.post("/api/v1/incidents/1/acknowledge", headers=signed.change())
    assert resp.status == 403
    assert "read-only" in (await resp.json())["error"]["message"]
    resp = await client.patch("/api/v1/incidents/1", json={"priority": "P1", "reason": "x"},
                              headers=signed.change())
    assert resp.status == 403


async def test_sign_out_clears_the_cookie(console: Console) -> None:
    client = console.client
    signed = await sign_in(client, ADMIN)
    resp = await client.post("/ui/sign-out", data={"csrf_token": "wrong"},
                             headers=signed.headers, allow_redirects=False)
    assert resp.status == 403  # another site cannot sign you out either
    resp = await client.post("/ui/sign-out", data={"csrf_token": signed.csrf},
                             headers=signed.headers, allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (303, "/ui/sign-in")
    cleared = SimpleCookie(resp.headers["Set-Cookie"])["incidentd_session"]
    assert cleared.value == "" and cleared["max-age"] == "0"


async def test_a_token_removed_by_a_reload_ends_its_sessions(console: Console) -> None:
    client = console.client
    by_second = await sign_in(client, SECOND)
    by_first = await sign_in(client, ADMIN)
    console.write([ADMIN])
    resp = await client.post("/-/reload", headers={"Authorization": f"Bearer {ADMIN}"})
    assert resp.status == 200, await resp.text()
    resp = await client.get("/ui/incidents", headers=by_second.headers, allow_redirects=False)
    assert resp.status == 303
    assert (await client.get("/api/v1/incidents", headers=by_second.headers)).status == 401
    resp = await client.get("/ui/incidents", headers=by_first.headers, allow_redirects=False)
    assert resp.status == 200  # the other token's sessions go on
