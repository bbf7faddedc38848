"""Sealed tokens: what action links and console cookies are made of."""

from __future__ import annotations

import pytest

from daemon.sealed import seal, unseal

KEY = b"k" * 32


def test_a_sealed_payload_comes_back() -> None:
    token = seal(KEY, b'{"a":1}|x')
    assert unseal(KEY, token) == b'{"a":1}|x'
    assert "=" not in token and token.count(".") == 1


@pytest.mark.parametrize("mangle", [
    lambda t: t[:-2] + ("A" if t[-2] != "A" else "B") + t[-1],  # signature changed
    lambda t: ("B" if t[0] != "B" else "C") + t[1:],  # payload changed
    lambda t: t.replace(".", ""),  # no dot
    lambda t: "." + t.split(".")[1],  # no payload
    lambda t: t.split(".")[0] + ".!!!",  # signature not base64url
])
def test_a_changed_token_is_refused(mangle: object) -> None:
    token = seal(KEY, b"payload")
    assert callable(mangle)
    assert unseal(KEY, mangle(token)) is None


def test_another_key_or_domain_does_not_open_it() -> None:
    token = seal(KEY, b"payload", domain=b"session\x00")
    assert unseal(KEY, token, domain=b"session\x00") == b"payload"
    assert unseal(KEY, token) is None
    assert unseal(b"other" * 8, token, domain=b"session\x00") is None
