"""Credentials an endpoint accepts: bearer tokens, basic auth, HMAC body signatures.

Every comparison is constant-time, and every accepted secret is tried, so
timing tells nothing about which one (or whether any) matched.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from daemon.errors import Unauthorized


def matches_any(given: str, accepted: Sequence[str]) -> bool:
    """Whether `given` equals one of `accepted`, in time independent of which."""
    return _any_equal(given.encode(), [a.encode() for a in accepted])


def _any_equal(given: bytes, accepted: Sequence[bytes]) -> bool:
    matched = False
    for candidate in accepted:
        matched |= hmac.compare_digest(given, candidate)
    return matched


class ReplayGuard:
    """Remembers signatures for the replay window, so one signed request counts once.

    In memory: a replica only knows what it saw itself.
    """

    def __init__(self, *, window_seconds: float, max_entries: int = 100_000) -> None:
        self._window = window_seconds
        self._max = max_entries
        self._seen: OrderedDict[bytes, float] = OrderedDict()

    def claim(self, signature: bytes, now: float) -> bool:
        """True the first time a signature is seen within the window."""
        while self._seen and (
            next(iter(self._seen.values())) < now or len(self._seen) >= self._max
        ):
            self._seen.popitem(last=False)
        if signature in self._seen:
            return False
        self._seen[signature] = now + self._window
        return True

    def release(self, signature: bytes) -> None:
        """Forget a claim whose request failed, so the sender's retry is accepted."""
        self._seen.pop(signature, None)


@dataclass(frozen=True, slots=True, kw_only=True)
class HmacVerifier:
    secrets: tuple[bytes, ...]
    headers: tuple[str, ...]  # the first one present carries the signature
    prefix: str = ""
    encoding: str = "hex"
    timestamp_header: str | None = None
    max_age_seconds: float = 300
    clock: Callable[[], float] = time.time
    replay: ReplayGuard | None = None

    def verify(self, headers: Mapping[str, str], body: bytes) -> bytes:
        """Raise `Unauthorized` unless the body is signed; return the signature."""
        name = next((h for h in self.headers if h in headers), self.headers[0])
        given = headers.get(name)
        if not given:
            raise Unauthorized(f"missing {name} header")
        if self.prefix and not given.startswith(self.prefix):
            raise Unauthorized(f"{name} must start with {self.prefix!r}")
        signature = self._decode(name, given[len(self.prefix):].strip())
        signed = body
        if self.timestamp_header:
            stamp = headers.get(self.timestamp_header, "")
            self._check_fresh(stamp)
            signed = stamp.encode() + b":" + body
        expected = [hmac.new(s, signed, hashlib.sha256).digest() for s in self.secrets]
        if not _any_equal(signature, expected):
            raise Unauthorized("signature does not match the body")
        if self.replay is not None and not self.replay.claim(signature, self.clock()):
            raise Unauthorized("request already received (replay)")
        return signature

    def _decode(self, name: str, text: str) -> bytes:
        try:
            if self.encoding == "hex":
                return bytes.fromhex(text)
            return base64.b64decode(text, validate=True)
        except (ValueError, binascii.Error):
            raise Unauthorized(f"{name} is not {self.encoding}") from None

    def _check_fresh(self, stamp: str) -> None:
        if not stamp:
            raise Unauthorized(f"missing {self.timestamp_header} header")
        try:
            sent = float(stamp)
        except ValueError:
            raise Unauthorized(f"{self.timestamp_header} is not a unix time") from None
        if sent > 1e12:  # milliseconds
            sent /= 1000
        if abs(self.clock() - sent) > self.max_age_seconds:
            raise Unauthorized(
                f"{self.timestamp_header} is more than {self.max_age_seconds:g}s from now"
            )


@dataclass(frozen=True, slots=True)
class Credentials:
    """Any one matching credential admits the request (several allow rotation)."""

    bearer: tuple[str, ...] = ()
    basic: tuple[tuple[str, str], ...] = ()
    hmac: HmacVerifier | None = None
    _bearer_bytes: tuple[bytes, ...] = field(init=False, repr=False)
    _basic_bytes: tuple[bytes, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_bearer_bytes", tuple(t.encode() for t in self.bearer))
        object.__setattr__(
            self, "_basic_bytes", tuple(f"{u}\x00{p}".encode() for u, p in self.basic)
        )

    @property
    def needs_body(self) -> bool:
        return self.hmac is not None

    def admits(self, authorization: str | None) -> bool:
        """Whether the `Authorization` header alone admits the request."""
        if not authorization:
            return False
        scheme, _, value = authorization.partition(" ")
        scheme = scheme.lower()
        value = value.strip()
        if scheme == "bearer" and self._bearer_bytes:
            return _any_equal(value.encode(), self._bearer_bytes)
        if scheme == "basic" and self._basic_bytes:
            return self._basic_ok(value)
        return False

    def check(self, authorization: str | None) -> None:
        """Header-only check (the admin API): raise `Unauthorized` unless admitted."""
        if not self.admits(authorization):
            raise Unauthorized("invalid credentials" if authorization else
                               "missing Authorization header")

    def check_request(self, headers: Mapping[str, str], body: bytes) -> bytes | None:
        """Check a request with its body; returns the HMAC signature when that admitted it."""
        authorization = headers.get("Authorization")
        if self.admits(authorization):
            return None
        hmac_only = not (self._bearer_bytes or self._basic_bytes)
        if self.hmac is not None and (hmac_only or any(h in headers for h in self.hmac.headers)):
            return self.hmac.verify(headers, body)
        self.check(authorization)
        return None

    def forget(self, signature: bytes) -> None:
        if self.hmac is not None and self.hmac.replay is not None:
            self.hmac.replay.release(signature)

    def _basic_ok(self, value: str) -> bool:
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return _any_equal(f"{user}\x00{password}".encode(), self._basic_bytes)
