"""Acknowledge and resolve on behalf of a person: one transaction, then metrics."""

from __future__ import annotations

from daemon.clock import Clock
from daemon.itsm import incidents
from daemon.itsm.incidents import Transition
from daemon.store import Store


class Actions:
    """What an on-call engineer can do to an incident, whatever channel they use."""

    def __init__(self, *, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def acknowledge(self, incident_id: int, *, actor: str, note: str | None) -> Transition:
        async with self._store.write() as conn:
            t = await incidents.acknowledge(
                conn, incident_id, actor=actor, note=note, now=self._clock.now()
            )
        incidents.record_metrics([t])
        return t

    async def resolve(self, incident_id: int, *, actor: str, note: str | None) -> Transition:
        async with self._store.write() as conn:
            t = await incidents.resolve(
                conn, incident_id, actor=actor, note=note, now=self._clock.now()
            )
        incidents.record_metrics([t])
        return t
