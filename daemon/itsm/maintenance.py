"""Maintenance windows: approved changes hold back the alerts their work causes.

An `approved` or `in_progress` change with planned_start ≤ now < planned_end
covers its CIs (and, with `maintenance_includes_dependents`, every CI that
depends on them). A new firing alert bound to a covered CI is stored and
linked to the change but pages no one. When the window ends — its planned
end passes, or the change completes or is called off — an alert from it
that still fires and is in no incident is released to correlation, as an
Alertmanager silence that expires lets its alerts through.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.config import ChangesConfig
from daemon.correlation.engine import Placed
from daemon.correlation.topology import Topology, TopologyHolder
from daemon.itsm.changes import WINDOW_STATES
from daemon.store import changes as change_store
from daemon.store.alerts import alert_from_row
from daemon.store.changes import Window

log = structlog.get_logger("incidentd.maintenance")

_WINDOW_STATES = [s.value for s in WINDOW_STATES]
# Bounds the remembered coverage (one entry per active change and CI list).
_CACHE_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class Suppressed:
    change_id: int
    alert_id: int
    fingerprint: str


class Maintenance:
    """Splits new alerts into held back and correlated; releases them when windows end."""

    def __init__(self, config: ChangesConfig, topology: TopologyHolder, *, depth: int) -> None:
        self._config = config
        self._topology = topology
        self._depth = depth
        # What each active change covers, for the graph it was worked out on: windows
        # last hours and the graph changes rarely, while `split` runs every batch.
        self._covers: dict[tuple[int, tuple[str, ...]], frozenset[str]] = {}
        self._covers_graph: Topology | None = None
        # The last answer of `_covering`: the same windows come back batch after batch.
        self._covering_graph: Topology | None = None
        self._covering_windows: tuple[Window, ...] = ()
        self._covering_map: dict[str, list[int]] = {}

    async def split(self, conn: AsyncConnection, new: Sequence[Placed], now: datetime
                    ) -> tuple[list[Suppressed], list[Placed]]:
        """Hold back the new alerts on covered CIs (linking them to their changes);
        return them and the others, in order."""
        if not any(a.ci_id for a, _ in new):
            return [], list(new)
        windows = await change_store.active_windows(conn, now, states=_WINDOW_STATES)
        if not windows:
            return [], list(new)
        covering = self._covering(windows)
        held: list[Suppressed] = []
        rest: list[Placed] = []
        links: list[tuple[int, int]] = []
        for alert, alert_id in new:
            changes = covering.get(alert.ci_id) if alert.ci_id else None
            if not changes:
                rest.append((alert, alert_id))
                continue
            # Linked to every covering change, so it stays held until the last one ends.
            links.extend((change_id, alert_id) for change_id in changes)
            held.append(Suppressed(changes[0], alert_id, alert.fingerprint))
        await change_store.link_alerts(conn, links, now)
        return held, rest

    async def release(self, conn: AsyncConnection, now: datetime, *, limit: int = 1000
                      ) -> list[Placed]:
        """Alerts held back by windows that are over, still firing, in no incident, and
        not covered by a window open now: for the caller to correlate, oldest first."""
        windows = await change_store.active_windows(conn, now, states=_WINDOW_STATES)
        rows = await change_store.releasable(
            conn, active_ids=[w.change_id for w in windows], limit=limit)
        if not rows:
            return []
        covering = self._covering(windows)
        out: list[Placed] = []
        links: list[tuple[int, int]] = []
        for row in rows:
            changes = covering.get(row.ci_id) if row.ci_id else None
            if changes:
                # A newer window took over its CI: it waits for that one to end too.
                links.extend((change_id, row.id) for change_id in changes)
            else:
                out.append((alert_from_row(row), row.id))
        await change_store.link_alerts(conn, links, now)
        if out:
            log.info("maintenance over; alerts released to correlation", count=len(out),
                     alert_ids=[i for _, i in out][:50])
        return out

    def _covering(self, windows: Sequence[Window]) -> dict[str, list[int]]:
        """CI id → the active changes covering it, lowest id first."""
        graph, given = self._topology.current, tuple(windows)
        # The graph by identity: comparing two graphs by value would walk them whole.
        if graph is self._covering_graph and given == self._covering_windows:
            return self._covering_map
        out: dict[str, list[int]] = {}
        for window in windows:
            for ci in self._cover(window):
                out.setdefault(ci, []).append(window.change_id)
        self._covering_graph, self._covering_windows, self._covering_map = graph, given, out
        return out

    def _cover(self, window: Window) -> frozenset[str]:
        graph = self._topology.current
        if graph is not self._covers_graph or len(self._covers) >= _CACHE_LIMIT:
            self._covers = {}
            self._covers_graph = graph
        key = (window.change_id, window.cis)
        found = self._covers.get(key)
        if found is None:
            cis = set(window.cis)
            if self._config.maintenance_includes_dependents:
                for ci in window.cis:
                    cis |= graph.downstream(ci, self._depth)
            found = self._covers[key] = frozenset(cis)
        return found
