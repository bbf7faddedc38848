"""Binding templates that only name a label skip jinja2, with the sandbox's very result."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.config import BindingRule, CorrelationConfig
from daemon.correlation.binding import LabelLookup, compile_rules
from daemon.models import Alert, AlertStatus, Severity

# Label names the templates use, and ones that are also attributes of a dict.
NAMES = ("ci", "instance", "component", "source", "host", "items", "keys", "get", "x_1")
TEMPLATES = (
    "{{ labels.%s }}", "{{labels.%s}}", "{{ labels.%s | strip_port }}",
    "{{labels.%s|strip_port}}", "  {{- labels.%s -}}\n", "{{ labels.%s }}x",
    "{{ labels.%s | upper }}", "{{ labels['%s'] }}",
)
VALUES = st.one_of(
    st.sampled_from(["db-1:9100", "[::1]:9100", "[::1]", "host", "a:b:9", ":80", "x:",
                     "  spaced:1  ", "", " ", "db-1:abc", "ünïcode:1"]),
    st.text(alphabet="ab:[]9 .-\t", max_size=12),
)


def alert(labels: dict[str, str]) -> Alert:
    return Alert(
        source="alertmanager", integration="alertmanager", fingerprint="f",
        status=AlertStatus.FIRING, severity=Severity.ERROR, summary="s", labels=labels,
        annotations={}, starts_at=datetime(2026, 11, 26, tzinfo=UTC), ends_at=None,
        generator_url=None, group_key="g",
    )


@settings(max_examples=300, deadline=None)
@given(template=st.sampled_from(TEMPLATES), name=st.sampled_from(NAMES),
       labels=st.dictionaries(st.sampled_from(NAMES), VALUES, max_size=5))
def test_the_lookup_gives_what_the_template_renders(template: str, name: str,
                                                    labels: dict[str, str]) -> None:
    [rule] = compile_rules([BindingRule(ci=template % name)])
    assert rule.candidate(alert(labels)) == rule.render(alert(labels))


def test_the_default_rules_all_take_the_lookup() -> None:
    rules = compile_rules(CorrelationConfig().binding)
    assert [r.lookup for r in rules] == [
        LabelLookup("ci", False), LabelLookup("instance", True),
        LabelLookup("component", False), LabelLookup("source", False)]


@pytest.mark.parametrize("template", [
    "{{ labels.items }}",  # dict.items to jinja2, not the label
    "{{ labels.ci }}-{{ labels.env }}", "{{ annotations.ci }}", "{{ labels.ci | lower }}",
    "{{ labels._ci }}",
])
def test_other_templates_keep_jinja2(template: str) -> None:
    assert LabelLookup.of(template) is None
