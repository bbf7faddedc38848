"""Priority from impact by urgency, the ITIL way.

Impact comes from what the incident touches: the highest criticality among
its impacted business services, else of its root-cause CI. Urgency comes
from the most severe alert. Rules on alert labels can override either; a
person can set the priority by hand, and then it stays.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from daemon.config import ConfigError, PriorityConfig
from daemon.correlation.binding import Matcher
from daemon.correlation.topology import Topology
from daemon.models import Priority, Severity


@dataclass(frozen=True, slots=True)
class Assessment:
    impact: int
    urgency: int
    priority: Priority


@dataclass(frozen=True, slots=True)
class _Rule:
    matchers: tuple[Matcher, ...]
    impact: int | None
    urgency: int | None

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)


class PriorityMatrix:
    def __init__(self, config: PriorityConfig) -> None:
        self._config = config
        problems, rules = [], []
        for i, rule in enumerate(config.rules):
            try:
                matchers = tuple(Matcher.parse(m) for m in rule.match)
            except ValueError as exc:
                problems.append(f"priority.rules.{i}: {exc}")
                continue
            rules.append(_Rule(matchers, rule.impact, rule.urgency))
        if problems:
            raise ConfigError(problems)
        self._rules = rules

    @property
    def label_names(self) -> tuple[str, ...]:
        """The labels the rules look at: all `assess` needs of an alert's labels."""
        return tuple(sorted({m.name for rule in self._rules for m in rule.matchers}))

    def priority(self, impact: int, urgency: int) -> Priority:
        return Priority(self._config.matrix[impact - 1][urgency - 1])

    def assess(self, *, topology: Topology, root: str | None, services: Sequence[str],
               severity: Severity, labels: Iterable[Mapping[str, str]]) -> Assessment:
        impact = self._impact(topology, root, services)
        urgency = self._config.urgency_by_severity[severity.value]
        all_labels = list(labels)
        for rule in self._rules:
            if any(rule.matches(lbl) for lbl in all_labels):
                impact = rule.impact or impact
                urgency = rule.urgency or urgency
                break
        return Assessment(impact, urgency, self.priority(impact, urgency))

    def _impact(self, topology: Topology, root: str | None, services: Sequence[str]) -> int:
        cis = [topology.cis[s] for s in services if s in topology.cis]
        if not cis and root in topology.cis:
            cis = [topology.cis[root]]  # type: ignore[index]
        if not cis:
            return self._config.default_impact
        highest = min(ci.criticality for ci in cis)
        return self._config.impact_by_criticality.get(highest, self._config.default_impact)
