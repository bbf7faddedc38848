from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from daemon.errors import InvalidInput
from daemon.models import AlertStatus, Severity
from daemon.receivers.alertmanager import AlertmanagerParser
from daemon.receivers.normalize import Limits
from tests.conftest import fixture_bytes

parser = AlertmanagerParser(
    integration="alertmanager", default_severity=Severity.WARNING, limits=Limits()
)


def test_prometheus_firing_payload_as_alertmanager_sent_it() -> None:
    [alert] = parser.parse(fixture_bytes("prometheus_firing.json"))
    assert alert.source == "alertmanager"
    assert alert.integration == "alertmanager"
    assert alert.fingerprint == "5362e3d39617e665"
    assert alert.status is AlertStatus.FIRING
    assert alert.severity is Severity.CRITICAL
    assert alert.summary == "Demo service 127.0.0.1:18080 is down"
    assert alert.labels["instance"] == "127.0.0.1:18080"
    assert alert.starts_at == datetime(2026, 11, 26, 18, 54, 31, 275000, tzinfo=UTC)
    assert alert.ends_at is None  # 0001-01-01T00:00:00Z means "not set"
    assert alert.group_key == '{}:{alertname="DemoDown"}'
    assert alert.generator_url and alert.generator_url.startswith("http://127.0.0.1:19090/graph")


def test_resolved_payload_keeps_the_fingerprint_and_has_an_end() -> None:
    [alert] = parser.parse(fixture_bytes("prometheus_resolved.json"))
    assert alert.status is AlertStatus.RESOLVED
    assert alert.fingerprint == "5362e3d39617e665"
    assert alert.ends_at == datetime(2026, 11, 26, 18, 54, 37, 275000, tzinfo=UTC)


def test_amtool_nanosecond_timestamps_and_warning_severity() -> None:
    [alert] = parser.parse(fixture_bytes("amtool_firing.json"))
    assert alert.severity is Severity.WARNING
    assert alert.starts_at.microsecond == 934600
    assert alert.annotations["runbook"] == "http://runbook.example/x"


def _payload(**changes: object) -> dict[str, object]:
    body: dict[str, object] = json.loads(fixture_bytes("prometheus_firing.json"))
    body.update(changes)
    return body


def test_missing_fingerprint_falls_back_to_a_stable_label_hash() -> None:
    body = _payload()
    alerts = body["alerts"]
    assert isinstance(alerts, list)
    del alerts[0]["fingerprint"]
    first = parser.parse(json.dumps(body).encode())[0].fingerprint
    alerts[0]["labels"] = dict(reversed(list(alerts[0]["labels"].items())))
    assert parser.parse(json.dumps(body).encode())[0].fingerprint == first
    assert len(first) == 16


def test_no_severity_label_takes_the_integration_default() -> None:
    body = _payload()
    alerts = body["alerts"]
    assert isinstance(alerts, list)
    del alerts[0]["labels"]["severity"]
    errors_default = AlertmanagerParser(
        integration="x", default_severity=Severity.ERROR, limits=Limits()
    )
    assert errors_default.parse(json.dumps(body).encode())[0].severity is Severity.ERROR


def test_several_alerts_with_truncation_are_all_returned() -> None:
    body = _payload(truncatedAlerts=3)
    alerts = body["alerts"]
    assert isinstance(alerts, list)
    alerts.append({**alerts[0], "fingerprint": "aaaa", "status": "resolved"})
    parsed = parser.parse(json.dumps(body).encode())
    assert [a.status for a in parsed] == [AlertStatus.FIRING, AlertStatus.RESOLVED]


def test_invalid_json_names_the_body() -> None:
    with pytest.raises(InvalidInput) as err:
        parser.parse(b'{"version": "4", ')
    assert err.value.errors[0]["field"] == "(body)"
    assert "invalid JSON" in err.value.errors[0]["reason"]


def test_wrong_shape_names_the_field_path() -> None:
    body = _payload()
    alerts = body["alerts"]
    assert isinstance(alerts, list)
    alerts[0]["labels"] = ["not", "a", "map"]
    with pytest.raises(InvalidInput) as err:
        parser.parse(json.dumps(body).encode())
    assert err.value.errors[0]["field"] == "alerts[0].labels"


def test_missing_alerts_and_bad_status_are_each_reported() -> None:
    body = _payload(status="exploded")
    del body["alerts"]
    with pytest.raises(InvalidInput) as err:
        parser.parse(json.dumps(body).encode())
    fields = {e["field"] for e in err.value.errors}
    assert fields == {"status", "alerts"}


def test_other_webhook_versions_are_refused() -> None:
    with pytest.raises(InvalidInput) as err:
        parser.parse(json.dumps(_payload(version="3")).encode())
    assert err.value.errors == [{"field": "version", "reason": 'expected "4"'}]
