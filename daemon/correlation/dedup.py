"""Dedup: a repeat of a firing alert updates it; a resolve closes it; only new alerts go on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.models import Alert, AlertStatus
from daemon.store import alerts as alert_store
from daemon.store.alerts import ResolvedAlert


@dataclass(slots=True)
class DedupOutcome:
    new: list[tuple[Alert, int]] = field(default_factory=list)
    repeated: list[Alert] = field(default_factory=list)
    resolved: list[ResolvedAlert] = field(default_factory=list)
    # Resolves for which nothing was firing: retries, or alerts from before our time.
    stale_resolves: list[Alert] = field(default_factory=list)


def rounds(batch: Sequence[Alert]) -> list[list[Alert]]:
    """Split a batch so each identity appears at most once per round, order kept.

    One set-based statement may touch a row once; a burst that fires and
    resolves the same alert in one batch is applied round by round.
    """
    out: list[list[Alert]] = []
    seen: dict[tuple[str, str], int] = {}
    for alert in batch:
        key = (alert.source, alert.fingerprint)
        index = seen.get(key, -1) + 1
        seen[key] = index
        if index == len(out):
            out.append([])
        out[index].append(alert)
    return out


async def apply(conn: AsyncConnection, group: Sequence[Alert], now: datetime) -> DedupOutcome:
    """Apply one round (see `rounds`): each identity at most once."""
    outcome = DedupOutcome()
    firing = [a for a in group if a.status is AlertStatus.FIRING]
    resolving = [a for a in group if a.status is AlertStatus.RESOLVED]
    upserted = await alert_store.upsert_firing(conn, firing, now)
    ids = {(u.source, u.fingerprint): u for u in upserted}
    for alert in firing:
        row = ids[(alert.source, alert.fingerprint)]
        if row.is_new:
            outcome.new.append((alert, row.id))
        else:
            outcome.repeated.append(alert)
    outcome.resolved = await alert_store.resolve_firing(conn, resolving, now)
    done = {(r.source, r.fingerprint) for r in outcome.resolved}
    outcome.stale_resolves = [a for a in resolving if (a.source, a.fingerprint) not in done]
    return outcome
