"""incidentd's /metrics passes Prometheus's own linter, `promtool check metrics`."""

from __future__ import annotations

import asyncio
import re

import pytest

from .harness import IncidentdClient, fixture_bytes, metric_value, require_binary

pytestmark = pytest.mark.e2e

# name in the exposition → accepted types
CONTRACT_METRICS = {
    "incidentd_build_info": {"gauge", "info"},
    "incidentd_alerts_received_total": {"counter"},
    "incidentd_alerts_processed_total": {"counter"},
    "incidentd_alerts_rejected_total": {"counter"},
    "incidentd_alerts_suppressed_total": {"counter"},
    "incidentd_incidents_opened_total": {"counter"},
    "incidentd_incidents_resolved_total": {"counter"},
    "incidentd_incidents_reopened_total": {"counter"},
    "incidentd_incidents_open": {"gauge"},
    "incidentd_incident_time_to_acknowledge_seconds": {"histogram"},
    "incidentd_incident_time_to_resolve_seconds": {"histogram"},
    "incidentd_sla_warnings_total": {"counter"},
    "incidentd_sla_breaches_total": {"counter"},
    "incidentd_sla_met_total": {"counter"},
    "incidentd_escalations_total": {"counter"},
    "incidentd_problems_opened_total": {"counter"},
    "incidentd_runbook_runs_total": {"counter"},
    "incidentd_runbook_duration_seconds": {"histogram"},
    "incidentd_runbook_pending_approvals": {"gauge"},
    "incidentd_notifications_total": {"counter"},
    "incidentd_outbox_pending": {"gauge"},
    "incidentd_ingest_duration_seconds": {"histogram"},
    "incidentd_ingest_batch_alerts": {"histogram"},
    "incidentd_ingest_queued_alerts": {"gauge"},
}


async def test_metrics_pass_promtool_lint(client: IncidentdClient) -> None:
    promtool = require_binary("promtool")

    # The exact bytes Alertmanager 0.25 sent, twice: a retry repeats the
    # payload and must be harmless (one alert, one incident, one dedup).
    body = fixture_bytes("prometheus_firing.json")
    for attempt in (1, 2):
        status, text = await client.post_alertmanager(body)
        assert 200 <= status < 300, f"attempt {attempt}: {status} {text}"
    assert len(await client.all_alerts()) == 1
    assert len((await client.incidents(status="triggered"))["items"]) == 1

    exposition = await client.metrics_text()

    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", exposition, flags=re.MULTILINE))
    for name, accepted in CONTRACT_METRICS.items():
        # A counter's TYPE line may name the family with or without `_total`.
        found = types.get(name) or types.get(name.removesuffix("_total"))
        assert found in accepted, f"{name}: TYPE {found!r}, want one of {accepted}\n{exposition}"
    received = metric_value(
        exposition, "incidentd_alerts_received_total", source="alertmanager", status="firing"
    )
    assert (received or 0) >= 1, exposition
    for outcome, count in (("new", 1), ("duplicate", 1), ("correlated", 0), ("suppressed", 0)):
        assert (metric_value(exposition, "incidentd_alerts_processed_total",
                             source="alertmanager", outcome=outcome) or 0) == count, exposition
    assert metric_value(exposition, "incidentd_incidents_opened_total") == 1, exposition
    assert metric_value(exposition, "incidentd_incidents_open", status="triggered") == 1
    assert (metric_value(exposition, "incidentd_ingest_duration_seconds_count") or 0) >= 1

    proc = await asyncio.create_subprocess_exec(
        promtool,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(exposition.encode()), timeout=30)
    assert proc.returncode == 0, (
        f"promtool check metrics exited {proc.returncode}:\n{out.decode(errors='replace')}\n"
        f"--- exposition checked:\n{exposition}"
    )
