"""Which incident a new alert belongs to: topology first, then labels.

A new alert bound to a CI joins an open incident when its CI is related to
one of the incident's CIs by dependency edges within `max_depth` hops — one
depends on the other, or (with `join_siblings`) both depend on a shared CI
that is not a hub — and the incident had activity within the window. An
alert related to several incidents merges them into the oldest. Unbound
alerts group by labels (`group_by` per integration, else the source's own
grouping). Anything else opens a new incident.

Decisions are pure functions of the alerts, a snapshot of open incidents and
the graph; the ITSM layer applies them. Grouping is therefore the connected
components of the "related" relation, whatever order a burst arrives in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.config import CorrelationConfig
from daemon.correlation.topology import Topology, TopologyHolder
from daemon.models import Alert
from daemon.store import incidents as incident_store

Placed = tuple[Alert, int]  # an alert and its stored id


@dataclass(slots=True)
class Group:
    """An incident as the engine sees it: open in the store, or opened by this plan."""

    key: int  # the incident id; negative for one this plan opens
    created_at: datetime
    last_activity: datetime
    group_key: str
    cis: set[str] = field(default_factory=set)
    upstream: set[str] = field(default_factory=set)  # within max_depth of any of `cis`
    alerts: list[Placed] = field(default_factory=list)
    merged_into: int | None = None


@dataclass(slots=True)
class CorrelationPlan:
    opens: list[Group] = field(default_factory=list)
    joins: dict[int, list[Placed]] = field(default_factory=dict)
    merges: list[tuple[int, int]] = field(default_factory=list)  # (from, into), both stored


class Correlator:
    def __init__(self, *, config: CorrelationConfig, topology: TopologyHolder,
                 group_by: Mapping[str, Sequence[str]]) -> None:
        self._config = config
        self._topology = topology
        self._group_by = group_by  # integration name → labels

    def group_key(self, alert: Alert) -> str:
        """The key unbound alerts group by."""
        labels = self._group_by.get(alert.integration)
        if labels is None:
            return alert.group_key
        values = ",".join(f"{name}={alert.labels.get(name, '')}" for name in labels)
        return f"{alert.integration}:{{{values}}}"

    async def correlate(self, conn: AsyncConnection, new: Sequence[Placed], now: datetime
                        ) -> CorrelationPlan:
        if not new:
            return CorrelationPlan()
        since = now - timedelta(seconds=self._config.window_seconds)
        bound = await incident_store.open_incident_cis(conn, since=since)
        keys = {self.group_key(a) for a, _ in new if a.ci_id is None}
        unbound = await incident_store.open_by_group_key(conn, keys)
        return self.plan(new, bound=bound, unbound=unbound, now=now)

    def plan(self, new: Sequence[Placed], *,
             bound: Mapping[int, tuple[datetime, datetime, set[str]]],
             unbound: Mapping[str, int], now: datetime) -> CorrelationPlan:
        """Decide for each new alert, in arrival order, against the open incidents."""
        topology = self._topology.current
        groups: dict[int, Group] = {}
        for incident_id, (created, activity, cis) in bound.items():
            group = Group(incident_id, created, activity, f"incident:{incident_id}", set(cis))
            for ci in cis:
                group.upstream |= self._up(topology, ci)
            groups[incident_id] = group
        by_label = dict(unbound)
        next_temp = -1
        for alert, alert_id in new:
            if alert.ci_id is None:
                key = self.group_key(alert)
                target_key = by_label.get(key)
                if target_key is None:
                    target_key = next_temp
                    next_temp -= 1
                    groups[target_key] = Group(target_key, now, now, key)
                    by_label[key] = target_key
                target = groups.setdefault(target_key, Group(target_key, now, now, key))
            else:
                related = [g for g in groups.values() if g.merged_into is None
                           and g.cis and self._related(topology, alert.ci_id, g)]
                if not related:
                    target = Group(next_temp, now, now, f"ci:{alert.ci_id}")
                    groups[next_temp] = target
                    next_temp -= 1
                else:
                    target = min(related, key=_age)
                    for other in related:
                        if other is not target:
                            _absorb(target, other)
                target.cis.add(alert.ci_id)
                target.upstream |= self._up(topology, alert.ci_id)
            target.alerts.append((alert, alert_id))
            target.last_activity = now
        return _plan_from(groups)

    def _up(self, topology: Topology, ci: str) -> set[str]:
        return topology.upstream(ci, self._config.max_depth)

    def _related(self, topology: Topology, ci: str, group: Group) -> bool:
        if ci in group.cis or ci in group.upstream:  # the same CI, or a dependency of one
            return True
        mine = self._up(topology, ci)
        if mine & group.cis:  # depends on one of the incident's CIs
            return True
        if not self._config.join_siblings:
            return False
        limit = self._config.max_fanout
        shared = mine & group.upstream
        return any(len(topology.dependents(x)) <= limit for x in shared)


def _age(group: Group) -> tuple[int, datetime, int]:
    # Stored incidents before new ones; then the oldest; then the lowest id.
    return (0 if group.key > 0 else 1, group.created_at, abs(group.key))


def _absorb(into: Group, other: Group) -> None:
    into.cis |= other.cis
    into.upstream |= other.upstream
    into.alerts.extend(other.alerts)
    other.alerts = []
    other.merged_into = into.key


def _plan_from(groups: Mapping[int, Group]) -> CorrelationPlan:
    plan = CorrelationPlan()
    for group in groups.values():
        if group.merged_into is not None:
            if group.key > 0:
                root = group
                while root.merged_into is not None:
                    root = groups[root.merged_into]
                plan.merges.append((group.key, root.key))
            continue
        if group.key < 0:
            if group.alerts:
                plan.opens.append(group)
        elif group.alerts:
            plan.joins[group.key] = list(group.alerts)
    return plan
