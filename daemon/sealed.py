"""Sealed tokens: `base64url(payload).base64url(HMAC-SHA256(key, domain + base64url(payload)))`.

What signed action links (`daemon.itsm.action_links`) and console session cookies
(`daemon.api.session`) are made of. The payload is readable by anyone who holds the
token; the seal only proves we wrote it. `domain` keeps a token of one kind from
passing as another kind signed with the same key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def seal(key: bytes, payload: bytes, *, domain: bytes = b"") -> str:
    encoded = b64url(payload)
    return f"{encoded}.{b64url(_mac(key, domain, encoded))}"


def unseal(key: bytes, token: str, *, domain: bytes = b"") -> bytes | None:
    """The payload of a token we sealed with `key`, or None (forged, garbled)."""
    encoded, dot, signature = token.partition(".")
    if not dot or not encoded:
        return None
    try:
        given = unb64url(signature)
        payload = unb64url(encoded)
    except ValueError:
        return None
    if not hmac.compare_digest(given, _mac(key, domain, encoded)):
        return None
    return payload


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError("not base64url") from exc


def _mac(key: bytes, domain: bytes, encoded: str) -> bytes:
    return hmac.new(key, domain + encoded.encode(), hashlib.sha256).digest()
