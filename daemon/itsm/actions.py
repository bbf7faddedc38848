"""Acknowledge and resolve on behalf of a person: one transaction, then metrics."""

from __future__ import annotations

from daemon.clock import Clock
from daemon.itsm import incidents
from daemon.itsm.incidents import Transition
from daemon.itsm.priority import PriorityMatrix
from daemon.models import Priority
from daemon.store import Store


class Actions:
    """What an on-call engineer can do to an incident, whatever channel they use."""

    def __init__(self, *, store: Store, clock: Clock, matrix: PriorityMatrix) -> None:
        self._store = store
        self._clock = clock
        self._matrix = matrix

    async def move(self, incident_id: int, action: str, *, actor: str, note: str | None
                   ) -> Transition:
        """acknowledge, hold, resume, resolve, close or reopen; 409 when not allowed now."""
        async with self._store.write() as conn:
            t = await incidents.move(conn, incident_id, action, actor=actor, note=note,
                                     now=self._clock.now())
        incidents.record_metrics([t])
        return t

    async def set_priority(self, incident_id: int, *, priority: Priority | None,
                           impact: int | None, urgency: int | None, reason: str,
                           actor: str) -> None:
        async with self._store.write() as conn:
            await incidents.set_priority(conn, incident_id, priority=priority, impact=impact,
                                         urgency=urgency, reason=reason, actor=actor,
                                         now=self._clock.now(), matrix=self._matrix)
