"""Binding an alert to the CI it is about, by configurable rules.

A rule has Alertmanager-style label matchers and a template that builds a
CI id from the alert (`{{ labels.instance | strip_port }}`). Rules are tried
in order; the first that names a CI the CMDB knows binds the alert. An alert
that names no known CI stays unbound and is grouped by labels instead.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from jinja2 import ChainableUndefined, TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

from daemon.config import BindingRule, ConfigError
from daemon.correlation.topology import TopologyHolder
from daemon.models import Alert, AlertEvent

_MATCHER = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"?(.*?)"?\s*$')
_PORT = re.compile(r"^(\[[^\]]*\]|[^:]*):\d+$")


def strip_port(value: object) -> str:
    """`db-1:9100` → `db-1`, `[::1]:9100` → `[::1]`; anything else unchanged."""
    text = str(value)
    match = _PORT.match(text)
    return match.group(1) if match else text


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    op: str
    value: str
    pattern: re.Pattern[str] | None

    @classmethod
    def parse(cls, text: str) -> Matcher:
        found = _MATCHER.match(text)
        if not found:
            raise ValueError(f"not a matcher: {text!r} (use name=\"v\", !=, =~ or !~)")
        name, op, value = found.groups()
        pattern = None
        if op in ("=~", "!~"):
            try:
                pattern = re.compile(value)
            except re.error as exc:
                raise ValueError(f"bad regular expression in {text!r}: {exc}") from None
        return cls(name, op, value, pattern)

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        assert self.pattern is not None
        hit = self.pattern.fullmatch(actual) is not None  # anchored, as in Alertmanager
        return hit if self.op == "=~" else not hit


_ENV = SandboxedEnvironment(undefined=ChainableUndefined, autoescape=False)
_ENV.filters["strip_port"] = strip_port


# The shapes of the default rules (`{{ labels.ci }}`, `{{ labels.instance | strip_port }}`):
# a label, maybe without its port. Rendering them through the sandbox costs more than
# everything else binding does, so they are done as a dictionary lookup.
_LABEL_TEMPLATE = re.compile(
    r"^\{\{-?\s*labels\.([A-Za-z][A-Za-z0-9_]*)\s*(\|\s*strip_port\s*)?-?\}\}$")


@dataclass(frozen=True, slots=True)
class LabelLookup:
    """A template that only names a label (maybe through `strip_port`), as the template
    would render it: "" when the label is missing."""

    name: str
    strip_port: bool

    @classmethod
    def of(cls, source: str) -> LabelLookup | None:
        found = _LABEL_TEMPLATE.match(source.strip())
        # Jinja looks a name up as an attribute first: `labels.items` is dict.items, not
        # the label. Such names keep the template.
        if found is None or hasattr({}, found.group(1)):
            return None
        return cls(found.group(1), found.group(2) is not None)

    def render(self, labels: dict[str, str]) -> str:
        if self.name not in labels:
            return ""
        text = str(labels[self.name])
        return strip_port(text) if self.strip_port else text


@dataclass(frozen=True, slots=True)
class CompiledRule:
    matchers: tuple[Matcher, ...]
    sources: frozenset[str] | None
    template: object  # a jinja2 Template
    lookup: LabelLookup | None = None  # the template's result without jinja2, when it can

    def candidate(self, alert: Alert) -> str:
        if self.sources is not None and alert.source not in self.sources:
            return ""
        if not all(m.matches(alert.labels) for m in self.matchers):
            return ""
        if self.lookup is not None and type(alert.labels) is dict:
            return self.lookup.render(alert.labels).strip()
        return self.render(alert)

    def render(self, alert: Alert) -> str:
        """The template through jinja2's sandbox (what `lookup` stands in for)."""
        rendered: str = self.template.render(  # type: ignore[attr-defined]
            labels=alert.labels, annotations=alert.annotations, source=alert.source,
            integration=alert.integration, fingerprint=alert.fingerprint,
        )
        return rendered.strip()


def compile_rules(rules: Sequence[BindingRule], *, where: str = "correlation.binding"
                  ) -> list[CompiledRule]:
    """Compile once at start; every problem is a `ConfigError` naming the rule."""
    compiled: list[CompiledRule] = []
    problems: list[str] = []
    for i, rule in enumerate(rules):
        try:
            matchers = tuple(Matcher.parse(m) for m in rule.match)
            template = _ENV.from_string(rule.ci)
        except (ValueError, TemplateSyntaxError) as exc:
            problems.append(f"{where}.{i}: {exc}")
            continue
        sources = frozenset(rule.sources) if rule.sources is not None else None
        compiled.append(CompiledRule(matchers, sources, template, LabelLookup.of(rule.ci)))
    if problems:
        raise ConfigError(problems)
    return compiled


class Binder:
    def __init__(self, rules: Sequence[CompiledRule], topology: TopologyHolder) -> None:
        self._rules = rules
        self._topology = topology

    def bind(self, events: Sequence[AlertEvent]) -> list[AlertEvent]:
        topology = self._topology.current
        if not len(topology):
            return [replace(e, ci_id=None) if isinstance(e, Alert) and e.ci_id else e
                    for e in events]
        return [self._one(e) if isinstance(e, Alert) else e for e in events]

    def _one(self, alert: Alert) -> Alert:
        topology = self._topology.current
        if alert.ci_id:  # named by the sender or the integration's defaults
            return alert if alert.ci_id in topology else replace(alert, ci_id=None)
        for rule in self._rules:
            ci = rule.candidate(alert)
            if ci and ci in topology:
                return replace(alert, ci_id=ci)
        return alert
