"""Escalation policies: who is notified about an unacknowledged incident, and when.

As in PagerDuty: a triggered incident notifies level 1 of its policy at once,
then the next level each time the current level's timeout passes without an
acknowledgement; after the last level the ladder starts again while repeats
remain, then it is exhausted. Acknowledging (or holding, resolving, closing)
stops it; reopening or resuming into `triggered` starts it again at level 1.

Each notification is an `EscalationEvent` plus an `escalated` timeline entry,
written in the caller's transaction. Delivering it is the notifier's job.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from daemon import metrics
from daemon.clock import timestamp
from daemon.config import EscalationConfig, EscalationPolicy, EscalationRule
from daemon.errors import InvalidInput, InvalidTransition, NotFound
from daemon.models import SYSTEM_ACTOR, IncidentStatus, TimelineEntry, TimelineKind, incident_key
from daemon.store import escalation as store
from daemon.store import incidents as incident_store
from daemon.store.escalation import Ladder, LadderState, Subject

log = structlog.get_logger("incidentd.escalation")

OPENED = "opened"
TIMEOUT = "timeout"
MANUAL = "manual"
RESTARTED = "restarted"

# A person may escalate an incident someone is already working on (to get help),
# but not one that is on hold or over.
_ESCALATABLE = (IncidentStatus.TRIGGERED, IncidentStatus.ACKNOWLEDGED)


@dataclass(frozen=True, slots=True)
class EscalationEvent:
    incident_id: int
    policy: str
    level: int  # 1-based level notified
    cycle: int  # 0 for the first pass
    targets: tuple[str, ...]
    reason: str  # "opened" | "timeout" | "manual" | "restarted"
    actor: str


class Escalations:
    """Runs each incident's escalation policy; one instance per loaded config."""

    def __init__(self, config: EscalationConfig) -> None:
        self._config = config
        self._policies = {p.name: p for p in config.policies}

    @property
    def enabled(self) -> bool:
        return bool(self._policies)

    def choose(self, subject: Subject) -> EscalationPolicy | None:
        """The policy of the first rule the incident matches, else the default, else none."""
        for rule in self._config.rules:
            if _matches(rule, subject):
                return self._policies[rule.policy]
        default = self._config.default_policy
        return self._policies[default] if default else None

    async def sync(self, conn: AsyncConnection, incident_ids: Iterable[int], now: datetime,
                   *, rows: Mapping[int, Any] | None = None) -> list[EscalationEvent]:
        """Bring the ladders of these incidents in line with their status.

        Idempotent: call it after anything that may have changed them. `rows`: these
        incidents' rows, if the caller read them in this transaction.
        """
        if not self.enabled:
            return []
        found = (store.subjects_of(rows.values()) if rows is not None
                 else await store.subjects(conn, incident_ids))
        current = await store.ladders(conn, found, lock=True)
        started: list[tuple[Ladder, EscalationPolicy]] = []
        restarted: list[tuple[Ladder, EscalationPolicy]] = []
        stopped: list[Ladder] = []
        for subject in found.values():
            ladder = current.get(subject.id)
            if subject.status is not IncidentStatus.TRIGGERED:
                # Exhausted ladders stop too, so a later reopening starts them afresh.
                if ladder and ladder.state is not LadderState.STOPPED:
                    stopped.append(_stop(ladder, now))
            elif ladder is None or ladder.state is LadderState.STOPPED:
                policy = self.choose(subject)
                if policy is not None:
                    fresh = _start(subject.id, policy, now)
                    (started if ladder is None else restarted).append((fresh, policy))
        inserted = await store.insert(conn, [ladder for ladder, _ in started])
        await store.save(conn, [ladder for ladder, _ in restarted] + stopped)
        events = [_event(ladder, policy, OPENED) for ladder, policy in started
                  if ladder.incident_id in inserted]
        events += [_event(ladder, policy, RESTARTED) for ladder, policy in restarted]
        await _write(conn, events, now)
        return events

    async def sweep(self, conn: AsyncConnection, now: datetime, *, limit: int = 500
                    ) -> list[EscalationEvent]:
        """Notify the next level of every ladder whose timer ran out.

        One level per ladder per sweep, even after downtime: each level notified
        gets its full timeout to acknowledge, from now.
        """
        changed: list[Ladder] = []
        events: list[EscalationEvent] = []
        for ladder, subject in await store.due(conn, now, limit=limit):
            if subject.status is not IncidentStatus.TRIGGERED:  # sync was missed; catch up
                changed.append(_stop(ladder, now))
                continue
            moved, event = self._next(ladder, subject, now)
            changed.append(moved)
            if event:
                events.append(event)
        await store.save(conn, changed)
        await _write(conn, events, now)
        return events

    def _next(self, ladder: Ladder, subject: Subject, now: datetime
              ) -> tuple[Ladder, EscalationEvent | None]:
        policy = self._policies.get(ladder.policy)
        if policy is None:
            # Its policy went away in a reload: better to start over on the policy
            # that now applies than to leave the incident unescalated.
            policy = self.choose(subject)
            if policy is None:
                log.warning("escalation policy gone and none applies; escalation stops",
                            incident=incident_key(ladder.incident_id), policy=ladder.policy)
                return _stop(ladder, now), None
            fresh = _start(ladder.incident_id, policy, now)
            return fresh, _event(fresh, policy, RESTARTED)
        moved = _advance(ladder, policy, now)
        if moved.state is LadderState.EXHAUSTED:
            log.warning("escalation exhausted: every level was notified and nobody "
                        "acknowledged", incident=incident_key(ladder.incident_id),
                        policy=policy.name, cycles=moved.cycle + 1)
            return moved, None
        return moved, _event(moved, policy, TIMEOUT)

    async def escalate(self, conn: AsyncConnection, incident_id: int, *, actor: str,
                       note: str | None, level: int | None, now: datetime) -> EscalationEvent:
        """A person escalates by hand: to the next level, or to `level` (1-based)."""
        key = incident_key(incident_id)
        subject = (await store.subjects(conn, [incident_id])).get(incident_id)
        if subject is None:
            raise NotFound(f"no incident {key}")
        if subject.status not in _ESCALATABLE:
            raise InvalidTransition(f"{key} is {subject.status.value}; only a triggered or "
                                    "acknowledged incident can be escalated")
        ladder = (await store.ladders(conn, [incident_id], lock=True)).get(incident_id)
        policy = self._policies.get(ladder.policy) if ladder else None
        if policy is None:
            ladder = None  # none yet, or its policy went away: start on the one that applies
            policy = self.choose(subject)
        if policy is None:
            raise InvalidTransition(f"no escalation policy applies to {key}")
        index = _target(key, ladder, policy, level)
        moved = _place(incident_id, policy, index, cycle=ladder.cycle if ladder else 0,
                       running=subject.status is IncidentStatus.TRIGGERED, now=now)
        if ladder is not None:
            await store.save(conn, [moved])
        elif not await store.insert(conn, [moved]):
            raise InvalidTransition(f"{key} changed meanwhile; try again")
        event = _event(moved, policy, MANUAL, actor=actor)
        await _write(conn, [event], now, note=note)
        return event

    async def views(self, conn: AsyncConnection, incident_ids: Sequence[int]
                    ) -> dict[int, dict[str, Any] | None]:
        """Each incident's escalation as its JSON shows it; None: it has none."""
        found = await store.ladders(conn, incident_ids)
        return {i: self._view(found[i]) if i in found else None for i in incident_ids}

    def _view(self, ladder: Ladder) -> dict[str, Any]:
        policy = self._policies.get(ladder.policy)
        return {"policy": ladder.policy, "level": ladder.level + 1, "cycle": ladder.cycle,
                "state": ladder.state.value, "next_at": timestamp(ladder.next_at),
                "targets": list(_targets(policy, ladder.level)) if policy else []}


def _matches(rule: EscalationRule, subject: Subject) -> bool:
    """Every condition the rule gives holds; a rule without conditions matches all."""
    if rule.services is not None and not set(rule.services) & set(subject.services):
        return False
    return rule.priorities is None or (
        subject.priority is not None and subject.priority.value in rule.priorities)


def _target(key: str, ladder: Ladder | None, policy: EscalationPolicy, level: int | None
            ) -> int:
    """The 0-based level a manual escalation notifies."""
    count = len(policy.levels)
    if level is not None:
        if not 1 <= level <= count:
            reason = f"policy {policy.name} has levels 1 to {count}"
            raise InvalidInput(f"level {level} is out of range: {reason}",
                               [{"field": "level", "reason": reason}])
        return level - 1
    index = ladder.level + 1 if ladder else 0
    if index >= count:
        raise InvalidTransition(f"{key} is already at the last level ({count}) of escalation "
                                f"policy {policy.name}; give a level to notify one again")
    return index


def _start(incident_id: int, policy: EscalationPolicy, now: datetime) -> Ladder:
    return _place(incident_id, policy, 0, cycle=0, running=True, now=now)


def _place(incident_id: int, policy: EscalationPolicy, index: int, *, cycle: int,
           running: bool, now: datetime) -> Ladder:
    """The ladder at a level just notified; its timer runs only while nobody has acknowledged."""
    timeout = timedelta(seconds=policy.levels[index].timeout_seconds)
    return Ladder(incident_id=incident_id, policy=policy.name, level=index, cycle=cycle,
                  state=LadderState.ACTIVE if running else LadderState.STOPPED,
                  next_at=now + timeout if running else None, updated_at=now)


def _advance(ladder: Ladder, policy: EscalationPolicy, now: datetime) -> Ladder:
    """One step up the ladder: the next level, else level 1 of the next cycle, else exhausted."""
    if ladder.level + 1 < len(policy.levels):
        return _place(ladder.incident_id, policy, ladder.level + 1, cycle=ladder.cycle,
                      running=True, now=now)
    if ladder.cycle < policy.repeat:
        return _place(ladder.incident_id, policy, 0, cycle=ladder.cycle + 1, running=True,
                      now=now)
    # The level stays the last one notified (kept in range should the policy have shrunk).
    return replace(ladder, level=min(ladder.level, len(policy.levels) - 1),
                   state=LadderState.EXHAUSTED, next_at=None, updated_at=now)


def _stop(ladder: Ladder, now: datetime) -> Ladder:
    return replace(ladder, state=LadderState.STOPPED, next_at=None, updated_at=now)


def _targets(policy: EscalationPolicy, index: int) -> tuple[str, ...]:
    return tuple(policy.levels[min(index, len(policy.levels) - 1)].targets)


def _event(ladder: Ladder, policy: EscalationPolicy, reason: str, *,
           actor: str = SYSTEM_ACTOR) -> EscalationEvent:
    return EscalationEvent(incident_id=ladder.incident_id, policy=policy.name,
                           level=ladder.level + 1, cycle=ladder.cycle,
                           targets=_targets(policy, ladder.level), reason=reason, actor=actor)


async def _write(conn: AsyncConnection, events: Sequence[EscalationEvent], now: datetime,
                 *, note: str | None = None) -> None:
    """One `escalated` timeline entry per notification."""
    extra = {"note": note} if note else {}
    await incident_store.add_timeline(conn, [
        (e.incident_id, TimelineEntry(
            at=now, actor=e.actor, kind=TimelineKind.ESCALATED,
            detail={"policy": e.policy, "level": e.level, "targets": list(e.targets),
                    "cycle": e.cycle, "reason": e.reason, **extra}))
        for e in events
    ])


def record_metrics(events: Iterable[EscalationEvent]) -> None:
    """Count notified levels. Call only after the commit (the caller logs them)."""
    for e in events:
        metrics.ESCALATIONS.labels(e.policy, e.reason).inc()
