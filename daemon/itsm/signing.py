"""How incidentd signs what it sends (notification webhooks, generic connectors)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence


def signature(secrets: Sequence[bytes], body: bytes) -> str:
    """`X-Incidentd-Signature`: `v1=<hex HMAC-SHA256(secret, body)>` per secret, by commas.

    One `v1=` per secret, so during a rotation a receiver holding either verifies."""
    return ",".join("v1=" + hmac.new(s, body, hashlib.sha256).hexdigest() for s in secrets)
