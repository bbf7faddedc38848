"""Console sign-out ends the session everywhere, and the name given at sign-in is who
the timeline says acted. In process on a real store (SQLite and PostgreSQL): a copy of
a signed-out cookie opens no page, no API call, no event stream, on this replica or
another on the same database; the database away while a cookie is checked is the
outage page (503), never "signed in" nor a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.engine import make_url

from daemon import app as daemon_app
from daemon.api.session import ConsoleSession, clean_name
from daemon.config import Config, Overrides, load_config
from daemon.store import Store
from daemon.store import sessions as signouts
from daemon.store.tables import console_signouts
from tests.conftest import FakeClock, reset
from tests.e2e.tcp_proxy import TcpProxy
from tests.integration.test_console_auth import (
    ADMIN,
    READ,
    Client,
    Signed,
    config,
    open_incident,
    sign_in,
)

Loader = Callable[[], Config]


def loader_for(database_url: str, tmp_path: Path, name: str) -> Loader:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config([ADMIN])))
    return lambda: load_config(path, environ={}, overrides=Overrides(database_url=database_url))


@asynccontextmanager
async def replica(loader: Loader, clock: FakeClock) -> AsyncIterator[Client]:
    """A daemon (app and background parts) on `loader`'s database, over HTTP."""
    components = await daemon_app.start(loader(), clock=clock, loader=loader)
    try:
        async with TestClient(TestServer(components.app)) as client:
            yield client
    finally:
        await daemon_app.stop(components)


@pytest.fixture
async def client(database_url: str, tmp_path: Path) -> AsyncIterator[Client]:
    await reset(database_url)
    async with replica(loader_for(database_url, tmp_path, "a"), FakeClock()) as one:
        yield one


@pytest.fixture
async def two(pg_database: str, tmp_path: Path) -> AsyncIterator[tuple[Client, Client]]:
    """Two replicas on one PostgreSQL database (SQLite serves one daemon) with one
    session secret, as a deployment has."""
    await reset(pg_database)
    clock = FakeClock()
    async with replica(loader_for(pg_database, tmp_path, "a"), clock) as first, \
            replica(loader_for(pg_database, tmp_path, "b"), clock) as second:
        yield first, second


async def sign_out(client: Client, signed: Signed) -> None:
    resp = await client.post("/ui/sign-out", data={"csrf_token": signed.csrf},
                             headers=signed.headers, allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (303, "/ui/sign-in"), await resp.text()


async def refused_everywhere(client: Client, signed: Signed) -> None:
    """The cookie opens nothing: a page sends to sign-in, the API and the stream say 401."""
    resp = await client.get("/ui/incidents", headers=signed.headers, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"].startswith("/ui/sign-in")
    for path in ("/api/v1/incidents", "/ui/events", "/ui/incidents/rows"):
        resp = await client.get(path, headers=signed.headers)
        assert resp.status == 401, (path, await resp.text())
    resp = await client.post("/api/v1/incidents/1/acknowledge", json={},
                             headers=signed.change())
    assert resp.status == 401, await resp.text()


async def test_a_signed_out_cookie_opens_nothing(client: Client) -> None:
    await open_incident(client)
    signed = await sign_in(client, ADMIN)
    kept = await sign_in(client, ADMIN)  # another browser's session goes on
    await sign_out(client, signed)
    await refused_everywhere(client, signed)
    await sign_out(client, signed)  # signing out again (another tab) is no error either

    resp = await client.get("/ui/incidents", headers=kept.headers, allow_redirects=False)
    assert resp.status == 200
    resp = await client.post("/api/v1/incidents/1/acknowledge", json={},
                             headers=kept.change())
    assert resp.status == 200, await resp.text()
    # A token still opens the API: Bearer calls never look at sign-outs.
    resp = await client.get("/api/v1/incidents", headers={"Authorization": f"Bearer {ADMIN}"})
    assert resp.status == 200


@pytest.mark.postgres
async def test_another_replica_refuses_it_too(two: tuple[Client, Client]) -> None:
    first, second = two
    await open_incident(first)
    signed = await sign_in(first, ADMIN)
    # The other replica admits the session: one secret, one database.
    resp = await second.get("/ui/incidents", headers=signed.headers, allow_redirects=False)
    assert resp.status == 200
    await sign_out(first, signed)
    await refused_everywhere(second, signed)


async def test_sign_out_keeps_rows_only_until_their_cookies_expire(database_url: str) -> None:
    await reset(database_url)
    store = Store.open(database_url)
    now = datetime(2026, 11, 27, 5, 0, tzinfo=UTC)
    try:
        async with store.write() as conn:
            await signouts.revoke(conn, "old", now + timedelta(hours=1), now=now)
            await signouts.revoke(conn, "young", now + timedelta(hours=12), now=now)
            await signouts.revoke(conn, "young", now + timedelta(hours=12), now=now)
        async with store.write() as conn:
            later = now + timedelta(hours=2)
            await signouts.revoke(conn, "new", later + timedelta(hours=12), now=later)
        async with store.read() as conn:
            assert not await signouts.is_revoked(conn, "old")  # expired: its row is gone
            assert await signouts.is_revoked(conn, "young")
            assert await signouts.is_revoked(conn, "new")
            assert not await signouts.is_revoked(conn, "never")
            ids = set((await conn.execute(sa.select(console_signouts.c.session_id))).scalars())
        assert ids == {"young", "new"}
    finally:
        await store.close()


# --------------------------------------------------------------------------
# the database away while a cookie is checked


@pytest.mark.postgres
async def test_the_database_away_during_the_check_is_the_outage_page(
        pg_database: str, tmp_path: Path) -> None:
    await reset(pg_database)
    parsed = make_url(pg_database)
    proxy = await TcpProxy(parsed.host or "127.0.0.1", parsed.port or 5432).start()
    proxied = parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(
        hide_password=False)
    try:
        async with replica(loader_for(proxied, tmp_path, "a"), FakeClock()) as client:
            signed = await sign_in(client, ADMIN)
            await proxy.cut()
            try:
                resp = await client.get("/ui/incidents", headers=signed.headers,
                                        allow_redirects=False)
                text = await resp.text()
                assert resp.status == 503, text
                assert "The database is unavailable" in text and "Traceback" not in text
                assert 'name="csrf-token" content=""' in text  # not shown as signed in
                for path in ("/ui/events", "/api/v1/incidents"):
                    resp = await client.get(path, headers=signed.headers)
                    assert resp.status == 503, (path, await resp.text())
                    assert (await resp.json())["error"]["code"] == "store_unavailable"
                resp = await client.post("/ui/sign-out", data={"csrf_token": signed.csrf},
                                         headers=signed.headers, allow_redirects=False)
                assert resp.status == 503  # not recorded, so not claimed done
                # The sign-in form itself needs no database.
                resp = await client.get("/ui/sign-in", headers=signed.headers)
                assert resp.status == 200
            finally:
                await proxy.restore()
            resp = await client.get("/ui/incidents", headers=signed.headers,
                                    allow_redirects=False)
            assert resp.status == 200, await resp.text()
    finally:
        await proxy.close()


# --------------------------------------------------------------------------
# who did it


async def test_the_name_given_at_sign_in_is_the_actor_in_the_timeline(
        client: Client) -> None:
    await open_incident(client)
    resp = await client.post("/ui/sign-in", data={"token": ADMIN, "name": "  Ann Lee  "},
                             allow_redirects=False)
    assert resp.status == 303, await resp.text()
    named = await _signed_from(client, resp.headers["Set-Cookie"])
    page = await (await client.get("/ui/incidents/1", headers=named.headers)).text()
    # Acknowledge, Resolve, Escalate and Set priority each send it.
    assert page.count('<input type="hidden" name="actor" value="Ann Lee (console)">') >= 4

    resp = await client.post("/api/v1/incidents/1/acknowledge",
                             json={"actor": "Ann Lee (console)"}, headers=named.change())
    assert resp.status == 200, await resp.text()
    anonymous = await sign_in(client, ADMIN)
    page = await (await client.get("/ui/incidents/1", headers=anonymous.headers)).text()
    assert '<input type="hidden" name="actor" value="console">' in page
    resp = await client.patch("/api/v1/incidents/1", headers=anonymous.change(),
                              json={"priority": "P4", "reason": "staging", "actor": "console"})
    assert resp.status == 200, await resp.text()

    detail = await (await client.get("/api/v1/incidents/1", headers=named.headers)).json()
    actors = {e["kind"]: e["actor"] for e in detail["timeline"]}
    assert actors["acknowledged"] == "Ann Lee (console)"
    assert actors["priority_changed"] == "console"
    live = await (await client.get("/ui/incidents/1/live", headers=named.headers)).text()
    assert '<span class="actor">Ann Lee (console)</span>' in live


async def test_read_only_sessions_send_no_actor(client: Client) -> None:
    await open_incident(client)
    resp = await client.post("/ui/sign-in", data={"token": READ, "name": "Bob"},
                             allow_redirects=False)
    assert resp.status == 303
    reader = await _signed_from(client, resp.headers["Set-Cookie"])
    page = await (await client.get("/ui/incidents/1", headers=reader.headers)).text()
    assert 'name="actor"' not in page and "Read-only session" in page


@pytest.mark.parametrize(("name", "message"), [
    ("x" * 65, "at most 64 characters"),
    ("Ann\u0007", "printable"),
    ("runbook:restart", "reserved"),
])
async def test_a_name_that_cannot_be_shown_is_refused_at_sign_in(
        client: Client, name: str, message: str) -> None:
    resp = await client.post("/ui/sign-in", data={"token": ADMIN, "name": name},
                             allow_redirects=False)
    text = await resp.text()
    assert resp.status == 400, text
    assert message in text and 'role="alert"' in text
    assert "Set-Cookie" not in resp.headers
    assert ADMIN not in text


def test_names_are_trimmed_and_blank_means_none() -> None:
    assert clean_name("  Ann  ") == "Ann"
    assert clean_name("   ") is None and clean_name(None) is None
    assert clean_name("x" * 64) == "x" * 64
    assert clean_name("Zoë | on call") == "Zoë | on call"  # "|" is the payload's separator
    session = ConsoleSession(scope="admin", expires_at=datetime.now(UTC), csrf_token="t")
    assert session.actor == "console"


async def test_a_name_with_the_separator_survives_the_cookie(
        client: Client) -> None:
    await open_incident(client)
    resp = await client.post("/ui/sign-in", data={"token": ADMIN, "name": "Zoë | on call"},
                             allow_redirects=False)
    signed = await _signed_from(client, resp.headers["Set-Cookie"])
    page = await (await client.get("/ui/incidents/1", headers=signed.headers)).text()
    assert 'value="Zoë | on call (console)"' in page


async def _signed_from(client: Client, set_cookie: str) -> Signed:
    """A session from a Set-Cookie header (signed in with more than a token)."""
    client.session.cookie_jar.clear()
    value = SimpleCookie(set_cookie)["incidentd_session"].value
    headers = {"Cookie": f"incidentd_session={value}"}
    text = await (await client.get("/ui/incidents", headers=headers)).text()
    csrf = text.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
    return Signed(value, csrf, set_cookie)

