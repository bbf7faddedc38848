"""What follows from incidents changing: SLA clocks, escalation, problems, suspected changes.

Every path that changes incidents (the ingest pipeline, a person's action, a
timer job) calls `FollowUp.after` with the incidents it touched, in its own
transaction. Each part reconciles its records with the incidents' current
state, so calling it twice, or for an incident that did not really change,
is harmless. The returned `Effects` are counted only after the commit.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

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
from daemon.store import incidents as incident_store
from daemon.store.incidents import IncidentState


class Automation(Protocol):
    """Creates runbook runs for the alerts just linked to these incidents; their ids.
    `rows`: the incidents' rows, read once by `FollowUp.after`."""

    def __call__(self, conn: AsyncConnection, incident_ids: Sequence[int], now: datetime, *,
                 rows: Mapping[int, Any] | None = None) -> Awaitable[Sequence[int]]: ...


@dataclass(slots=True)
class Effects:
    sla: list[SlaEvent] = field(default_factory=list)
    escalations: list[EscalationEvent] = field(default_factory=list)
    problems: list[ProblemLinked] = field(default_factory=list)
    notified: int = 0  # outbox rows written
    wake: Callable[[], None] | None = None  # tells the sender there is work
    runs: int = 0  # runbook runs created
    wake_runs: Callable[[], None] | None = None  # tells the runbook executor
    # Where `after` left each incident (nothing in it changes incident rows, so that is
    # what it read first): the ingest's final states, without a read of its own.
    states: dict[int, IncidentState] = field(default_factory=dict)

    def record_metrics(self) -> None:
        """Call only after the transaction that produced these has committed."""
        sla.record_metrics(self.sla)
        escalation.record_metrics(self.escalations)
        problems.record_metrics(self.problems)
        if self.notified and self.wake is not None:
            self.wake()
        if self.runs and self.wake_runs is not None:
            self.wake_runs()


@dataclass(frozen=True, slots=True)
class Policies:
    """The configured rules of the follow-up; a configuration reload replaces them whole."""

    sla: SlaClocks
    escalations: Escalations
    problems: Problems
    notifier: Notifier
    suspect_window_seconds: int
    depth: int

    @classmethod
    def of(cls, config: Config, links: ActionLinks) -> Policies:
        return cls(sla=SlaClocks(config.sla), escalations=Escalations(config.escalation),
                   problems=Problems(config.problems),
                   notifier=Notifier(config.notifications, links=links,
                                     public_url=public_url(config),
                                     connectors=config.connectors),
                   suspect_window_seconds=config.changes.suspect_window_seconds,
                   depth=config.correlation.max_depth)


class FollowUp:
    def __init__(self, config: Config, topology: TopologyHolder, *, clock: Clock,
                 link_secret: str | None = None) -> None:
        # Without a configured secret (tests, replay) links work for this process only.
        self.links = ActionLinks(secret=link_secret or secrets.token_urlsafe(32),
                                 ttl_seconds=config.notifications.action_links.ttl_seconds,
                                 public_url=public_url(config), clock=clock)
        self.policies = Policies.of(config, self.links)
        # Set once the sender runs; until then (tests, replay) the outbox just fills.
        self.wake: Callable[[], None] | None = None
        # Set by the composition root: creates runbook runs for the alerts just linked
        # to these incidents. A callable, so this layer does not import the automation
        # built on top of it.
        self.automation: Automation | None = None
        self.wake_runs: Callable[[], None] | None = None
        self._topology = topology

    def reconfigure(self, config: Config, link_secret: str) -> None:
        """A configuration reload: new policies, and links signed and checked with
        `link_secret` (a changed secret voids the links already sent)."""
        self.links.reconfigure(secret=link_secret,
                               ttl_seconds=config.notifications.action_links.ttl_seconds,
                               public_url=public_url(config))
        self.policies = Policies.of(config, self.links)

    @property
    def sla(self) -> SlaClocks:
        return self.policies.sla

    @property
    def escalations(self) -> Escalations:
        return self.policies.escalations

    @property
    def problems(self) -> Problems:
        return self.policies.problems

    @property
    def notifier(self) -> Notifier:
        return self.policies.notifier

    async def after(self, conn: AsyncConnection, incident_ids: Iterable[int], now: datetime,
                    *, policies: Policies | None = None) -> Effects:
        """`policies`: the ones the caller's transaction started with (default: now's)."""
        ids = sorted(set(incident_ids))
        if not ids:
            return Effects()
        p = policies or self.policies  # one set of rules for the whole transaction
        # One read of the incidents (root cause and priority as the caller just set
        # them) for every part: none of them changes an incident row (they write
        # problems, suspects, clocks, ladders, runs and timeline entries), so what the
        # first part would read is what the last one would. The order below is that of
        # their timeline entries.
        rows = await incident_store.rows_by_id(conn, ids)
        linked = await p.problems.link(conn, ids, now, rows=rows)
        await changes.suspect(conn, self._topology.current, ids, now,
                              window_seconds=p.suspect_window_seconds, depth=p.depth,
                              rows=rows)
        clocks = await p.sla.sync(conn, ids, now, rows=rows)
        escalated = await p.escalations.sync(conn, ids, now, rows=rows)
        runs = await self.automation(conn, ids, now, rows=rows) if self.automation else []
        # Last: every timeline entry of this transaction is written by now.
        notified = await p.notifier.enqueue_from_timeline(conn, ids, now)
        return Effects(sla=clocks, escalations=escalated, problems=linked, notified=notified,
                       wake=self.wake, runs=len(runs), wake_runs=self.wake_runs,
                       states={i: incident_store.state_of(r) for i, r in rows.items()})

    async def sweep_sla(self, conn: AsyncConnection, now: datetime) -> Effects:
        p = self.policies
        events = await p.sla.sweep(conn, now)
        notified = await p.notifier.enqueue_from_timeline(
            conn, {e.incident_id for e in events}, now)
        return Effects(sla=events, notified=notified, wake=self.wake)

    async def sweep_escalations(self, conn: AsyncConnection, now: datetime) -> Effects:
        p = self.policies
        events = await p.escalations.sweep(conn, now)
        notified = await p.notifier.enqueue_from_timeline(
            conn, {e.incident_id for e in events}, now)
        return Effects(escalations=events, notified=notified, wake=self.wake)

    async def views(self, conn: AsyncConnection, incident_ids: Sequence[int], now: datetime
                    ) -> dict[int, dict[str, Any]]:
        """The ITSM parts of each incident's JSON."""
        p = self.policies
        clocks = await p.sla.views(conn, incident_ids, now)
        ladders = await p.escalations.views(conn, incident_ids)
        linked = await p.problems.views(conn, incident_ids)
        suspects = await changes.suspects_of(conn, incident_ids)
        return {i: {"sla": clocks.get(i, []), "escalation": ladders.get(i),
                    "problems": linked.get(i, []), "suspected_changes": suspects.get(i, [])}
                for i in incident_ids}


def public_url(config: Config) -> str:
    """Where people reach this daemon: action links and incident URLs point there."""
    return (config.notifications.public_url or f"http://{config.server.listen}").rstrip("/")
