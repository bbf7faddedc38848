"""The root cause of an incident: the most upstream of its alerting CIs.

It is the CI with a firing alert that depends on no other firing CI of the
incident. Among several, the one most of the others depend on, then the most
critical, then the first by name. Dependencies further than `depth` hops apart
are not compared (a bounded cost).

`root_cause` works it out from scratch. `RootCauses` keeps, per incident, the
counts behind the answer and moves them as CIs start or stop alerting, so that a
batch adding a few alerts to an incident of thousands of CIs costs a few
walks instead of one per CI; it gives the same answer as `root_cause` (a property
test compares them). It keeps the answer's order too, in a heap of the tops.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from heapq import heapify, heappop, heappush

from daemon.correlation.topology import Topology
from daemon.store.link_memory import LinkSummary

DEPTH = 8

# What `_pick` orders by: most dependents, then most critical, then the name.
_Key = tuple[int, int, str]


def root_cause(topology: Topology, cis: Iterable[str], depth: int = DEPTH) -> str | None:
    present = topology.cis.keys() & cis
    if not present:
        return None
    below: dict[str, int] = dict.fromkeys(present, 0)  # how many others depend on it
    has_upstream: set[str] = set()
    upstream = topology.upstream
    for ci in present:
        deps = upstream(ci, depth) & present
        if deps:
            has_upstream.add(ci)
            for dep in deps:
                below[dep] += 1
    tops = (present - has_upstream) or present
    return _pick(topology, tops, below.__getitem__)


def _pick(topology: Topology, tops: Iterable[str], below: Callable[[str], int]) -> str:
    return min(tops, key=lambda ci: (-below(ci), topology.cis[ci].criticality, ci))


@dataclass(slots=True)
class _Counts:
    """One incident's alerting CIs and what they depend on among each other."""

    present: set[str] = field(default_factory=set)
    # u → the present CIs that depend on u (within the depth), u present or not
    dependents: dict[str, set[str]] = field(default_factory=dict)
    # c → how many present CIs c depends on (0: nothing alerting above it)
    above: dict[str, int] = field(default_factory=dict)
    tops: set[str] = field(default_factory=set)  # the present CIs with nothing above
    # The tops by `_key`, lazily: an entry is pushed whenever a CI becomes a top or a
    # top's key changes, and dropped when found stale (no longer a top, or an old key).
    # Why: nearly every batch moves some CI, and a `min` over ~500 tops then cost
    # ~0.15 ms of a ~0.5 ms call (10,000 CIs, ~2,000 alerting); the heap, ~0.02 ms.
    heap: list[_Key] = field(default_factory=list)
    last: str | None = None  # the answer, until a CI starts or stops alerting
    shape: int | None = None  # the `LinkSummary.shape` the counts were last moved to

    def add(self, topology: Topology, ci: str, depth: int) -> None:
        ups = topology.upstream(ci, depth)
        self.above[ci] = n = len(ups & self.present)
        if n == 0:
            self.tops.add(ci)
        for up in ups:
            self.dependents.setdefault(up, set()).add(ci)
        for below in self.dependents.get(ci, ()):
            self.above[below] += 1
            self.tops.discard(below)
        self.present.add(ci)
        self._push(topology, ups)  # one more dependent each
        self._push(topology, (ci,))

    def remove(self, topology: Topology, ci: str, depth: int) -> None:
        self.present.discard(ci)
        self.tops.discard(ci)
        ups = topology.upstream(ci, depth)
        for up in ups:
            self.dependents[up].discard(ci)
        freed: list[str] = []  # nothing above them any more: new tops
        for below in self.dependents.get(ci, ()):
            self.above[below] -= 1
            if self.above[below] == 0:
                self.tops.add(below)
                freed.append(below)
        del self.above[ci]
        self._push(topology, ups)  # one dependent fewer each
        self._push(topology, freed)

    def root(self, topology: Topology) -> str | None:
        if not self.present:
            return None
        tops, heap = self.tops, self.heap
        if len(heap) > 2 * len(tops) + 64:  # mostly stale entries: start afresh
            heap[:] = [self._key(topology, ci) for ci in tops]
            heapify(heap)
        if not tops:  # every alerting CI has one above it: cycles (rare)
            dependents = self.dependents
            return _pick(topology, self.present, lambda ci: len(dependents.get(ci, ())))
        while (ci := heap[0][2]) not in tops or heap[0] != self._key(topology, ci):
            heappop(heap)
        return ci

    def _push(self, topology: Topology, cis: Iterable[str]) -> None:
        for ci in cis:
            if ci in self.tops:
                heappush(self.heap, self._key(topology, ci))

    def _key(self, topology: Topology, ci: str) -> _Key:
        return (-len(self.dependents.get(ci, ())), topology.cis[ci].criticality, ci)


class RootCauses:
    """`root_cause` per incident, kept up to date from one call to the next."""

    def __init__(self, depth: int = DEPTH) -> None:
        self._depth = depth
        self._topology: Topology | None = None
        self._counts: dict[int, _Counts] = {}

    def of(self, topology: Topology, incident_id: int, cis: AbstractSet[str]) -> str | None:
        """The root cause of the incident whose alerting CIs are now `cis`."""
        counts = self._counts_of(topology, incident_id)
        counts.shape = None
        wanted = topology.cis.keys() & cis
        return self._move(topology, counts, counts.present - wanted, wanted - counts.present)

    def of_links(self, topology: Topology, incident_id: int, summary: LinkSummary
                 ) -> str | None:
        """The root cause of the incident whose links add up to `summary`: moved by the
        CIs it says moved since this was last asked (a few), not by comparing all of
        them (thousands, in a large incident: ~0.2 ms a batch each)."""
        counts = self._counts_of(topology, incident_id)
        if counts.shape == summary.shape and counts.last is not None:
            return counts.last
        alerting = summary.alerting
        moved = summary.moved_since(counts.shape)
        if moved is None:
            wanted = topology.cis.keys() & alerting
            gone, new = counts.present - wanted, wanted - counts.present
        else:
            present, known = counts.present, topology.cis
            gone = {ci for ci in moved if ci in present and ci not in alerting}
            new = {ci for ci in moved if ci not in present and ci in alerting and ci in known}
        summary.settle()
        counts.shape = summary.shape
        return self._move(topology, counts, gone, new)

    def _counts_of(self, topology: Topology, incident_id: int) -> _Counts:
        if topology is not self._topology:  # a CMDB change: every count is stale
            self._topology = topology
            self._counts.clear()
        counts = self._counts.get(incident_id)
        if counts is None:
            counts = self._counts[incident_id] = _Counts()
        return counts

    def _move(self, topology: Topology, counts: _Counts, gone: AbstractSet[str],
              new: AbstractSet[str]) -> str | None:
        if gone or new or counts.last is None:
            for ci in gone:
                counts.remove(topology, ci, self._depth)
            for ci in new:
                counts.add(topology, ci, self._depth)
            counts.last = counts.root(topology)
        return counts.last

    def keep_only(self, incident_ids: Iterable[int]) -> None:
        wanted = set(incident_ids)
        for incident_id in self._counts.keys() - wanted:
            del self._counts[incident_id]
