"""What an on-call engineer does to an incident: one transaction each, then metrics."""

from __future__ import annotations

from daemon.clock import Clock
from daemon.itsm import incidents
from daemon.itsm.escalation import EscalationEvent
from daemon.itsm.followup import FollowUp
from daemon.itsm.incidents import Transition
from daemon.itsm.priority import PriorityMatrix
from daemon.models import Priority
from daemon.store import Store


class Actions:
    """The same moves whatever channel a person uses (REST, signed link, chat button)."""

    def __init__(self, *, store: Store, clock: Clock, matrix: PriorityMatrix,
                 followup: FollowUp) -> None:
        self._store = store
        self._clock = clock
        self._matrix = matrix
        self._followup = followup

    def reconfigure(self, matrix: PriorityMatrix) -> None:
        """A configuration reload: priorities set by hand use this matrix from now on."""
        self._matrix = matrix

    async def move(self, incident_id: int, action: str, *, actor: str, note: str | None,
                   origin: str | None = None) -> Transition:
        """acknowledge, hold, resume, resolve, close or reopen; 409 when not allowed now.

        `origin`: the ITSM connector the move came from (no event goes back to it)."""
        now = self._clock.now()
        async with self._store.write() as conn:
            t = await incidents.move(conn, incident_id, action, actor=actor, note=note, now=now,
                                     origin=origin)
            effects = await self._followup.after(conn, [incident_id], now)
        incidents.record_metrics([t])
        effects.record_metrics()
        return t

    async def set_priority(self, incident_id: int, *, priority: Priority | None,
                           impact: int | None, urgency: int | None, reason: str,
                           actor: str) -> None:
        """Set the priority by hand; SLA clocks switch to the new priority's policy."""
        now = self._clock.now()
        async with self._store.write() as conn:
            await incidents.set_priority(conn, incident_id, priority=priority, impact=impact,
                                         urgency=urgency, reason=reason, actor=actor,
                                         now=now, matrix=self._matrix)
            effects = await self._followup.after(conn, [incident_id], now)
        effects.record_metrics()

    async def escalate(self, incident_id: int, *, actor: str, note: str | None,
                       level: int | None) -> EscalationEvent:
        """Notify the next (or a chosen) escalation level now."""
        now = self._clock.now()
        async with self._store.write() as conn:
            event = await self._followup.escalations.escalate(
                conn, incident_id, actor=actor, note=note, level=level, now=now)
            effects = await self._followup.after(conn, [incident_id], now)
        effects.escalations.append(event)
        effects.record_metrics()
        return event
