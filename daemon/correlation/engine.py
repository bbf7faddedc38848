"""Which incident a new alert belongs to: topology first, then labels.

A new alert bound to a CI joins an open incident when its CI is related to
one of the incident's CIs — one depends on the other within `max_depth`
hops, or (with `join_siblings`) both depend directly on a shared CI that is
not a hub — and the incident had activity within the window. An
alert related to several incidents merges them into the oldest. Unbound
alerts group by labels (`group_by` per integration, else the source's own
grouping). Anything else opens a new incident.

Decisions are pure functions of the alerts, a snapshot of open incidents and
the graph; the ITSM layer applies them. Grouping is therefore the connected
components of the "related" relation, whatever order a burst arrives in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.config import CorrelationConfig
from daemon.correlation.topology import TopologyHolder
from daemon.models import Alert
from daemon.store import incidents as incident_store
from daemon.store.link_memory import LinkMemory

Placed = tuple[Alert, int]  # an alert and its stored id


@dataclass(slots=True)
class Group:
    """An incident as the engine sees it: open in the store, or opened by this plan."""

    key: int  # the incident id; negative for one this plan opens
    created_at: datetime
    last_activity: datetime
    group_key: str
    cis: set[str] = field(default_factory=set)  # the CIs this plan put alerts of in it
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

    async def correlate(self, conn: AsyncConnection, new: Sequence[Placed], now: datetime,
                        *, links: LinkMemory) -> CorrelationPlan:
        if not new:
            return CorrelationPlan()
        since = now - timedelta(seconds=self._config.window_seconds)
        bound = await incident_store.open_incident_cis(conn, since=since, links=links)
        keys = {self.group_key(a) for a, _ in new if a.ci_id is None}
        unbound = await incident_store.open_by_group_key(conn, keys)
        # `links` keeps exactly the incidents in `bound` now (open_incident_cis drops the
        # rest and reads what it lacks), so its map of CIs to incidents is the index.
        owners = links.owners if links.kept.keys() == bound.keys() else None
        return self.plan(new, bound=bound, unbound=unbound, now=now, owners=owners)

    def plan(self, new: Sequence[Placed], *,
             bound: Mapping[int, tuple[datetime, datetime, set[str]]],
             unbound: Mapping[str, int], now: datetime,
             owners: Mapping[str, AbstractSet[int]] | None = None) -> CorrelationPlan:
        """Decide for each new alert, in arrival order, against the open incidents.
        `owners`: CI → the incidents of `bound` alerting on it, if the caller has it."""
        index = self.index(bound, owners)
        by_label = dict(unbound)
        for alert, alert_id in new:
            if alert.ci_id is None:
                key = self.group_key(alert)
                target_key = by_label.get(key)
                if target_key is None:
                    target_key = by_label[key] = index.add_group(now, key).key
                target = index.groups.setdefault(target_key, Group(target_key, now, now, key))
            else:
                target = self.decide(index, alert.ci_id, now)
            target.alerts.append((alert, alert_id))
            target.last_activity = now
        return _plan_from(index.groups)

    def index(self, bound: Mapping[int, tuple[datetime, datetime, set[str]]],
              owners: Mapping[str, AbstractSet[int]] | None = None) -> Index:
        """The open incidents, indexed by their CIs (built from `bound` unless given)."""
        if owners is None:
            built: dict[str, set[int]] = {}
            for incident_id, (_, _, cis) in bound.items():
                for ci in cis:
                    built.setdefault(ci, set()).add(incident_id)
            owners = built
        index = Index(stored=owners)
        for incident_id, (created, activity, _) in bound.items():
            index.groups[incident_id] = Group(incident_id, created, activity,
                                              f"incident:{incident_id}")
        return index

    def decide(self, index: Index, ci: str, now: datetime) -> Group:
        """The group a new alert on `ci` joins (merging what it connects), or a new one."""
        topology = self._topology.current
        depth = self._config.max_depth
        owner, stored = index.owner, index.stored
        found = set(owner.get(ci, _NONE)) | stored.get(ci, _NONE)
        for other in topology.upstream(ci, depth):
            # it depends on one of the incident's CIs
            found |= owner.get(other, _NONE)
            found |= stored.get(other, _NONE)
        for other in topology.downstream(ci, depth, limit=_DOWNSTREAM_LIMIT):
            # one of the incident's CIs depends on it
            found |= owner.get(other, _NONE)
            found |= stored.get(other, _NONE)
        if self._config.join_siblings:
            for dep in topology.dependencies(ci):
                # a direct dependency it shares with an incident's CI, unless a hub
                if len(topology.dependents(dep)) <= self._config.max_fanout:
                    for sibling in topology.dependents(dep):
                        found |= owner.get(sibling, _NONE)
                        found |= stored.get(sibling, _NONE)
        related = {index.find(k) for k in found}
        if not related:
            target = index.add_group(now, f"ci:{ci}")
        else:
            target = min((index.groups[k] for k in related), key=_age)
            for key in related:
                if key != target.key:
                    _absorb(target, index.groups[key])
        index.note(target, ci)
        return target


_NONE: frozenset[int] = frozenset()
# A hub's dependents past this many are not searched for incidents to join.
_DOWNSTREAM_LIMIT = 10_000


@dataclass(slots=True)
class Index:
    groups: dict[int, Group] = field(default_factory=dict)
    # CI → the stored open incidents alerting on it; read only (it may be kept by the
    # caller from one batch to the next)
    stored: Mapping[str, AbstractSet[int]] = field(default_factory=dict)
    # CI → the groups this plan put alerts on it in
    owner: dict[str, set[int]] = field(default_factory=dict)
    next_temp: int = -1

    def add_group(self, now: datetime, group_key: str) -> Group:
        group = Group(self.next_temp, now, now, group_key)
        self.groups[group.key] = group
        self.next_temp -= 1
        return group

    def note(self, group: Group, ci: str) -> None:
        group.cis.add(ci)
        self.owner.setdefault(ci, set()).add(group.key)

    def find(self, key: int) -> int:
        while (into := self.groups[key].merged_into) is not None:
            key = into
        return key


def _age(group: Group) -> tuple[int, datetime, int]:
    # Stored incidents before new ones; then the oldest; then the lowest id.
    return (0 if group.key > 0 else 1, group.created_at, abs(group.key))


def _absorb(into: Group, other: Group) -> None:
    into.cis |= other.cis
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
