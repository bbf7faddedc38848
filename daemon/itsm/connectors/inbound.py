"""The suites' updates, done to incidents: who may post them, and what each one does.

A person resolving, acknowledging (state In Progress), reopening, re-assigning or
commenting in a suite becomes the same move a person makes in incidentd
(`daemon.itsm.actions`), with actor `<connector>:<user>` and `origin: <connector>` in
the timeline detail. The notifier never sends an event back to the connector it
came from (no loops); other connectors and targets still get it.

Replays are harmless: a move already made moves nothing (`unchanged`), and a note
carrying the suite's reference (a journal entry, a comment id) is recorded once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from daemon.clock import Clock
from daemon.config import ConnectorConfig, HmacConfig
from daemon.errors import InvalidTransition, NotFound
from daemon.itsm.actions import Actions
from daemon.itsm.connectors.base import InboundUpdate
from daemon.models import TimelineEntry, TimelineKind, incident_key
from daemon.receivers.auth import Credentials, HmacVerifier, ReplayGuard
from daemon.secrets import resolve
from daemon.store import Store
from daemon.store import incidents as incident_store
from daemon.store import tickets as ticket_store

log = structlog.get_logger("incidentd.connectors")

MOVES = frozenset({"acknowledge", "resolve", "reopen"})
NOTE = "note"
_ACTOR_CHARS = 255

# How each suite signs by default: (header, prefix, encoding).
_HMAC_DEFAULTS = {
    # GlideCertificateEncryption.generateMac answers base64.
    "servicenow": ("X-Incidentd-Signature", "", "base64"),
    # Jira Cloud's webhook secret: WebSub's `sha256=<hex>`.
    "jira": ("X-Hub-Signature", "sha256=", "hex"),
    # Like our outbound webhooks and inbound action webhook.
    "generic": ("X-Incidentd-Signature", "v1=", "hex"),
}


def inbound_credentials(config: ConnectorConfig) -> Credentials | None:
    """What the connector's update endpoint accepts; None when nothing is configured
    (every update is then refused)."""
    inbound = config.inbound
    basic = []
    for cred in inbound.basic:
        password = resolve(cred.password)
        if password is None:
            log.warning("connector inbound basic-auth password has no value; that user is "
                        "refused", connector=config.name, username=cred.username,
                        source=cred.password.describe())
        else:
            basic.append((cred.username, password))
    bearer = tuple(v for v in (resolve(r) for r in inbound.bearer_tokens) if v)
    verifier = _hmac(inbound.hmac, config.type) if inbound.hmac else None
    if not (basic or bearer or verifier):
        return None
    return Credentials(bearer=bearer, basic=tuple(basic), hmac=verifier)


def _hmac(cfg: HmacConfig, kind: str) -> HmacVerifier:
    header, prefix, encoding = _HMAC_DEFAULTS[kind]
    given = cfg.model_fields_set
    return HmacVerifier(
        secrets=tuple(v.encode() for v in (resolve(r) for r in cfg.secrets) if v),
        headers=(cfg.header or header,),
        prefix=cfg.prefix if "prefix" in given else prefix,
        encoding=cfg.encoding if "encoding" in given else encoding,
        timestamp_header=cfg.timestamp_header,
        max_age_seconds=cfg.max_age_seconds,
        clock=time.time,
        replay=(ReplayGuard(window_seconds=2 * cfg.max_age_seconds)
                if cfg.timestamp_header else None),
    )


@dataclass(frozen=True, slots=True)
class Result:
    action: str
    outcome: str  # applied | unchanged
    status: str | None = None
    reason: str | None = None

    def json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.action, "outcome": self.outcome}
        if self.status is not None:
            out["status"] = self.status
        if self.reason is not None:
            out["reason"] = self.reason
        return out


class InboundUpdates:
    """Does a suite's updates to the incident its ticket belongs to."""

    def __init__(self, *, store: Store, actions: Actions, clock: Clock) -> None:
        self._store = store
        self._actions = actions
        self._clock = clock

    async def apply(self, connector: str, updates: Sequence[InboundUpdate]
                    ) -> dict[str, Any]:
        """Each update in order; 404 (`NotFound`) when the ticket is not one of ours."""
        results: list[dict[str, Any]] = []
        incident: int | None = None
        for update in updates:
            incident = await self._incident(connector, update)
            results.append((await self._one(connector, incident, update)).json())
        return {"incident": incident_key(incident) if incident else None, "results": results}

    async def _incident(self, connector: str, update: InboundUpdate) -> int:
        async with self._store.read() as conn:
            stored = await ticket_store.find(conn, connector, external_id=update.ticket_id,
                                             external_key=update.ticket_key)
            if stored is not None:
                return stored.incident_id
            # Not stored (yet): the correlation id the suite echoes names it.
            if update.incident is not None and await incident_store.get_state(
                    conn, update.incident) is not None:
                return update.incident
        named = update.ticket_key or update.ticket_id or (
            incident_key(update.incident) if update.incident else "?")
        raise NotFound(f"{connector}: no incident has the ticket {named}")

    async def _one(self, connector: str, incident_id: int, update: InboundUpdate) -> Result:
        actor = f"{connector}:{update.user}"[:_ACTOR_CHARS]
        if update.action == NOTE:
            return await self._note(connector, incident_id, update, actor)
        if update.action not in MOVES:
            return Result(update.action, "unchanged", reason="not an action incidentd takes")
        try:
            t = await self._actions.move(incident_id, update.action, actor=actor,
                                         note=update.note, origin=connector)
        except InvalidTransition as err:
            # The suite is where the person acted; the incident is already past it.
            return Result(update.action, "unchanged", reason=err.message)
        log.info(f"{update.action} from {connector}", incident=incident_key(incident_id),
                 actor=actor)
        if t.already is not None:
            return Result(update.action, "unchanged", t.incident.status.value,
                          reason=f"already acknowledged by {t.already.actor}")
        return Result(update.action, "applied", t.incident.status.value)

    async def _note(self, connector: str, incident_id: int, update: InboundUpdate,
                    actor: str) -> Result:
        text = (update.note or "").strip()
        if not text:
            return Result(NOTE, "unchanged", reason="empty note")
        now = self._clock.now()
        async with self._store.write() as conn:
            if update.ref and await ticket_store.note_recorded(conn, incident_id, connector,
                                                               update.ref):
                return Result(NOTE, "unchanged", reason="already recorded")
            detail: dict[str, Any] = {"note": text, "origin": connector} | update.detail
            if update.ref:
                detail["ref"] = update.ref
            await incident_store.add_timeline(conn, [(incident_id, TimelineEntry(
                at=now, actor=actor, kind=TimelineKind.NOTE, detail=detail))])
        return Result(NOTE, "applied")
