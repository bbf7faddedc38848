"""Signed action links: a URL in a notification that acknowledges or resolves one
incident, or approves or denies one runbook run waiting for approval, on behalf of
one person, for a limited time, once.

The token is `<payload>.<signature>`, both base64url: the payload is compact JSON
naming the incident, the action, the person, the expiry, a random nonce and, for
`approve`/`deny`, the run (`r`); the signature is HMAC-SHA256 of the payload text
with the configured secret. Using a link records its nonce, so a second use (a
forwarded mail, a double click) is refused, on every replica.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.clock import Clock
from daemon.errors import UserError
from daemon.sealed import seal, unseal
from daemon.store.tables import used_action_tokens

ACTIONS = ("acknowledge", "resolve", "approve", "deny")
# Actions on a runbook run rather than on the incident: their links name the run.
RUN_ACTIONS = frozenset({"approve", "deny"})


class InvalidLink(UserError):
    """Forged, garbled, expired or already used: the page says which, nothing moves."""

    status = 403
    code = "invalid_link"


@dataclass(frozen=True, slots=True)
class ActionClaim:
    incident_id: int
    action: str
    person: str
    expires_at: datetime
    nonce: str
    run_id: int | None = None  # the run an `approve`/`deny` link decides


class ActionLinks:
    def __init__(self, *, secret: str, ttl_seconds: int, public_url: str, clock: Clock) -> None:
        self._key = secret.encode()
        self._ttl = timedelta(seconds=ttl_seconds)
        self._base = public_url.rstrip("/")
        self._clock = clock

    def reconfigure(self, *, secret: str, ttl_seconds: int, public_url: str) -> None:
        """A configuration reload (one assignment: no caller sees half of it)."""
        self._key, self._ttl, self._base = (secret.encode(), timedelta(seconds=ttl_seconds),
                                            public_url.rstrip("/"))

    def url(self, incident_id: int, action: str, person: str, run_id: int | None = None
            ) -> str:
        return f"{self._base}/actions/{self.token(incident_id, action, person, run_id)}"

    def token(self, incident_id: int, action: str, person: str, run_id: int | None = None
              ) -> str:
        if action not in ACTIONS:
            raise ValueError(f"no action link for {action!r}")
        if (action in RUN_ACTIONS) != (run_id is not None):
            raise ValueError(f"a {action!r} link {'needs' if run_id is None else 'takes no'} "
                             "run id")
        expires = self._clock.now() + self._ttl
        claim: dict[str, object] = {"i": incident_id, "a": action, "p": person,
                                    "e": int(expires.timestamp()),
                                    "n": secrets.token_urlsafe(12)}
        if run_id is not None:
            claim["r"] = run_id
        return seal(self._key, json.dumps(claim, separators=(",", ":")).encode())

    def verify(self, token: str) -> ActionClaim:
        """The claim of a genuine, unexpired token; `InvalidLink` otherwise."""
        payload = unseal(self._key, token)
        if payload is None:
            raise InvalidLink("this link is not valid (garbled or bad signature)")
        claim = json.loads(payload)
        expires = datetime.fromtimestamp(claim["e"], UTC)
        if self._clock.now() >= expires:
            raise InvalidLink("this link has expired; use the incident page or ask for a "
                              "new notification")
        action = str(claim["a"])
        run_id = int(claim["r"]) if claim.get("r") is not None else None
        # Signed by us, so only a link from a newer or older daemon could fail this.
        if action not in ACTIONS or (action in RUN_ACTIONS) != (run_id is not None):
            raise InvalidLink("this link is not valid (unknown action)")
        return ActionClaim(incident_id=int(claim["i"]), action=action,
                           person=str(claim["p"]), expires_at=expires, nonce=str(claim["n"]),
                           run_id=run_id)

    async def use(self, conn: AsyncConnection, claim: ActionClaim, now: datetime) -> None:
        """Record the link as used, in the caller's transaction; refuse a second use,
        also when two arrive at once (the nonce is the primary key)."""
        insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(
            used_action_tokens)
        stmt = insert.on_conflict_do_nothing(index_elements=[used_action_tokens.c.nonce])
        result = await conn.execute(stmt.returning(used_action_tokens.c.nonce), {
            "nonce": claim.nonce, "incident_id": claim.incident_id, "action": claim.action,
            "actor": claim.person, "used_at": now})
        if result.first() is None:
            row = (await conn.execute(
                sa.select(used_action_tokens.c.used_at, used_action_tokens.c.actor)
                .where(used_action_tokens.c.nonce == claim.nonce))).first()
            when = f" ({row.actor}, {row.used_at.isoformat()})" if row else ""
            raise InvalidLink(f"this link was already used{when}")
