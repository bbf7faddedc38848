"""The CMDB dependency graph in memory: upstream and downstream queries.

Built from the store's CIs at start and after every CMDB change, then
swapped in whole, so a correlation decision always sees one consistent
graph. Plain adjacency dicts of sets: for bounded-depth walks from one node
they beat general graph libraries, which pay per call to cross into their
own structures (see bench/correlation.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from daemon.models import ConfigurationItem

_EMPTY: frozenset[str] = frozenset()
_CACHE_LIMIT = 200_000


@dataclass(frozen=True, slots=True)
class Topology:
    cis: Mapping[str, ConfigurationItem] = field(default_factory=dict)
    # `up[x]`: what x depends on; `down[x]`: what depends on x.
    up: Mapping[str, frozenset[str]] = field(default_factory=dict)
    down: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # Bounded upstream walks, memoised: the graph never changes once built.
    _up_cache: dict[tuple[str, int], frozenset[str]] = field(
        default_factory=dict, compare=False, repr=False)
    _down_cache: dict[tuple[str, int, int | None], frozenset[str]] = field(
        default_factory=dict, compare=False, repr=False)

    @classmethod
    def build(cls, items: Iterable[ConfigurationItem]) -> Topology:
        cis = {ci.id: ci for ci in items}
        up: dict[str, set[str]] = {}
        down: dict[str, set[str]] = {}
        for ci in cis.values():
            for target in ci.depends_on:
                if target in cis:
                    up.setdefault(ci.id, set()).add(target)
                    down.setdefault(target, set()).add(ci.id)
        return cls(
            cis=cis,
            up={k: frozenset(v) for k, v in up.items()},
            down={k: frozenset(v) for k, v in down.items()},
        )

    def __contains__(self, ci_id: object) -> bool:
        return ci_id in self.cis

    def __len__(self) -> int:
        return len(self.cis)

    def upstream(self, ci_id: str, depth: int | None = None) -> frozenset[str]:
        """Everything `ci_id` depends on, transitively, up to `depth` hops (None: all)."""
        if depth is None:
            return frozenset(self._walk(ci_id, self.up, None))
        key = (ci_id, depth)
        found = self._up_cache.get(key)
        if found is None:
            if len(self._up_cache) >= _CACHE_LIMIT:
                self._up_cache.clear()
            found = self._up_cache[key] = frozenset(self._walk(ci_id, self.up, depth))
        return found

    def dependencies(self, ci_id: str) -> frozenset[str]:
        """What `ci_id` depends on directly."""
        return self.up.get(ci_id, _EMPTY)

    def downstream(self, ci_id: str, depth: int | None = None, limit: int | None = None
                   ) -> frozenset[str]:
        """Everything that depends on `ci_id`, transitively (at most `limit` of them)."""
        key = (ci_id, -1 if depth is None else depth, limit)
        found = self._down_cache.get(key)
        if found is None:
            if len(self._down_cache) >= _CACHE_LIMIT:
                self._down_cache.clear()
            found = self._down_cache[key] = frozenset(self._walk(ci_id, self.down, depth, limit))
        return found

    def dependents(self, ci_id: str) -> frozenset[str]:
        return self.down.get(ci_id, _EMPTY)

    @staticmethod
    def _walk(start: str, edges: Mapping[str, frozenset[str]], depth: int | None,
              limit: int | None = None) -> set[str]:
        seen: set[str] = set()
        frontier = [start]
        hops = 0
        while frontier and (depth is None or hops < depth):
            hops += 1
            nxt = []
            for node in frontier:
                for other in edges.get(node, _EMPTY):
                    if other not in seen and other != start:
                        seen.add(other)
                        nxt.append(other)
                        if limit is not None and len(seen) >= limit:
                            return seen
            frontier = nxt
        return seen

    def services_of(self, ci_ids: Iterable[str]) -> set[str]:
        """The business services among `ci_ids` and those they belong to."""
        out: set[str] = set()
        for ci_id in ci_ids:
            ci = self.cis.get(ci_id)
            if ci is None:
                continue
            if ci.is_service:
                out.add(ci.id)
            if ci.service and ci.service in self.cis:
                out.add(ci.service)
        return out


class TopologyHolder:
    """The current graph; replaced whole when the CMDB changes."""

    def __init__(self, topology: Topology | None = None) -> None:
        self.current = topology or Topology()

    def replace(self, topology: Topology) -> None:
        self.current = topology
