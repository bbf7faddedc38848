"""Credentials an endpoint accepts: bearer tokens and basic auth, compared in constant time."""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from daemon.errors import Unauthorized


@dataclass(frozen=True, slots=True)
class Credentials:
    """Any one matching credential admits the request (several allow rotation)."""

    bearer: tuple[str, ...] = ()
    basic: tuple[tuple[str, str], ...] = ()

    def check(self, authorization: str | None) -> None:
        """Raise `Unauthorized` unless the `Authorization` header matches."""
        if not authorization:
            raise Unauthorized("missing Authorization header")
        scheme, _, value = authorization.partition(" ")
        scheme = scheme.lower()
        value = value.strip()
        if scheme == "bearer" and self.bearer and _any_equal(value, self.bearer):
            return
        if scheme == "basic" and self.basic and self._basic_ok(value):
            return
        raise Unauthorized("invalid credentials")

    def _basic_ok(self, value: str) -> bool:
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        joined = f"{user}\x00{password}"
        return _any_equal(joined, [f"{u}\x00{p}" for u, p in self.basic])


def _any_equal(given: str, accepted: Sequence[str]) -> bool:
    # Compare against every accepted value so timing does not tell which matched.
    given_bytes = given.encode()
    matched = False
    for candidate in accepted:
        matched |= hmac.compare_digest(given_bytes, candidate.encode())
    return matched
