"""The incident page's view model: timeline lines, SLA states in words, the buttons."""

from __future__ import annotations

from typing import Any

import pytest

from daemon.correlation.topology import Topology
from daemon.models import ConfigurationItem, IncidentStatus
from daemon.web.incident_page import view


def doc(status: str = "triggered", **extra: Any) -> dict[str, Any]:
    return {"id": 7, "key": "INC-000007", "title": "t", "status": status,
            "severity": "critical", "root_cause_ci": "db", "impacted_cis": ["db", "app"],
            "impacted_services": [], "alerts": [], "timeline": [], **extra}


def entry(kind: str, detail: Any, actor: str = "incidentd") -> dict[str, Any]:
    return {"at": "2026-11-27T04:00:00Z", "actor": actor, "kind": kind, "detail": detail}


TOPOLOGY = Topology.build([
    ConfigurationItem(id="db", name="Orders DB", type="database", owner_group="dba"),
    ConfigurationItem(id="app", name="App", type="app", depends_on=("db",)),
])


def test_timeline_lines_are_words_newest_first() -> None:
    v = view(doc(timeline=[
        entry("opened", {"source": "alertmanager", "alerts": ["a", "b"], "group_key": "g"}),
        entry("acknowledged", {"note": "looking"}, actor="ann"),
        entry("priority_changed", {"from": "P3", "to": "P1", "reason": "VIP"}, actor="bob"),
        entry("sla_warning", {"clock": "response", "target_seconds": 900, "fraction": 0.75,
                              "due_at": "2026-11-27T04:15:00Z", "policy": "p",
                              "priority": "P1", "elapsed_seconds": 675}),
        entry("runbook_failed", {"run": 3, "runbook": "fix", "status": "denied",
                                 "dry_run": True, "error": None}),
        entry("note", {"note": "from the desk", "origin": "servicenow"}, actor="jane"),
    ]), [], TOPOLOGY)
    lines = [(e["kind"], e["text"]) for e in v["timeline"]]
    assert lines == [
        ("note", "Note: from the desk; via servicenow"),
        ("runbook_failed", "Runbook fix run #3 (dry run) denied"),
        ("sla_warning", "Response SLA warning: 75 % of the time used (target 15 min, due "
                        "2026-11-27 04:15 UTC)"),
        ("priority_changed", "Priority changed from P3 to P1: VIP"),
        ("acknowledged", "Acknowledged; note: looking"),
        ("opened", "Opened from alertmanager with 2 alerts"),
    ]
    assert all(e["raw"] is None for e in v["timeline"])


def test_unknown_kinds_and_odd_details_show_their_json() -> None:
    v = view(doc(timeline=[entry("from_the_future", {"x": "<b>1</b>"}),
                           entry("escalated", {"unexpected": True}),
                           entry("opened", ["not", "a", "dict"])]), [], TOPOLOGY)
    by_kind = {e["kind"]: e for e in v["timeline"]}
    assert by_kind["from_the_future"]["text"] == "from the future"
    assert '"x": "<b>1</b>"' in by_kind["from_the_future"]["raw"]  # escaped by the template
    assert by_kind["escalated"]["raw"] is not None
    assert by_kind["opened"]["raw"] is not None


@pytest.mark.parametrize(("status", "shown"), [
    ("triggered", {"acknowledge", "resolve", "escalate", "set_priority"}),
    ("acknowledged", {"resolve", "escalate", "set_priority"}),
    ("on_hold", {"resolve", "set_priority"}),
    ("resolved", {"set_priority"}),
    ("closed", set()),
])
def test_buttons_follow_the_api_transition_rules(status: str, shown: set[str]) -> None:
    assert IncidentStatus(status)  # every status is covered
    actions = view(doc(status), [], TOPOLOGY)["actions"]
    assert {name for name, on in actions.items() if on} == shown


def test_sla_states_in_words() -> None:
    clock = {"clock": "response", "policy": "p", "target_seconds": 900,
             "due_at": "2026-11-27T04:15:00Z", "paused": False, "state": "running",
             "stopped_at": None, "breached_at": None, "remaining_seconds": 100.0}
    v = view(doc(sla=[
        clock,
        clock | {"clock": "resolution", "paused": True},
        clock | {"state": "met", "stopped_at": "2026-11-27T04:05:00Z"},
        clock | {"state": "breached", "breached_at": "2026-11-27T04:15:00Z"},
    ]), [], TOPOLOGY)
    assert [(c["name"], c["words"], c["ticking"]) for c in v["sla"]] == [
        ("Response", "running", True),
        ("Resolution", "paused (incident on hold)", False),
        ("Response", "met", False),
        ("Response", "breached, still running", True),
    ]


def test_root_cause_owner_and_drawing() -> None:
    v = view(doc(alerts=[{"id": 1, "fingerprint": "f" * 40, "ci": "app", "status": "firing",
                          "role": "symptom", "labels": {"alertname": "AppDown"}}]),
             [], TOPOLOGY)
    assert v["assignee_group"] == "dba"
    assert v["root"] == {"id": "db", "name": "Orders DB", "type": "database", "known": True}
    assert 'data-ci="app" class' not in v["topology_svg"]
    assert 'class="node alerting" data-ci="app"' in str(v["topology_svg"])
    assert v["alerts"][0]["short"] == "f" * 12
    assert v["alerts"][0]["name"] == "AppDown"
    no_root = view(doc(root_cause_ci=None), [], TOPOLOGY)
    assert no_root["topology_svg"] is None and no_root["assignee_group"] is None
