"""The shipped Grafana dashboard and Prometheus rules are well formed and only
graph metrics incidentd exports (no database, no daemon).

`promtool` checks and unit-tests the rules; the dashboard JSON is checked
against the Grafana 10+ model we promise (datasource input, template
variables, layout) and every PromQL expression in it against the fixed
metric list of issue 8, including which labels each metric carries.
The e2e test `tests/e2e/test_grafana_promql.py` runs the same expressions
through a real Prometheus.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require

CONFIG = Path(__file__).parents[2] / "config"
DASHBOARD_PATH = CONFIG / "grafana" / "incidentd-dashboard.json"
RULES_PATH = CONFIG / "prometheus" / "incidentd-rules.yaml"

DATASOURCE = "${DS_PROMETHEUS}"

# The metric contract (issue 8, README): name → (type, labels).
METRICS: dict[str, tuple[str, frozenset[str]]] = {
    name: (kind, frozenset(labels))
    for name, kind, labels in [
        ("incidentd_build_info", "gauge", ["version"]),
        ("incidentd_alerts_received_total", "counter", ["source", "status"]),
        ("incidentd_alerts_processed_total", "counter", ["source", "outcome"]),
        ("incidentd_alerts_rejected_total", "counter", ["source", "reason"]),
        ("incidentd_incidents_opened_total", "counter", ["priority"]),
        ("incidentd_incidents_resolved_total", "counter", ["priority", "how"]),
        ("incidentd_incidents_reopened_total", "counter", ["priority"]),
        ("incidentd_incidents_open", "gauge", ["priority", "status"]),
        ("incidentd_incident_time_to_acknowledge_seconds", "histogram", ["service", "priority"]),
        ("incidentd_incident_time_to_resolve_seconds", "histogram", ["service", "priority"]),
        ("incidentd_sla_warnings_total", "counter", ["clock", "priority"]),
        ("incidentd_sla_breaches_total", "counter", ["clock", "priority"]),
        ("incidentd_sla_met_total", "counter", ["clock", "priority"]),
        ("incidentd_escalations_total", "counter", ["policy", "reason"]),
        ("incidentd_problems_opened_total", "counter", ["how"]),
        ("incidentd_alerts_suppressed_total", "counter", []),
        ("incidentd_runbook_runs_total", "counter", ["runbook", "outcome"]),
        ("incidentd_runbook_duration_seconds", "histogram", ["runbook"]),
        ("incidentd_runbook_pending_approvals", "gauge", []),
        ("incidentd_notifications_total", "counter", ["target", "outcome"]),
        ("incidentd_outbox_pending", "gauge", []),
        ("incidentd_ingest_duration_seconds", "histogram", []),
        ("incidentd_ingest_batch_alerts", "histogram", []),
        ("incidentd_ingest_queued_alerts", "gauge", []),
    ]
}
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = frozenset({"job", "instance"})
GRAFANA_BUILTINS = {"__range", "__rate_interval", "__interval", "__range_s", "__interval_ms"}


# --------------------------------------------------------------------------
# helpers (the e2e test uses them too)


def load_dashboard() -> dict[str, Any]:
    loaded = json.loads(DASHBOARD_PATH.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def load_rules() -> dict[str, Any]:
    loaded = yaml.safe_load(RULES_PATH.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in (collapsed) rows."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_targets(dashboard: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(panel title, target) for every query target of every panel."""
    return [(p["title"], t) for p in all_panels(dashboard) for t in p.get("targets", [])]


def recording_rules(rules: dict[str, Any]) -> dict[str, str]:
    """record name → expression."""
    return {r["record"]: r["expr"] for g in rules["groups"] for r in g["rules"] if "record" in r}


def series_names() -> dict[str, frozenset[str]]:
    """Every series name the dashboard may select → the labels it carries
    (histograms expand to _bucket/_sum/_count; recording rules included)."""
    names: dict[str, frozenset[str]] = {}
    for name, (kind, labels) in METRICS.items():
        if kind == "histogram":
            names[f"{name}_bucket"] = labels | {"le"}
            names[f"{name}_sum"] = labels
            names[f"{name}_count"] = labels
        else:
            names[name] = labels
    for record, expr in recording_rules(load_rules()).items():
        outer = re.search(r"\bby\s*\(([^)]*)\)", expr)
        kept = {s.strip() for s in outer.group(1).split(",")} - {"le"} if outer else set()
        names[record] = frozenset(kept)
    return names


_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
             "unless", "bool", "offset", "inf", "nan"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"")


def metric_names(expr: str) -> set[str]:
    """The series names an expression selects (identifiers that are neither
    functions, keywords, label names nor durations)."""
    text = re.sub(r"\{[^}]*\}", " ", _STRING.sub('""', expr))
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w$.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        token = match.group(0)
        if text[match.end():].lstrip().startswith("(") or token.lower() in _KEYWORDS:
            continue
        names.add(token)
    return names


def selector_labels(expr: str) -> list[tuple[str, set[str]]]:
    """(series name, label names matched) for each `name{...}` selector."""
    return [(m.group(1), set(_MATCHER.findall(m.group(2)))) for m in _SELECTOR.finditer(expr)]


def grouping_labels(expr: str) -> set[str]:
    found: set[str] = set()
    for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        found |= {s.strip() for s in group.split(",") if s.strip()}
    return found


# --------------------------------------------------------------------------
# the rules file


def _promtool() -> str:
    path = shutil.which("promtool")
    require(path is not None, "promtool is not installed (Debian package prometheus)")
    assert path is not None
    return path


def test_rules_pass_promtool_check() -> None:
    out = subprocess.run([_promtool(), "check", "rules", str(RULES_PATH)],
                         capture_output=True, text=True, check=False, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout, out.stdout


def test_rules_have_the_promised_records_and_alerts() -> None:
    rules = load_rules()
    records = recording_rules(rules)
    assert set(records) >= {
        "incidentd:mtta_seconds:p50_1d", "incidentd:mtta_seconds:p90_1d",
        "incidentd:mttr_seconds:p50_1d", "incidentd:mttr_seconds:p90_1d",
        "incidentd:sla_compliance:ratio_1d",
    }, sorted(records)
    for name in ("mtta_seconds:p50_1d", "mttr_seconds:p90_1d"):
        assert grouping_labels(records[f"incidentd:{name}"]) == {"le", "priority"}
    assert grouping_labels(records["incidentd:sla_compliance:ratio_1d"]) == {"clock"}

    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert set(alerts) >= {
        "IncidentdDown", "IncidentdIngestErrors", "IncidentdOutboxBacklogGrowing",
        "IncidentdNotificationsDeadLettered", "IncidentdSLABreachRateHigh",
    }, sorted(alerts)
    for name, rule in alerts.items():
        assert rule.get("for"), f"{name} has no `for`"
        assert rule.get("labels", {}).get("severity") in {"critical", "warning", "info"}, name
        assert {"summary", "description"} <= set(rule.get("annotations", {})), name
    assert 'up{job="incidentd"}' in alerts["IncidentdDown"]["expr"]
    assert "store_unavailable" in alerts["IncidentdIngestErrors"]["expr"]
    assert "deriv(incidentd_outbox_pending" in alerts["IncidentdOutboxBacklogGrowing"]["expr"]
    assert 'outcome="dead"' in alerts["IncidentdNotificationsDeadLettered"]["expr"]

    allowed = series_names() | {"up": frozenset()}
    for group in rules["groups"]:
        for rule in group["rules"]:
            expr = rule["expr"]
            unknown = metric_names(expr) - set(allowed)
            assert not unknown, f"{rule.get('record') or rule.get('alert')}: {unknown}"


def _series(name: str, values: str, **labels: str) -> dict[str, str]:
    """A promtool input series of one replica scraped as job `incidentd`."""
    pairs = {"job": "incidentd", "instance": "d1:8080", **labels}
    body = ", ".join(f'{k}="{v}"' for k, v in pairs.items())
    return {"series": f"{name}{{{body}}}", "values": values}


def _alert(severity: str, summary: str, description: str, **labels: str) -> dict[str, Any]:
    return {"exp_labels": {"severity": severity, "job": "incidentd", "instance": "d1:8080",
                           **labels},
            "exp_annotations": {"summary": summary, "description": description}}


TTR = "incidentd_incident_time_to_resolve_seconds_bucket"
RULE_TESTS: list[dict[str, Any]] = [
    {
        "interval": "1m",
        "input_series": [
            _series("up", "1 1 0 0 0 0 0 0"),
            _series("incidentd_notifications_total", "0 0 0 1 1 1 1 1",
                    target="ops", outcome="dead"),
            # 6 resolutions: 2 within 5 s, 2 more within 10 s: rank 3 is halfway through (5, 10]
            _series(TTR, "0x10", service="svc-a", priority="P1", le="1"),
            _series(TTR, "0 2x9", service="svc-a", priority="P1", le="5"),
            _series(TTR, "0 4x9", service="svc-a", priority="P1", le="10"),
            _series(TTR, "0 6x9", service="svc-a", priority="P1", le="+Inf"),
            _series("incidentd_sla_met_total", "0 3x9", clock="response", priority="P1"),
            _series("incidentd_sla_breaches_total", "0 1x9", clock="response", priority="P1"),
            # No breach at all on this clock: compliance 1, not a missing series.
            _series("incidentd_sla_met_total", "0 2x9", clock="resolution", priority="P1"),
        ],
        "promql_expr_test": [
            {"expr": "incidentd:mttr_seconds:p50_1d", "eval_time": "9m",
             "exp_samples": [{"labels": 'incidentd:mttr_seconds:p50_1d{priority="P1"}',
                              "value": 7.5}]},
            {"expr": "incidentd:sla_compliance:ratio_1d", "eval_time": "9m",
             "exp_samples": [
                 {"labels": 'incidentd:sla_compliance:ratio_1d{clock="response"}', "value": 0.75},
                 {"labels": 'incidentd:sla_compliance:ratio_1d{clock="resolution"}', "value": 1},
             ]},
        ],
        "alert_rule_test": [
            {"alertname": "IncidentdDown", "eval_time": "3m", "exp_alerts": []},
            {"alertname": "IncidentdDown", "eval_time": "5m", "exp_alerts": [_alert(
                "critical", "incidentd d1:8080 is down",
                "Prometheus has not been able to scrape incidentd at d1:8080 for 2 minutes. "
                "While it is down, monitoring systems queue and retry their alerts "
                "(Alertmanager, PagerDuty clients) and no incident is opened, acknowledged or "
                "escalated by this replica.")]},
            {"alertname": "IncidentdNotificationsDeadLettered", "eval_time": "3m",
             "exp_alerts": []},
            {"alertname": "IncidentdNotificationsDeadLettered", "eval_time": "5m",
             "exp_alerts": [_alert(
                 "warning", "incidentd gave up delivering notifications to ops",
                 "1 notifications to ops exhausted their retries in the last 15 minutes and "
                 "were dead-lettered. Fix the target, then resend them with "
                 "POST /api/v1/notifications/{id}/resend.", target="ops")]},
            {"alertname": "IncidentdIngestErrors", "eval_time": "5m", "exp_alerts": []},
        ],
    },
    {
        "interval": "1m",
        "input_series": [
            _series("incidentd_outbox_pending", "0+10x40"),
            _series("incidentd_alerts_rejected_total", "0+30x20",
                    source="alertmanager", reason="overloaded"),
            _series("incidentd_alerts_rejected_total", "0+30x20",
                    source="alertmanager", reason="invalid"),
        ],
        "alert_rule_test": [
            {"alertname": "IncidentdOutboxBacklogGrowing", "eval_time": "10m", "exp_alerts": []},
            {"alertname": "IncidentdOutboxBacklogGrowing", "eval_time": "30m", "exp_alerts": [
                _alert("warning", "incidentd d1:8080 notification outbox is growing",
                       "300 notifications are waiting in the outbox and the backlog has kept "
                       "growing for 15 minutes: a notification target is down or slow, so "
                       "people are not being told about incidents.")]},
            # Invalid requests are the sender's problem, not the daemon's: only `overloaded`.
            {"alertname": "IncidentdIngestErrors", "eval_time": "15m", "exp_alerts": [
                _alert("warning", "incidentd d1:8080 is refusing alerts (overloaded)",
                       "incidentd answered 429/503 to 500m alert requests per second over the "
                       "last 5 minutes because the store was unavailable or the ingest queue "
                       "was full. Senders retry, but alerts are delayed; check the database "
                       "and the ingest latency panel.", reason="overloaded")]},
        ],
    },
]


def test_rules_behave_under_promtool_test(tmp_path: Path) -> None:
    """Recording rules compute what the dashboard promises; alerts fire when they should."""
    spec = tmp_path / "incidentd-rules.test.yaml"
    spec.write_text(yaml.safe_dump({"rule_files": [str(RULES_PATH)],
                                    "evaluation_interval": "1m", "tests": RULE_TESTS}))
    out = subprocess.run([_promtool(), "test", "rules", str(spec)],
                         capture_output=True, text=True, check=False, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


# --------------------------------------------------------------------------
# the dashboard


def test_dashboard_is_a_grafana_10_import_with_a_datasource_input() -> None:
    dashboard = load_dashboard()
    assert dashboard["schemaVersion"] >= 38
    assert dashboard.get("id") is None, "an exported dashboard carries no instance id"
    assert dashboard["uid"] and dashboard["title"]
    [ds_input] = [i for i in dashboard["__inputs"] if i["name"] == "DS_PROMETHEUS"]
    assert ds_input["type"] == "datasource" and ds_input["pluginId"] == "prometheus"
    # The only datasource anywhere in the file is the input variable.
    text = DASHBOARD_PATH.read_text(encoding="utf-8")
    uids = set(re.findall(r'"uid":\s*"([^"]*)"', text)) - {dashboard["uid"]}
    assert uids == {DATASOURCE}, uids
    for panel in all_panels(dashboard):
        if panel["type"] == "row":
            assert "datasource" not in panel or panel["datasource"]["uid"] == DATASOURCE
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE}, panel["title"]
        assert panel["targets"], f"{panel['title']}: no query"
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": DATASOURCE}, target


def test_dashboard_panels_have_titles_unique_ids_and_a_layout() -> None:
    dashboard = load_dashboard()
    panels = list(all_panels(dashboard))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(ids)}"
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        assert panel.get("title"), panel
        pos = panel["gridPos"]
        assert set(pos) >= {"h", "w", "x", "y"}, panel["title"]
        assert pos["w"] > 0 and pos["h"] > 0 and pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, (
            panel["title"], pos)
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                other = cells.setdefault((x, y), panel["title"])
                assert other == panel["title"], f"{panel['title']!r} overlaps {other!r}"
        refs = [t["refId"] for t in panel.get("targets", [])]
        assert len(refs) == len(set(refs)), panel["title"]


def test_dashboard_template_variables() -> None:
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    assert set(variables) >= {"service", "priority"}
    for name in ("service", "priority"):
        var = variables[name]
        assert var["type"] == "query"
        assert var["datasource"]["uid"] == DATASOURCE
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        assert query == f"label_values(incidentd_incident_time_to_resolve_seconds_bucket, {name})"
        assert var["multi"] is True and var["includeAll"] is True
        assert var["allValue"] == ".*" and var["regex"] == ".*"


@pytest.mark.parametrize(
    ("title", "target"),
    [pytest.param(t, tgt, id=f"{t}/{tgt['refId']}")
     for t, tgt in dashboard_targets(load_dashboard())],
)
def test_every_dashboard_query_names_only_exported_metrics(title: str, target: dict[str, Any]
                                                           ) -> None:
    expr = target["expr"]
    assert "__name__" not in expr
    known = series_names()
    names = metric_names(expr)
    assert names, f"{title}: no metric found in {expr!r}"
    assert names <= set(known), f"{title}: unknown metrics {names - set(known)} in {expr!r}"
    labelled = [n for n, _ in selector_labels(expr)]
    assert set(labelled) <= names, (labelled, names)
    for name, labels in selector_labels(expr):
        extra = labels - known[name] - TARGET_LABELS
        assert not extra, f"{title}: {name} has no label {extra} ({expr!r})"
    # Grouping only by labels the selected series carry.
    carried = set().union(*(known[n] for n in names)) | TARGET_LABELS | {"le"}
    assert grouping_labels(expr) <= carried, f"{title}: {grouping_labels(expr) - carried}"
    # Grafana variables: the template ones and the built-in intervals only.
    used = set(re.findall(r"\$(\w+)", expr))
    assert used <= {"service", "priority"} | GRAFANA_BUILTINS, used
    if "service" in used:
        assert all(n.startswith("incidentd_incident_time_to_") for n in names), expr


def test_dashboard_covers_what_issue_8_asks_for() -> None:
    dashboard = load_dashboard()
    exprs = "\n".join(t["expr"] for _, t in dashboard_targets(dashboard))
    for needle in [
        "histogram_quantile(0.5, sum by (le) (increase("
        "incidentd_incident_time_to_acknowledge_seconds_bucket",
        "histogram_quantile(0.9, sum by (le) (increase("
        "incidentd_incident_time_to_resolve_seconds_bucket",
        "[$__range]", "[$__rate_interval]",
        "incidentd_incidents_open{", "sum by (status) (incidentd_incidents_open",
        'incidentd_alerts_received_total{status="firing"}',
        'incidentd_alerts_processed_total{outcome="new"}',
        "incidentd_sla_met_total", "incidentd_sla_breaches_total",
        'incidentd_runbook_runs_total{outcome="succeeded"}',
        'incidentd_incidents_resolved_total{how="automation"',
        "histogram_quantile(0.99, sum by (le) (rate(incidentd_ingest_duration_seconds_bucket",
        'incidentd_notifications_total{outcome=~"retry|dead"}', "incidentd_outbox_pending",
        "incidentd_runbook_pending_approvals",
        "incidentd:mttr_seconds:p50_1d", "incidentd:sla_compliance:ratio_1d",
    ]:
        assert needle in exprs, f"no panel queries {needle!r}"
    # Every MTTA/MTTR query follows both template variables.
    for title, target in dashboard_targets(dashboard):
        if "incidentd_incident_time_to_" in target["expr"]:
            assert 'service=~"$service"' in target["expr"], title
            assert 'priority=~"$priority"' in target["expr"], title


def test_metric_name_parser() -> None:
    expr = ('histogram_quantile(0.5, sum by (le, priority) (increase(a_bucket{x=~"$s", y="b c"}'
            '[$__range]))) / on (job) group_left (z) b_total or vector(0) + c:d:e * 60 > bool 1')
    assert metric_names(expr) == {"a_bucket", "b_total", "c:d:e"}
    assert selector_labels(expr) == [("a_bucket", {"x", "y"})]
    assert grouping_labels(expr) == {"le", "priority"}
