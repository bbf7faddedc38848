"""Flapping: an alert that keeps changing state opens nothing new while it does.

Each earlier firing of the same identity within the window counts two
changes (fired, resolved) and the new firing one more. Past the limit the
new alert is marked flapping and joins the incident of its previous firing,
even if that one is resolved, instead of opening another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.correlation.engine import Placed
from daemon.store import alerts as alert_store
from daemon.store.alerts import EarlierFirings


@dataclass(slots=True)
class FlapSplit:
    steady: list[Placed] = field(default_factory=list)
    flapping: dict[int, list[Placed]] = field(default_factory=dict)  # incident id → alerts


class FlapDetector:
    def __init__(self, *, changes: int, window_seconds: int) -> None:
        self._changes = changes
        self.window = timedelta(seconds=window_seconds)

    async def split(self, conn: AsyncConnection, new: Sequence[Placed], now: datetime,
                    earlier: EarlierFirings) -> FlapSplit:
        out = FlapSplit()
        prior = {alert_id: earlier.since(alert, now - self.window) for alert, alert_id in new}
        latest_ids = [latest for count, latest in prior.values()
                      if 2 * count + 1 > self._changes]
        incidents_of = await alert_store.incident_ids_of(conn, latest_ids)
        for alert, alert_id in new:
            count, latest = prior[alert_id]
            previous = incidents_of.get(latest, ())
            if 2 * count + 1 > self._changes and previous:
                out.flapping.setdefault(max(previous), []).append((alert, alert_id))
            else:
                out.steady.append((alert, alert_id))
        await alert_store.mark_flapping(
            conn, [i for placed in out.flapping.values() for _, i in placed])
        return out
