"""Dedup: a repeat of a firing alert updates it; a resolve closes it; only new alerts go on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.models import Acknowledgement, Alert, AlertEvent, AlertStatus
from daemon.store import alerts as alert_store
from daemon.store.alerts import ResolvedAlert


@dataclass(slots=True)
class DedupOutcome:
    new: list[tuple[Alert, int]] = field(default_factory=list)
    repeated: list[Alert] = field(default_factory=list)
    # Stored ids of the repeated alerts bound to a CI: their incidents saw them again.
    repeated_bound: list[int] = field(default_factory=list)
    resolved: list[ResolvedAlert] = field(default_factory=list)
    # Resolves for which nothing was firing: retries, or alerts from before our time.
    stale_resolves: list[Alert] = field(default_factory=list)
    # Incidents of firing alerts a source acknowledged, with the acknowledging integration.
    acknowledged: list[tuple[Acknowledgement, tuple[int, ...]]] = field(default_factory=list)


def rounds(batch: Sequence[AlertEvent]) -> list[list[AlertEvent]]:
    """Split a batch so each identity appears at most once per round, order kept.

    One set-based statement may touch a row once; a burst that fires and
    resolves the same alert in one batch is applied round by round.
    """
    out: list[list[AlertEvent]] = []
    seen: dict[tuple[str, str], int] = {}
    for event in batch:
        key = (event.source, event.fingerprint)
        index = seen.get(key, -1) + 1
        seen[key] = index
        if index == len(out):
            out.append([])
        out[index].append(event)
    return out


async def apply(
    conn: AsyncConnection, group: Sequence[AlertEvent], now: datetime
) -> DedupOutcome:
    """Apply one round (see `rounds`): each identity at most once."""
    outcome = DedupOutcome()
    firing = [e for e in group if isinstance(e, Alert) and e.status is AlertStatus.FIRING]
    resolving = [e for e in group if isinstance(e, Alert) and e.status is AlertStatus.RESOLVED]
    acks = [e for e in group if isinstance(e, Acknowledgement)]
    upserted = await alert_store.upsert_firing(conn, firing, now)
    ids = {(u.source, u.fingerprint): u for u in upserted}
    for alert in firing:
        row = ids[(alert.source, alert.fingerprint)]
        if row.is_new:
            outcome.new.append((alert, row.id))
        else:
            outcome.repeated.append(alert)
            if alert.ci_id is not None:
                outcome.repeated_bound.append(row.id)
    outcome.resolved = await alert_store.resolve_firing(conn, resolving, now)
    done = {(r.source, r.fingerprint) for r in outcome.resolved}
    outcome.stale_resolves = [a for a in resolving if (a.source, a.fingerprint) not in done]
    if acks:
        incidents_of = await alert_store.firing_incident_ids(
            conn, [(a.source, a.fingerprint) for a in acks]
        )
        outcome.acknowledged = [
            (a, incidents_of[(a.source, a.fingerprint)])
            for a in acks
            if (a.source, a.fingerprint) in incidents_of
        ]
    return outcome
