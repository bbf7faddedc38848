"""Signed action links: the token names incident, action and person; it is signed,
expires, and works once (the last on a real store, SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from daemon.itsm.action_links import ActionLinks, InvalidLink
from daemon.store import Store
from tests.conftest import FakeClock

SECRET = "link-secret"


def links(clock: FakeClock, secret: str = SECRET, ttl: int = 3600) -> ActionLinks:
    return ActionLinks(secret=secret, ttl_seconds=ttl, public_url="https://ops.example/",
                       clock=clock)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_url_round_trip_names_incident_action_person(clock: FakeClock) -> None:
    url = links(clock).url(42, "acknowledge", "ann@example.com")
    assert url.startswith("https://ops.example/actions/")
    claim = links(clock).verify(url.rsplit("/", 1)[1])
    assert (claim.incident_id, claim.action, claim.person) == (42, "acknowledge",
                                                               "ann@example.com")
    assert (claim.expires_at - clock.now()).total_seconds() == 3600


def test_signature_is_hmac_sha256_of_the_payload(clock: FakeClock) -> None:
    payload, _, signature = links(clock).token(7, "resolve", "bob").partition(".")
    expected = hmac.new(SECRET.encode(), payload.encode(), hashlib.sha256).digest()
    assert unb64(signature) == expected
    assert json.loads(unb64(payload))["a"] == "resolve"


def test_each_link_is_unique(clock: FakeClock) -> None:
    made = {links(clock).token(1, "acknowledge", "ann") for _ in range(50)}
    assert len(made) == 50


def test_only_acknowledge_and_resolve_have_links(clock: FakeClock) -> None:
    with pytest.raises(ValueError):
        links(clock).token(1, "close", "ann")


@pytest.mark.parametrize("mangle", [
    "other-secret", "changed-person", "changed-action", "cut-signature", "no-signature",
    "empty", "dot", "not-base64", "non-ascii",
])
def test_forged_or_garbled_tokens_are_refused(clock: FakeClock, mangle: str) -> None:
    token = links(clock).token(1, "acknowledge", "ann")
    payload, _, signature = token.partition(".")
    claim = json.loads(unb64(payload))
    bad = {
        "other-secret": links(clock, secret="other").token(1, "acknowledge", "ann"),
        "changed-person": f"{b64(json.dumps({**claim, 'p': 'mallory'}).encode())}.{signature}",
        "changed-action": f"{b64(json.dumps({**claim, 'a': 'resolve'}).encode())}.{signature}",
        "cut-signature": f"{payload}.{signature[:-4]}",
        "no-signature": payload,
        "empty": "",
        "dot": ".",
        "not-base64": f"{payload}.@@@@",
        "non-ascii": f"{payload}.é",
    }[mangle]
    with pytest.raises(InvalidLink) as err:
        links(clock).verify(bad)
    assert err.value.status == 403
    assert SECRET not in err.value.message


def test_expires_after_ttl(clock: FakeClock) -> None:
    token = links(clock, ttl=600).token(1, "acknowledge", "ann")
    clock.advance(599)
    links(clock, ttl=600).verify(token)
    clock.advance(1)
    with pytest.raises(InvalidLink, match="expired"):
        links(clock, ttl=600).verify(token)


async def test_a_link_works_once(store: Store, clock: FakeClock) -> None:
    maker = links(clock)
    first = maker.verify(maker.token(1, "acknowledge", "ann"))
    other = maker.verify(maker.token(1, "acknowledge", "ann"))
    async with store.write() as conn:
        await maker.use(conn, first, clock.now())
    with pytest.raises(InvalidLink, match=r"already used \(ann"):
        async with store.write() as conn:
            await maker.use(conn, first, clock.now())
    async with store.write() as conn:  # another link of the same person and incident
        await maker.use(conn, other, clock.now())


async def test_a_use_rolled_back_leaves_the_link_usable(store: Store, clock: FakeClock) -> None:
    maker = links(clock)
    claim = maker.verify(maker.token(1, "resolve", "ann"))
    with pytest.raises(RuntimeError):
        async with store.write() as conn:
            await maker.use(conn, claim, clock.now())
            raise RuntimeError("the rest of the transaction failed")
    async with store.write() as conn:
        await maker.use(conn, claim, clock.now())
