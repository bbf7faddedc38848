"""What follows from incidents changing: SLA clocks, escalation, problems, suspected changes.

Every path that changes incidents (the ingest pipeline, a person's action, a
timer job) calls `FollowUp.after` with the incidents it touched, in its own
transaction. Each part reconciles its records with the incidents' current
state, so calling it twice, or for an incident that did not really change,
is harmless. The returned `Effects` are counted only after the commit.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.clock import Clock
from daemon.config import Config
from daemon.correlation.topology import TopologyHolder
from daemon.itsm import changes, escalation, problems, sla
from daemon.itsm.action_links import ActionLinks
from daemon.itsm.escalation import EscalationEvent, Escalations
from daemon.itsm.notify import Notifier
from daemon.itsm.problems import ProblemLinked, Problems
from daemon.itsm.sla import SlaClocks, SlaEvent

Automation = Callable[[AsyncConnection, Sequence[int], datetime], Awaitable[Sequence[int]]]


@dataclass(slots=True)
class Effects:
    sla: list[SlaEvent] = field(default_factory=list)
    escalations: list[EscalationEvent] = field(default_factory=list)
    problems: list[ProblemLinked] = field(default_factory=list)
    notified: int = 0  # outbox rows written
    wake: Callable[[], None] | None = None  # tells the sender there is work
    runs: int = 0  # runbook runs created
    wake_runs: Callable[[], None] | None = None  # tells the runbook executor

    def record_metrics(self) -> None:
        """Call only after the transaction that produced these has committed."""
        sla.record_metrics(self.sla)
        escalation.record_metrics(self.escalations)
        problems.record_metrics(self.problems)
        if self.notified and self.wake is not None:
            self.wake()
        if self.runs and self.wake_runs is not None:
            self.wake_runs()


class FollowUp:
    def __init__(self, config: Config, topology: TopologyHolder, *, clock: Clock,
                 link_secret: str | None = None) -> None:
        self.sla = SlaClocks(config.sla)
        # Without a configured secret (tests, replay) links work for this process only.
        self.links = ActionLinks(secret=link_secret or secrets.token_urlsafe(32),
                                 ttl_seconds=config.notifications.action_links.ttl_seconds,
                                 public_url=public_url(config), clock=clock)
        self.notifier = Notifier(config.notifications, links=self.links,
                                 public_url=public_url(config))
        # Set once the sender runs; until then (tests, replay) the outbox just fills.
        self.wake: Callable[[], None] | None = None
        # Set by the composition root: creates runbook runs for the alerts just linked
        # to these incidents. A callable, so this layer does not import the automation
        # built on top of it.
        self.automation: Automation | None = None
        self.wake_runs: Callable[[], None] | None = None
        self.escalations = Escalations(config.escalation)
        self.problems = Problems(config.problems)
        self._topology = topology
        self._suspect_window = config.changes.suspect_window_seconds
        self._depth = config.correlation.max_depth

    async def after(self, conn: AsyncConnection, incident_ids: Iterable[int], now: datetime
                    ) -> Effects:
        ids = sorted(set(incident_ids))
        if not ids:
            return Effects()
        # Problems and suspects first: they read the root cause the caller just set;
        # clocks and escalation last, so they see the final priority.
        linked = await self.problems.link(conn, ids, now)
        await changes.suspect(conn, self._topology.current, ids, now,
                              window_seconds=self._suspect_window, depth=self._depth)
        clocks = await self.sla.sync(conn, ids, now)
        escalated = await self.escalations.sync(conn, ids, now)
        runs = await self.automation(conn, ids, now) if self.automation else []
        # Last: every timeline entry of this transaction is written by now.
        notified = await self.notifier.enqueue_from_timeline(conn, ids, now)
        return Effects(sla=clocks, escalations=escalated, problems=linked, notified=notified,
                       wake=self.wake, runs=len(runs), wake_runs=self.wake_runs)

    async def sweep_sla(self, conn: AsyncConnection, now: datetime) -> Effects:
        events = await self.sla.sweep(conn, now)
        notified = await self.notifier.enqueue_from_timeline(
            conn, {e.incident_id for e in events}, now)
        return Effects(sla=events, notified=notified, wake=self.wake)

    async def sweep_escalations(self, conn: AsyncConnection, now: datetime) -> Effects:
        events = await self.escalations.sweep(conn, now)
        notified = await self.notifier.enqueue_from_timeline(
            conn, {e.incident_id for e in events}, now)
        return Effects(escalations=events, notified=notified, wake=self.wake)

    async def views(self, conn: AsyncConnection, incident_ids: Sequence[int], now: datetime
                    ) -> dict[int, dict[str, Any]]:
        """The ITSM parts of each incident's JSON."""
        clocks = await self.sla.views(conn, incident_ids, now)
        ladders = await self.escalations.views(conn, incident_ids)
        linked = await self.problems.views(conn, incident_ids)
        suspects = await changes.suspects_of(conn, incident_ids)
        return {i: {"sla": clocks.get(i, []), "escalation": ladders.get(i),
                    "problems": linked.get(i, []), "suspected_changes": suspects.get(i, [])}
                for i in incident_ids}


def public_url(config: Config) -> str:
    """Where people reach this daemon: action links and incident URLs point there."""
    return (config.notifications.public_url or f"http://{config.server.listen}").rstrip("/")
