"""Change records: what was changed, when, by which tool.

For now they are recorded and listed; matching them to incidents (suspected
changes, maintenance windows) comes with the ITSM core.
"""

from __future__ import annotations

import structlog

from daemon.clock import Clock
from daemon.models import ChangeRecord
from daemon.store import Store
from daemon.store import changes as change_store

log = structlog.get_logger("incidentd.changes")


class ChangeRecorder:
    def __init__(self, *, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def record(self, change: ChangeRecord) -> None:
        async with self._store.write() as conn:
            change_id = await change_store.insert_change(conn, change, self._clock.now())
        log.info("change recorded", change_id=change_id, integration=change.integration,
                 summary=change.summary[:200])
