"""PagerDuty, Grafana and generic parsing, on real or documented payloads."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon.errors import InvalidInput
from daemon.models import Acknowledgement, Alert, AlertStatus, Link, Severity
from daemon.receivers import pagerduty
from daemon.receivers.generic import GenericParser
from daemon.receivers.grafana import GrafanaParser
from daemon.receivers.normalize import Defaults, Limits
from tests.conftest import FIXTURES, FakeClock, fixture_bytes

clock = FakeClock(datetime(2026, 11, 26, 12, 0, tzinfo=UTC))


def pd(body: bytes | dict[str, object], dedup: str | None = None) -> Alert | Acknowledgement:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    event = pagerduty.parse_event(raw)
    return pagerduty.to_event(event, integration="pd", clock=clock,
                              dedup_key=dedup or event.dedup_key or "generated")


def test_pagerduty_trigger_from_alertmanager() -> None:
    alert = pd(fixture_bytes("pagerduty_v2_trigger.json"))
    assert isinstance(alert, Alert)
    assert alert.fingerprint == "1c54a190def197d94dd7af8e8a5610574eb4dd4c3cc9b251b5721280b5420942"
    assert alert.status is AlertStatus.FIRING
    assert alert.severity is Severity.ERROR
    assert alert.summary.startswith("[FIRING:1] DemoDown")
    assert alert.labels == {"source": "Alertmanager"}
    assert alert.details["custom_details"]["num_firing"] == "1"
    assert alert.links == (Link(href="http://127.0.0.1:19193/#/alerts?receiver=pagerduty",
                                text="Alertmanager"),)
    assert alert.group_key == f"pagerduty:pd:{alert.fingerprint}"


def test_pagerduty_resolve_and_acknowledge() -> None:
    resolved = pd(fixture_bytes("pagerduty_v2_resolve.json"))
    assert isinstance(resolved, Alert) and resolved.status is AlertStatus.RESOLVED
    ack = pd({"routing_key": "k", "event_action": "acknowledge", "dedup_key": "abc"})
    assert ack == Acknowledgement(source="pagerduty", integration="pd", fingerprint="abc")
    bare = pd({"routing_key": "k", "event_action": "resolve", "dedup_key": "abc",
               "payload": {"summary": 7}})  # a bad payload on a resolve is ignored
    assert isinstance(bare, Alert) and bare.fingerprint == "abc" and bare.summary == ""


def test_pagerduty_trigger_fields_are_kept() -> None:
    alert = pd({
        "routing_key": "k", "event_action": "trigger", "dedup_key": "srv01/HTTP",
        "payload": {"summary": "HTTP down", "source": "srv01", "severity": "critical",
                    "timestamp": "2026-11-26T08:42:58.315+0000", "component": "nginx",
                    "group": "web", "class": "availability", "custom_details": {"ping": 9}},
        "links": [{"href": "https://x.example", "text": "X"}],
        "images": [{"src": "https://x.example/g.png", "alt": "graph"}],
        "client": "Zabbix", "client_url": "https://zabbix.example",
    })
    assert isinstance(alert, Alert)
    assert alert.labels == {"source": "srv01", "component": "nginx", "group": "web",
                            "class": "availability"}
    assert alert.starts_at == datetime(2026, 11, 26, 8, 42, 58, 315000, tzinfo=UTC)
    assert alert.details == {"custom_details": {"ping": 9}, "client": "Zabbix",
                             "images": [{"src": "https://x.example/g.png", "alt": "graph"}]}
    assert [link.text for link in alert.links] == ["X", "Zabbix"]


@pytest.mark.parametrize(("body", "error"), [
    ({"routing_key": "k", "event_action": "trigger",
      "payload": {"summary": "x", "severity": "error"}}, "'payload.source' is missing or blank"),
    ({"routing_key": "k", "event_action": "trigger",
      "payload": {"summary": "x", "source": "s", "severity": "fatal"}},
     "'payload.severity' is invalid (Input should be 'critical', 'error', 'warning' or 'info')"),
    ({"routing_key": "k", "event_action": "trigger",
      "payload": {"summary": "x" * 1025, "source": "s", "severity": "info"}},
     "'payload.summary' is invalid (String should have at most 1024 characters)"),
    ({"routing_key": "k", "event_action": "trigger", "dedup_key": "d" * 256,
      "payload": {"summary": "x", "source": "s", "severity": "info"}},
     "'dedup_key' is invalid (String should have at most 255 characters)"),
    ({"routing_key": "k", "event_action": "resolve"}, "dedup_key is required for resolve events"),
    ({"routing_key": "k", "event_action": "snooze", "dedup_key": "a"},
     "'event_action' is invalid (Input should be 'trigger', 'acknowledge' or 'resolve')"),
])
def test_pagerduty_invalid_events_are_described_like_pagerduty(
    body: dict[str, object], error: str
) -> None:
    with pytest.raises(InvalidInput) as err:
        pagerduty.parse_event(json.dumps(body).encode())
    assert error in [e["reason"] for e in err.value.errors]


def test_pagerduty_non_object_is_unrecognized() -> None:
    for raw in (b"[]", b"{oops", b'"text"'):
        with pytest.raises(pagerduty.UnrecognizedEvent):
            pagerduty.parse_event(raw)


def test_pagerduty_change_event() -> None:
    event = pagerduty.parse_change(json.dumps({
        "routing_key": "k",
        "payload": {"summary": "Deploy api v2.3", "source": "ci",
                    "timestamp": "2026-11-26T11:00:00Z", "custom_details": {"sha": "abc"}},
        "links": [{"href": "https://ci.example/1", "text": "build"}],
    }).encode())
    change = pagerduty.to_change(event, integration="pd", clock=clock)
    assert (change.summary, change.source) == ("Deploy api v2.3", "ci")
    assert change.occurred_at == datetime(2026, 11, 26, 11, 0, tzinfo=UTC)
    assert change.details == {"custom_details": {"sha": "abc"}}


grafana = GrafanaParser(integration="grafana", default_severity=Severity.ERROR, limits=Limits())


def test_grafana_firing_keeps_links_and_values() -> None:
    [alert] = grafana.parse((FIXTURES / "grafana" / "firing.json").read_bytes())
    assert isinstance(alert, Alert)
    assert (alert.source, alert.fingerprint, alert.severity) == (
        "grafana", "c6eadffa33fcdf37", Severity.WARNING)
    assert alert.summary == "This alert was triggered for zone us-1"
    assert [link.text for link in alert.links] == ["Dashboard", "Panel", "Silence"]
    assert alert.details["values"] == {"B": 44.23943737541908, "C": 1}
    assert alert.details["org_id"] == 1
    assert alert.ends_at is None
    assert alert.starts_at == datetime(2026, 11, 26, 7, 51, 3, 157076, tzinfo=UTC)


def test_grafana_resolved() -> None:
    [alert] = grafana.parse((FIXTURES / "grafana" / "resolved.json").read_bytes())
    assert isinstance(alert, Alert)
    assert alert.status is AlertStatus.RESOLVED and alert.ends_at is not None


generic = GenericParser(integration="generic", default_severity=Severity.WARNING,
                        limits=Limits(max_alerts=3, max_labels=2), clock=clock)


def parse_generic(body: object) -> list[Alert]:
    events = generic.parse(json.dumps(body).encode())
    assert all(isinstance(e, Alert) for e in events)
    return events  # type: ignore[return-value]


def test_generic_single_alert_with_defaults() -> None:
    [alert] = parse_generic({"summary": "Backup failed", "labels": {"job": "backup"}})
    assert (alert.source, alert.status, alert.severity) == (
        "generic", AlertStatus.FIRING, Severity.WARNING)
    assert alert.starts_at == clock.now()
    assert alert.annotations == {"summary": "Backup failed"}
    # identity: a hash of the labels, the same however the labels are ordered
    [again] = parse_generic({"summary": "Backup failed again", "labels": {"job": "backup"}})
    assert again.fingerprint == alert.fingerprint
    assert alert.group_key == f"generic:generic:{alert.fingerprint}"


def test_generic_list_with_every_field() -> None:
    alerts = parse_generic([
        {"summary": "a", "fingerprint": "fp-1", "severity": "critical", "group": "db",
         "ci": "pg-orders", "links": [{"href": "https://x"}], "details": {"n": 1},
         "starts_at": "2026-11-26T10:00:00Z", "generator_url": "https://gen"},
        {"status": "resolved", "fingerprint": "fp-2"},
    ])
    first, second = alerts
    assert (first.fingerprint, first.ci_id, first.group_key) == (
        "fp-1", "pg-orders", "generic:generic:db")
    assert first.links == (Link(href="https://x"),) and first.details == {"n": 1}
    assert second.status is AlertStatus.RESOLVED and second.ends_at == clock.now()


@pytest.mark.parametrize(("body", "field"), [
    ({"labels": {"a": "b"}}, "(body)"),                       # firing without summary
    ({"summary": "x", "colour": "red"}, "colour"),             # unknown field
    ([{"summary": "ok"}, {"summary": "x", "severity": "bad"}], "[1].severity"),
    ({"summary": "x", "labels": {"a": "1", "b": "2", "c": "3"}}, "labels"),  # label limit
    ([{"summary": str(i)} for i in range(4)], "alerts"),       # alerts per request limit
])
def test_generic_invalid_names_the_field(body: object, field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        generic.parse(json.dumps(body).encode())
    assert err.value.errors[0]["field"] == field


def test_defaults_add_labels_service_and_ci_but_never_override() -> None:
    [alert] = parse_generic({"summary": "x", "labels": {"team": "db"}})
    defaults = Defaults(labels={"team": "sre", "env": "prod"}, service="checkout", ci="host-1")
    [out] = defaults.apply([alert])
    assert isinstance(out, Alert)
    assert out.labels == {"team": "db", "env": "prod", "service": "checkout"}
    assert out.ci_id == "host-1"


def test_generic_schema_file_is_current() -> None:
    from daemon.receivers.generic import GenericBody

    path = Path(__file__).parents[2] / "config" / "schemas" / "generic-alert.schema.json"
    assert json.loads(path.read_text()) == GenericBody.model_json_schema(), (
        "regenerate with: python -m daemon schema > config/schemas/generic-alert.schema.json")
