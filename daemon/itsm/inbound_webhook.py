"""The generic inbound action webhook: chat bots and other tools acknowledge or resolve.

`POST /api/v1/webhooks/actions` with `{"incident": 42 | "INC-000042", "action":
"acknowledge" | "resolve", "actor": "ann", "note": "optional"}`, signed the way our
outbound webhooks are:

    X-Incidentd-Signature: v1=<hex HMAC-SHA256(secret, raw body)>

The header may carry several comma-separated `v1=` values (a sender rotating its
secret signs with both); the request is accepted when any value matches any
configured secret. Optionally the sender adds `X-Incidentd-Timestamp: <unix
seconds>`; the signature then covers `f"{timestamp}.{raw body}"`, the timestamp
must be within `max_age_seconds` of our clock, and the same signed request is
accepted only once within that window. Without a timestamp a captured request
could be sent again later; senders that can should add one.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
)

from daemon.clock import Clock
from daemon.errors import Unauthorized
from daemon.models import person_actor
from daemon.receivers.auth import ReplayGuard
from daemon.receivers.validation import invalid_input

SIGNATURE_HEADER = "X-Incidentd-Signature"
TIMESTAMP_HEADER = "X-Incidentd-Timestamp"
_SCHEME = "v1="
_KEY = re.compile(r"^(?:INC-)?(\d{1,18})$", re.IGNORECASE)


def incident_ref(value: Any) -> int:
    """An incident named by its numeric id or its key (`INC-000123`)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and (match := _KEY.match(value.strip())):
        return int(match.group(1))
    raise ValueError("must be an incident id or key like INC-000123")


IncidentRef = Annotated[int, BeforeValidator(incident_ref), WithJsonSchema({
    "anyOf": [{"type": "integer", "minimum": 1},
              {"type": "string", "pattern": "^(INC-)?[0-9]+$"}],
    "description": "the incident's id, or its key (INC-000123)"})]


class ActionRequest(BaseModel):
    """What a bot asks for: one move on one incident, on behalf of `actor`."""

    model_config = ConfigDict(extra="forbid")
    incident: IncidentRef
    action: Literal["acknowledge", "resolve"]
    actor: Annotated[str, AfterValidator(person_actor)] = Field(min_length=1, max_length=255)
    note: str | None = Field(default=None, max_length=10_000)


def parse(body: bytes) -> ActionRequest:
    """The request body, or a 400 naming the field."""
    try:
        return ActionRequest.model_validate_json(body or b"null")
    except ValidationError as exc:
        raise invalid_input(exc, "request body") from None


class InboundVerifier:
    """Checks `X-Incidentd-Signature` (and `X-Incidentd-Timestamp` when given)."""

    def __init__(self, *, secrets: Sequence[str], max_age_seconds: int, clock: Clock) -> None:
        self._keys = tuple(s.encode() for s in secrets if s)
        self._max_age = max_age_seconds
        self._clock = clock
        # Twice the age window: a timestamp may be up to max_age in the future too.
        self._replay = ReplayGuard(window_seconds=2 * max_age_seconds)

    @property
    def configured(self) -> bool:
        return bool(self._keys)

    def verify(self, headers: Mapping[str, str], body: bytes) -> bytes | None:
        """Raise `Unauthorized` unless signed with a configured secret.

        Returns the replay key of a timestamped request (give it to `forget` if the
        request then fails, so the sender's retry is accepted), else None.
        """
        if not self._keys:
            raise Unauthorized("inbound webhook not configured (set "
                               "notifications.inbound_webhook.secrets)")
        given = _signatures(headers.get(SIGNATURE_HEADER, ""))
        stamp = headers.get(TIMESTAMP_HEADER)
        signed = body if stamp is None else self._fresh(stamp).encode() + b"." + body
        expected = [hmac.new(k, signed, hashlib.sha256).digest() for k in self._keys]
        matched = False
        for candidate in given:  # every pair is compared: timing says nothing
            for wanted in expected:
                matched |= hmac.compare_digest(candidate, wanted)
        if not matched:
            raise Unauthorized(f"{SIGNATURE_HEADER} does not match the body")
        if stamp is None:
            return None
        key = hashlib.sha256(signed).digest()
        if not self._replay.claim(key, self._clock.now().timestamp()):
            raise Unauthorized("request already received (replay)")
        return key

    def forget(self, key: bytes | None) -> None:
        if key is not None:
            self._replay.release(key)

    def _fresh(self, stamp: str) -> str:
        stamp = stamp.strip()
        if not (stamp.isascii() and stamp.isdigit()):  # int() fails on "²"
            raise Unauthorized(f"{TIMESTAMP_HEADER} must be a unix time in seconds")
        if abs(self._clock.now().timestamp() - int(stamp)) > self._max_age:
            raise Unauthorized(f"{TIMESTAMP_HEADER} is more than {self._max_age}s from now")
        return stamp


def _signatures(header: str) -> list[bytes]:
    """The `v1=` values of the header; other schemes are ignored (a later version)."""
    if not header.strip():
        raise Unauthorized(f"missing {SIGNATURE_HEADER} header")
    found: list[bytes] = []
    for part in header.split(","):
        part = part.strip()
        if not part.startswith(_SCHEME):
            continue
        try:
            found.append(bytes.fromhex(part[len(_SCHEME):]))
        except ValueError:
            raise Unauthorized(f"{SIGNATURE_HEADER}: a v1 value is not hex") from None
    if not found:
        raise Unauthorized(f"{SIGNATURE_HEADER} has no v1= signature")
    return found
