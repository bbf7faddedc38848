"""What the alert links of open incidents add up to, kept by the ingest writer between batches.

Every ingest batch needs the CIs of the open incidents' alerts (correlation) and,
for the incidents it touches, which of those CIs still fire and the worst severity
(root cause, impact, priority). Read from the database, that is a join over every
link of an incident: with one incident of thousands of alerts, tens of milliseconds
a batch, growing with the incident. But the facts change little and in few ways: an
incident's links only grow (a merge moves all of one incident's links into another),
an alert's CI and severity never change after it is stored, and its status only
moves from firing to resolved. So the writer keeps, per incident, what its links add
up to, and applies its own changes to that as it makes them.

That stays true only while nothing else changes links or alert states. The database
counts every other change in `link_changes` (the triggers of migration 0013: a hand
resolve, another replica's batch, someone at a SQL prompt), and a batch that finds the
count moved since this writer's last commit forgets everything and reads afresh. The
protocol, per batch: `begin` (after the ingest lock), the batch's changes with
`linked` / `resolved` / `merged` beside them, `end` (its last statement), then
`committed` once the commit is known to have landed; a batch not confirmed so (it
failed, or its commit did) leaves the next one trusting nothing kept.
"""

from __future__ import annotations

from collections.abc import Iterable, KeysView, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from itertools import count
from types import MappingProxyType

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.models import Alert, AlertStatus, Severity
from daemon.store.in_lists import padded
from daemon.store.tables import alerts, incident_alerts, link_changes

_BY_RANK = {s.rank: s for s in Severity}
_SHAPES = count()


@dataclass(slots=True)
class LinkSummary:
    """What the alerts of one incident add up to, for correlation, root cause and impact.

    Its `alerting` CIs (those still firing, or all its CIs when none fires) are what
    root cause is worked out from. A consumer that keeps counts over them (`RootCauses`)
    moves them by `moved_since` instead of comparing thousands of CIs every batch."""

    cis: set[str] = field(default_factory=set)  # the CIs of its bound alerts
    # CI → how many of its alerts still fire (CIs with none are left out)
    firing_on: dict[str, int] = field(default_factory=dict)
    worst_rank: int | None = None  # the most severe of all its alerts, bound or not
    # Unique over all summaries, renewed whenever a CI joins or leaves `cis` or `firing`:
    # equal shapes mean the same CIs.
    shape: int = field(default_factory=lambda: next(_SHAPES))
    # The CIs that joined or left `alerting` since the shape `settled` (None: not known,
    # compare whole): `settle` empties it.
    moved: set[str] = field(default_factory=set)
    settled: int | None = None

    @property
    def firing(self) -> KeysView[str]:
        """The CIs with an alert still firing (a live view: do not keep it)."""
        return self.firing_on.keys()

    @property
    def alerting(self) -> AbstractSet[str]:
        """The CIs root cause looks at: the firing ones, or all when none fires (a live
        view: do not keep it)."""
        return self.firing_on.keys() or self.cis

    @property
    def worst(self) -> Severity | None:
        return None if self.worst_rank is None else _BY_RANK[self.worst_rank]

    def moved_since(self, shape: int | None) -> AbstractSet[str] | None:
        """The CIs that may have joined or left `alerting` since `shape` (that of the
        consumer's last `settle`); None when that is not known."""
        return self.moved if shape is not None and shape == self.settled else None

    def settle(self) -> None:
        """The consumer has seen `alerting` as it is now."""
        self.moved.clear()
        self.settled = self.shape

    def add(self, ci: str | None, severity: Severity, *, firing: bool) -> None:
        if ci is not None:
            joins_cis, starts_firing = ci not in self.cis, firing and ci not in self.firing_on
            if joins_cis or starts_firing:
                if starts_firing and not self.firing_on:
                    self._unsettle()  # `alerting` turns from all CIs to the firing ones
                elif starts_firing or (joins_cis and not self.firing_on):
                    self.moved.add(ci)
                self.shape = next(_SHAPES)
            self.cis.add(ci)
            if firing:
                self.firing_on[ci] = self.firing_on.get(ci, 0) + 1
        if self.worst_rank is None or severity.rank < self.worst_rank:
            self.worst_rank = severity.rank

    def resolve_one(self, ci: str) -> bool:
        """One firing alert on `ci` was resolved; False if none was counted firing there."""
        left = self.firing_on.get(ci, 0) - 1
        if left < 0:
            return False
        if left:
            self.firing_on[ci] = left
        else:
            del self.firing_on[ci]
            if self.firing_on:
                self.moved.add(ci)
            else:
                self._unsettle()  # none fires now: `alerting` is all its CIs
            self.shape = next(_SHAPES)
        return True

    def absorb(self, other: LinkSummary) -> None:
        self.cis |= other.cis
        for ci, n in other.firing_on.items():
            self.firing_on[ci] = self.firing_on.get(ci, 0) + n
        if other.worst_rank is not None and (self.worst_rank is None
                                             or other.worst_rank < self.worst_rank):
            self.worst_rank = other.worst_rank
        self._unsettle()  # a merge: rare, compared whole
        self.shape = next(_SHAPES)

    def _unsettle(self) -> None:
        self.moved.clear()
        self.settled = None


# Severity.rank in SQL, so the worst severity is a MIN over the alerts.
_RANK = sa.case({s.value: s.rank for s in Severity}, value=alerts.c.severity)
_FIRING = sa.case((alerts.c.status == AlertStatus.FIRING.value, 1), else_=0)
_OF_IDS = incident_alerts.c.incident_id.in_(sa.bindparam("ids", expanding=True))
# One row per (incident, CI) however many alerts share the CI.
_SUMMARIES = (
    sa.select(incident_alerts.c.incident_id, alerts.c.ci_id, sa.func.sum(_FIRING),
              sa.func.min(_RANK))
    .join(alerts, alerts.c.id == incident_alerts.c.alert_id)
    .where(_OF_IDS)
    .group_by(incident_alerts.c.incident_id, alerts.c.ci_id)
)
# PostgreSQL: each link's alert looked up by its key. As a plain join, a database never
# analysed (autovacuum off) hashed every alert instead: 25 ms at 100,000 alerts for a
# few incidents. `OFFSET 0` keeps the planner from folding the lookup back into a join.
_LINKED = (sa.select(alerts.c.ci_id, _FIRING.label("firing"), _RANK.label("rank"))
           .where(alerts.c.id == incident_alerts.c.alert_id).offset(0).lateral("linked"))
_PG_SUMMARIES = (
    sa.select(incident_alerts.c.incident_id, _LINKED.c.ci_id, sa.func.sum(_LINKED.c.firing),
              sa.func.min(_LINKED.c.rank))
    .select_from(incident_alerts.join(_LINKED, sa.true()))
    .where(_OF_IDS)
    .group_by(incident_alerts.c.incident_id, _LINKED.c.ci_id)
)
_NEXT = (sa.update(link_changes).where(link_changes.c.id == 1)
         .values(n=link_changes.c.n + 1, ingesting=False).returning(link_changes.c.n))
_BEGIN_SQLITE = (sa.update(link_changes).where(link_changes.c.id == 1)
                 .values(ingesting=True).returning(link_changes.c.n))
# The setting lasts until the transaction ends, so a failed batch leaves nothing behind.
_BEGIN_PG = sa.text("SELECT set_config('incidentd.ingesting', 'on', true), n "
                    "FROM link_changes WHERE id = 1")


async def read_summaries(conn: AsyncConnection, incident_ids: Iterable[int]
                         ) -> dict[int, LinkSummary]:
    """Each incident's summary as the database has it now; every id asked for has one."""
    ids = sorted(set(incident_ids))
    out = {i: LinkSummary() for i in ids}  # filled in below: new, so their shapes are too
    if not ids:
        return out
    query = _PG_SUMMARIES if conn.dialect.name == "postgresql" else _SUMMARIES
    rows = (await conn.execute(query, {"ids": padded(ids)})).all()
    for incident_id, ci_id, firing, rank in rows:
        summary = out[incident_id]
        if ci_id is not None:
            summary.cis.add(ci_id)
            if firing:
                summary.firing_on[ci_id] = int(firing)
        if summary.worst_rank is None or rank < summary.worst_rank:
            summary.worst_rank = rank
    return out


class LinkMemory:
    """The summaries of the incidents the last batches worked with, while still true."""

    def __init__(self) -> None:
        self._kept: dict[int, LinkSummary] = {}
        # CI → the kept incidents with a bound alert on it: correlation's index of the
        # open incidents, moved with every change instead of rebuilt every batch
        # (thousands of CIs: ~5 ms a batch).
        self._owners: dict[str, set[int]] = {}
        self._count_at_commit: int | None = None  # `link_changes.n` as the last commit left it
        self._count_at_begin: int | None = None
        self._count_at_end: int | None = None

    @property
    def kept(self) -> Mapping[int, LinkSummary]:
        return MappingProxyType(self._kept)

    @property
    def owners(self) -> Mapping[str, AbstractSet[int]]:
        """CI → the kept incidents that have a bound alert on it (a live view: the
        caller must neither change it nor keep it past the next change of links)."""
        return MappingProxyType(self._owners)

    async def begin(self, conn: AsyncConnection) -> None:
        """A batch starts (under the ingest lock): forget everything if anything but this
        writer changed links or alert states since its last commit."""
        if conn.dialect.name == "postgresql":
            row = (await conn.execute(_BEGIN_PG)).one_or_none()
            count = None if row is None else row[1]
        else:
            count = (await conn.execute(_BEGIN_SQLITE)).scalar_one_or_none()
        # No counter row (a restore without it): nothing can be trusted, ingest goes on.
        if count is None or count != self._count_at_commit:
            self._forget()
        # Until this batch is known to have committed: a batch that is never confirmed
        # (it failed, or its caller does not say) makes the next one read afresh.
        self._count_at_commit = None
        self._count_at_begin, self._count_at_end = count, None

    async def end(self, conn: AsyncConnection) -> None:
        """The batch's last statement. It moves the count once, for the other replicas."""
        if self._count_at_begin is None:
            return
        count = (await conn.execute(_NEXT)).scalar_one_or_none()
        # Moved by more than this batch's own step: someone else's change committed
        # while the batch ran, and what it read before may not show it.
        self._count_at_end = count if count == self._count_at_begin + 1 else None

    def committed(self) -> None:
        """The batch committed: what is kept is what the database now says."""
        self._count_at_commit = self._count_at_end

    def _forget(self) -> None:
        """Someone else changed links, or a batch was not confirmed: read afresh."""
        self._kept.clear()
        self._owners.clear()
        self._count_at_commit = None

    def _keep(self, incident_id: int, summary: LinkSummary) -> None:
        self._kept[incident_id] = summary
        for ci in summary.cis:
            self._owners.setdefault(ci, set()).add(incident_id)

    def _drop(self, incident_id: int) -> LinkSummary | None:
        summary = self._kept.pop(incident_id, None)
        if summary is not None:
            for ci in summary.cis:
                self._disown(ci, incident_id)
        return summary

    def _disown(self, ci: str, incident_id: int) -> None:
        holders = self._owners[ci]
        holders.discard(incident_id)
        if not holders:
            del self._owners[ci]

    async def summaries(self, conn: AsyncConnection, incident_ids: Iterable[int]
                        ) -> dict[int, LinkSummary]:
        """The summaries of these incidents (read from the database those not kept).
        The caller must not change them."""
        ids = set(incident_ids)
        missing = ids - self._kept.keys()
        if missing:
            for incident_id, summary in (await read_summaries(conn, missing)).items():
                self._keep(incident_id, summary)
        return {i: self._kept[i] for i in ids}

    def keep_only(self, incident_ids: Iterable[int]) -> None:
        """Drop the others (incidents no longer open or active): bounded memory."""
        wanted = set(incident_ids)
        for incident_id in self._kept.keys() - wanted:
            self._drop(incident_id)

    def linked(self, incident_id: int, members: Iterable[Alert], *, opened: bool) -> None:
        """Firing alerts were just linked to the incident (`opened`: it had no links
        before, so they are all of them)."""
        summary = self._kept.get(incident_id)
        if summary is None:
            if not opened:
                return  # not kept: read whole, these links included, when next asked for
            summary = LinkSummary()
            self._keep(incident_id, summary)
        for alert in members:
            if alert.ci_id is not None and alert.ci_id not in summary.cis:
                self._owners.setdefault(alert.ci_id, set()).add(incident_id)
            summary.add(alert.ci_id, alert.severity, firing=True)

    def resolved(self, resolved: Iterable[tuple[str | None, Sequence[int]]]) -> None:
        """Firing alerts (their CI, their incidents) were just resolved."""
        for ci, incident_ids in resolved:
            if ci is None:
                continue
            for incident_id in incident_ids:
                summary = self._kept.get(incident_id)
                if summary is not None and not summary.resolve_one(ci):
                    self._drop(incident_id)  # kept wrong: read it afresh rather than guess

    def merged(self, merges: Mapping[int, int]) -> None:
        """All links of each `from` incident just moved into its `into` (from → into)."""
        for source, into in merges.items():
            moved = self._drop(source)
            target = self._kept.get(into)
            if target is None:
                continue
            if moved is None:
                self._drop(into)  # half known: read it whole when next asked for
            else:
                for ci in moved.cis - target.cis:
                    self._owners.setdefault(ci, set()).add(into)
                target.absorb(moved)
